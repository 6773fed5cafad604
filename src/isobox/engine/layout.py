"""Where the engine keeps things.

Persistent (``<root>``, survives reboots): ``containers.db`` (the state store) and
``containers/<id>/`` (the bundle's ``config.json``, ``hosts``, ``hostname``, ``resolv.conf``,
``ctr.log`` and the monitor's ``attach`` socket, ``ctl`` and ``winsz`` FIFOs).

Volatile (``run_dir``, on the /run tmpfs, so a reboot clears it): the OCI runtime's state,
the monitor's exit files and pid files, network namespaces and the boot marker. A root other
than the default gets its own run directory (named after a hash of the root), so test roots
and a real installation never share runtime state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from isobox.oci.digest import short_sha256_hex

DEFAULT_ROOT = "/var/lib/isobox"
DEFAULT_RUN_DIR = "/run/isobox"
# sockaddr_un.sun_path holds 108 bytes, NUL included.
MAX_SOCKET_PATH = 107


def default_run_dir(root: str) -> str:
    env = os.environ.get("ISOBOX_RUN_DIR")
    if env:
        return os.path.abspath(env)
    if os.path.abspath(root) == DEFAULT_ROOT:
        return DEFAULT_RUN_DIR
    return f"{DEFAULT_RUN_DIR}-{short_sha256_hex(os.path.abspath(root))[:12]}"


@dataclass(frozen=True)
class Layout:
    """The engine's persistent root and its per-boot run directory."""

    root: str
    run_dir: str

    @classmethod
    def for_root(cls, root: str) -> Layout:
        root = os.path.abspath(root)
        return cls(root, default_run_dir(root))

    @property
    def cgroup_parent(self) -> str:
        """The cgroup every container of this root lives under (``/isobox/<id>``); another
        root gets its own (``/isobox-<hash>``), so test roots never mix with a real one."""
        if self.root == DEFAULT_ROOT:
            return "/isobox"
        return f"/isobox-{short_sha256_hex(self.root)[:12]}"

    @property
    def db_path(self) -> str:
        return os.path.join(self.root, "containers.db")

    @property
    def containers_dir(self) -> str:
        return os.path.join(self.root, "containers")

    def container_dir(self, cid: str) -> str:
        return os.path.join(self.root, "containers", cid)

    def log_path(self, cid: str) -> str:
        return os.path.join(self.container_dir(cid), "ctr.log")

    def attach_socket(self, cid: str) -> str:
        return os.path.join(self.container_dir(cid), "attach")

    @property
    def runtime_root(self) -> str:
        return os.path.join(self.run_dir, "runtime")

    @property
    def vm_runtime_root(self) -> str:
        """isobox-vm-runtime's state: short, as QEMU's unix sockets live under it."""
        return os.path.join(self.run_dir, "vm")

    @property
    def vm_cache(self) -> str:
        """Guest kernels, initramfs, agent builds and per-image root disks for VMs."""
        return os.path.join(self.root, "vm")

    @property
    def exits_dir(self) -> str:
        return os.path.join(self.run_dir, "exits")

    def exit_file(self, cid: str) -> str:
        return os.path.join(self.run_dir, "exits", cid)

    def persist_dir(self, cid: str) -> str:
        return os.path.join(self.run_dir, "persist", cid)

    def conmon_pidfile(self, cid: str) -> str:
        return os.path.join(self.run_dir, "persist", cid, "conmon.pid")

    def pidfile(self, cid: str) -> str:
        return os.path.join(self.run_dir, "persist", cid, "pid")

    def netns_path(self, cid: str) -> str:
        return os.path.join(self.run_dir, "netns", cid)

    @property
    def network_state(self) -> str:
        return os.path.join(self.root, "network")

    @property
    def epoch_file(self) -> str:
        return os.path.join(self.run_dir, "epoch")

    def ensure(self) -> None:
        for d in (self.root, self.containers_dir):
            os.makedirs(d, mode=0o711, exist_ok=True)
        for d in (self.run_dir, self.runtime_root, self.exits_dir,
                  os.path.join(self.run_dir, "persist"), os.path.join(self.run_dir, "netns")):
            os.makedirs(d, mode=0o700, exist_ok=True)

    def epoch(self) -> str:
        """A token that lives as long as the run directory: a record started under another
        epoch belongs to a boot (or a cleared /run) that is gone, so its processes are too."""
        try:
            with open(self.epoch_file) as f:
                return f.read().strip()
        except FileNotFoundError:
            pass
        self.ensure()
        token = os.urandom(8).hex()
        tmp = f"{self.epoch_file}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, token.encode())
        os.close(fd)
        try:
            os.link(tmp, self.epoch_file)  # first writer wins
        except FileExistsError:
            pass
        os.unlink(tmp)
        with open(self.epoch_file) as f:
            return f.read().strip()
