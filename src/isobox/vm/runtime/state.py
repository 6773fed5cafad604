"""VM state under ``--root``: one directory per VM with ``state.json``, QEMU's sockets and logs.

Like isobox-runtime, the status is derived: a VM whose QEMU (pid + start time) is gone is
``stopped`` whatever the file says.
"""

from __future__ import annotations

import os

from isobox import fastjson
from isobox.errors import ConflictError, NotFoundError
from isobox.oci.ids import validate_container_id
from isobox.runtime.state import process_start_time, write_atomic

TYPE_CHECKING = False  # not `typing` at run time: start-up cost (see fastjson)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/isobox-vm-runtime"
CTL_PORTS = 4


class VMState:
    """A plain class, not a dataclass: ``delete`` and ``kill`` are on the path of every
    ``run --rm``, and importing dataclasses (with inspect) costs them ~12 ms."""

    FIELDS = ("id", "bundle", "pid", "start_time", "started", "paused", "created",
              "annotations", "cgroup", "net", "qemu_uid")

    def __init__(self, id: str, dir: str, bundle: str, pid: int = 0, start_time: int = 0,
                 started: bool = False, paused: bool = False, created: str = "",
                 annotations: dict[str, str] | None = None,
                 cgroup: dict[str, Any] | None = None, net: dict[str, Any] | None = None,
                 qemu_uid: int = 0) -> None:
        self.id, self.dir, self.bundle = id, dir, bundle
        self.pid, self.start_time = pid, start_time
        self.started, self.paused, self.created = started, paused, created
        self.annotations: dict[str, str] = annotations or {}
        self.cgroup: dict[str, Any] = cgroup or {}
        self.net: dict[str, Any] = net or {}  # the guest NIC (network.GuestNet)
        self.qemu_uid = qemu_uid  # the uid QEMU drops to (machine.allocate_qemu_uid)

    # paths inside the state directory -----------------------------------------------------
    @property
    def qmp_socket(self) -> str:
        return os.path.join(self.dir, "qmp.sock")

    def ctl_socket(self, n: int) -> str:
        return os.path.join(self.dir, f"ctl{n}.sock")

    def ctl_lock(self, n: int) -> str:
        return os.path.join(self.dir, f"ctl{n}.lock")

    @property
    def status_file(self) -> str:
        """Where the guest agent's ``exit=<code>`` line lands (virtio-serial → file)."""
        return os.path.join(self.dir, "exit-status")

    @property
    def console_log(self) -> str:
        return os.path.join(self.dir, "console.log")

    @property
    def qemu_log(self) -> str:
        return os.path.join(self.dir, "qemu.log")

    # status --------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.pid > 0 and process_start_time(self.pid) == self.start_time

    def status(self) -> str:
        if not self.alive():
            return "stopped"
        if self.paused:
            return "paused"
        return "running" if self.started else "created"

    def save(self) -> None:
        data = {k: getattr(self, k) for k in self.FIELDS}
        write_atomic(os.path.join(self.dir, "state.json"), fastjson.dumps(data).encode())


class VMStore:
    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, vid: str) -> str:
        validate_container_id(vid)
        return os.path.join(self.root, vid)

    def new(self, vid: str, bundle: str) -> VMState:
        path = self.path(vid)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise ConflictError(f"container with id exists: {vid}") from None
        return VMState(id=vid, dir=path, bundle=bundle)

    def load(self, vid: str) -> VMState:
        path = self.path(vid)
        try:
            with open(os.path.join(path, "state.json")) as f:
                data = fastjson.loads(f.read())
        except FileNotFoundError:
            raise NotFoundError(f"container {vid} does not exist") from None
        return VMState(dir=path, **data)

    def ids(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root)
                          if os.path.exists(os.path.join(self.root, n, "state.json")))
        except FileNotFoundError:
            return []


def guest_exit_code(state_dir: str) -> int | None:
    """The workload's exit code as the guest agent wrote it (``exit=<n>``), if it did."""
    # the guest writes this file: read a bounded tail, accept only an exit status's range
    try:
        with open(os.path.join(state_dir, "exit-status"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64))
            text = f.read(64).decode("ascii", "replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        if line.startswith("exit="):
            value = line[5:].strip()
            if value.isdigit() and int(value) <= 255:
                return int(value)
            return None
    return None
