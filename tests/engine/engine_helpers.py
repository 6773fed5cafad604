"""Driving the `isobox` CLI in tests, and finding what a test left behind."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from typing import Any

from harness import RUN_PREFIX, mounts_under

# network names for this run: bridge "<prefix>0", nft table "<prefix>" (≤ 12 characters)
NET_PREFIX = ("n" + RUN_PREFIX[-8:])[:12]


class Isobox:
    def __init__(self, root: str) -> None:
        self.root = root
        self.env = {**os.environ, "ISOBOX_ROOT": root, "ISOBOX_NET_PREFIX": NET_PREFIX}
        self.env.pop("ISOBOX_RUN_DIR", None)

    @staticmethod
    def binary() -> str:
        beside = os.path.join(os.path.dirname(sys.executable), "isobox")
        return beside if os.access(beside, os.X_OK) else shutil.which("isobox") or "isobox"

    def __call__(self, *args: str, check: bool = True, input_: bytes | None = None,
                 timeout: float = 60, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary(), *args], env={**self.env, **(env or {})},
                              capture_output=True,
                              input=input_.decode() if input_ is not None else None,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"isobox {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([self.binary(), *args], env=self.env, **kw)

    def ids(self, all_: bool = True) -> list[str]:
        out = self("ps", "-q", "--no-trunc", *(["-a"] if all_ else [])).stdout
        return out.split()

    def record(self, ref: str) -> dict[str, Any]:
        """The container's row, read straight from the state store."""
        import sqlite3

        conn = sqlite3.connect(os.path.join(self.root, "containers.db"))
        try:
            conn.row_factory = sqlite3.Row
            r = conn.execute("SELECT * FROM containers WHERE id=? OR name=? OR id LIKE ?",
                             (ref, ref, ref + "%")).fetchone()
        finally:
            conn.close()
        assert r is not None, f"no record for {ref}"
        d = dict(r)
        for k in ("options", "network", "health"):
            d[k] = json.loads(d[k])
        return d

    def run_dir(self) -> str:
        from isobox.engine.layout import default_run_dir

        return default_run_dir(self.root)

    def remove_all_containers(self) -> None:
        ids = self.ids()
        if ids:
            self("rm", "-f", "-v", *ids, check=False)


def remove_everything(root: str) -> None:
    ib = Isobox(root)
    ib.remove_all_containers()
    for m in sorted((line.split()[4] for line in mounts_under(root)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    from isobox.network.manager import NetworkManager

    NetworkManager(os.path.join(root, "network"), bridge_prefix=NET_PREFIX,
                   nft_table=NET_PREFIX, default_bridge=f"{NET_PREFIX}0").teardown()
    # runtime state no record points at (a failed test): delete it through the runtime, so
    # removing the run directory never strands an init waiting on its exec.fifo
    state_root = os.path.join(ib.run_dir(), "runtime")
    if os.path.isdir(state_root):
        from isobox.engine.runtime_client import RuntimeClient, runtime_path

        rt = RuntimeClient(runtime_path(), state_root)
        for cid in (n for n in os.listdir(state_root) if not n.startswith(".")):
            rt.delete(cid, force=True)
    vm_root = os.path.join(ib.run_dir(), "vm")
    if os.path.isdir(vm_root):
        from isobox.engine.runtime_client import VM_RUNTIME, RuntimeClient, runtime_path

        vrt = RuntimeClient(runtime_path(VM_RUNTIME), vm_root)
        for cid in os.listdir(vm_root):
            vrt.delete(cid, force=True)
    shutil.rmtree(ib.run_dir(), ignore_errors=True)
    for cg in cgroup_parents(root):
        try:
            os.rmdir(cg)
        except OSError:
            pass


def leaks(root: str) -> list[str]:
    found: list[str] = []
    containers = os.path.join(root, "containers")
    if os.path.isdir(containers):
        found += [f"container dir {i}" for i in os.listdir(containers)]
    found += [f"mount {line.split()[4]}" for line in mounts_under(root)]
    run_dir = Isobox(root).run_dir()
    netns = os.path.join(run_dir, "netns")
    if os.path.isdir(netns):
        found += [f"netns {n}" for n in os.listdir(netns)]
    for cg in cgroup_parents(root):
        found += [f"cgroup {cg}/{d}" for d in os.listdir(cg)
                  if os.path.isdir(os.path.join(cg, d))]
    try:
        out = subprocess.run(["pgrep", "-af", "conmon"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    found += [f"monitor {line}" for line in out.splitlines() if root in line]
    try:
        out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True,
                             text=True).stdout
    except OSError:
        out = ""
    found += [f"qemu {line[:200]}" for line in out.splitlines() if run_dir in line]
    vm_root = os.path.join(run_dir, "vm")
    if os.path.isdir(vm_root):
        # shared by all VMs, they stay: QEMU's chroot and the lock of the uid allocation
        found += [f"vm state {n}" for n in os.listdir(vm_root) if n not in ("empty",
                                                                             ".uids.lock")]
    return found


def cgroup_parents(root: str) -> list[str]:
    """The existing cgroup directories (every hierarchy) that hold this root's containers."""
    from isobox.engine.layout import Layout

    parent = Layout.for_root(root).cgroup_parent.strip("/")
    out = []
    for base in os.listdir("/sys/fs/cgroup"):
        path = os.path.join("/sys/fs/cgroup", base, parent)
        if os.path.isdir(path):
            out.append(path)
    return out


def read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 20) -> bytes:
    """What ``proc`` writes to its stdout pipe until ``marker`` shows, EOF or ``timeout``."""
    assert proc.stdout is not None
    seen = b""
    end = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen
