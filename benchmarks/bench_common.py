"""Shared set-up for the engine benchmarks (run_rm.py, density.py): a throw-away isobox root
with the busybox image, the same image loaded into a private podman store, statistics, and
the teardown that leaves no bridge, nft table, mount, cgroup or container behind.

Nothing here touches a real installation: isobox gets its own root under /tmp (so its own
run directory and cgroup parent) and its own bridge/nft names (ISOBOX_NET_PREFIX); podman
gets its own --root, --runroot and --tmpdir.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

# podman's default rlimits (nofile 1048576, nproc 4194304) are over this machine's hard limits
# and root has no CAP_SYS_RESOURCE, so runc fails with EPERM without these.
PODMAN_ULIMITS = ["--ulimit", "nofile=1024:20000", "--ulimit", "nproc=4096:4096"]


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1), as runtime_lifecycle.py's p95."""
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Run argv to completion (output discarded); its wall time in seconds. Fails loudly."""
    t = time.perf_counter()
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: "
                           f"{p.stderr.decode(errors='replace').strip()[-2000:]}")
    return dt


def isobox_binary() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "isobox")
    return beside if os.access(beside, os.X_OK) else shutil.which("isobox") or "isobox"


class IsoboxEnv:
    """A fresh isobox root (short path: socket paths are limited to 107 bytes) with busybox."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="ibxb", dir="/tmp")
        self.net_prefix = f"ib{os.getpid() % 0xFFFFFF:x}"[:12]
        self.env = {**os.environ, "ISOBOX_ROOT": self.root,
                    "ISOBOX_NET_PREFIX": self.net_prefix}
        self.env.pop("ISOBOX_RUN_DIR", None)
        self.exe = isobox_binary()
        self("image", "bootstrap", "busybox")

    def argv(self, *args: str) -> list[str]:
        return [self.exe, *args]

    def __call__(self, *args: str) -> str:
        p = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"isobox {' '.join(args)} exited {p.returncode}: "
                               f"{p.stderr.strip()[-2000:]}")
        return p.stdout

    def ids(self) -> list[str]:
        return self("ps", "-a", "-q", "--no-trunc").split()

    def leftovers(self) -> list[str]:
        """What the root still holds: containers, monitors, mounts, cgroups."""
        from isobox.engine.layout import Layout

        found = [f"container {i}" for i in self.ids()]
        found += [f"monitor pid {p}" for p in monitor_pids(self.root)]
        with open("/proc/self/mountinfo") as f:
            found += [f"mount {line.split()[4]}" for line in f
                      if line.split()[4].startswith(self.root + "/")]
        parent = Layout.for_root(self.root).cgroup_parent.strip("/")
        for base in os.listdir("/sys/fs/cgroup"):
            cg = os.path.join("/sys/fs/cgroup", base, parent)
            if os.path.isdir(cg):
                found += [f"cgroup {cg}/{d}" for d in os.listdir(cg)
                          if os.path.isdir(os.path.join(cg, d))]
        return found

    def close(self) -> None:
        """Remove every container, then the network (bridge, nft table), run dir, cgroups."""
        from isobox.engine.layout import Layout
        from isobox.network.manager import NetworkManager

        try:
            ids = self.ids()
            if ids:
                subprocess.run(self.argv("rm", "-f", "-v", *ids), env=self.env,
                               capture_output=True)
        except RuntimeError as e:
            print(f"cleanup: {e}", file=sys.stderr)
        layout = Layout.for_root(self.root)
        NetworkManager(os.path.join(self.root, "network"), bridge_prefix=self.net_prefix,
                       nft_table=self.net_prefix,
                       default_bridge=f"{self.net_prefix}0").teardown()
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f
                      if line.split()[4].startswith((self.root + "/", layout.run_dir + "/"))]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(layout.run_dir, ignore_errors=True)
        parent = layout.cgroup_parent.strip("/")
        for base in os.listdir("/sys/fs/cgroup"):
            try:
                os.rmdir(os.path.join("/sys/fs/cgroup", base, parent))
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


class PodmanEnv:
    """podman with runc and a private store holding the same busybox image (saved by isobox)."""

    def __init__(self, iso: IsoboxEnv) -> None:
        exe = shutil.which("podman")
        if exe is None:
            raise RuntimeError("podman is not installed")
        self.dir = tempfile.mkdtemp(prefix="pbxb", dir="/tmp")  # runroot < 50 characters
        self.base = [exe, "--root", f"{self.dir}/s", "--runroot", f"{self.dir}/r",
                     "--tmpdir", f"{self.dir}/t", "--cgroup-manager", "cgroupfs",
                     "--events-backend", "none", "--runtime", "runc"]
        tar = os.path.join(self.dir, "busybox.tar")
        iso("save", "busybox", "-o", tar)
        subprocess.run([*self.base, "load", "-i", tar], check=True, capture_output=True)
        os.unlink(tar)

    def argv(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def ids(self) -> list[str]:
        p = subprocess.run(self.argv("ps", "-a", "-q", "--no-trunc"), capture_output=True,
                           text=True)
        return p.stdout.split()

    def close(self) -> None:
        ids = self.ids()
        if ids:
            subprocess.run(self.argv("rm", "-f", *ids), capture_output=True)
        # not `system reset`: it would also delete the host's podman network definitions
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith(self.dir)]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def monitor_pids(path: str) -> list[int]:
    """conmon processes whose argv mentions `path` (each engine's root)."""
    out: list[int] = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"conmon" and any(
                path.encode() in a for a in argv):
            out.append(int(d))
    return sorted(out)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def pss_kib(pid: int) -> int:
    """Proportional set size of one process (KiB), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")
