"""Container state under ``--root``: one directory per container, ``state.json`` + ``exec.fifo``.

The status is derived, never stored: ``created`` while the init process waits on
``exec.fifo``, ``running`` once the fifo is gone, ``paused`` when frozen, ``stopped`` when
the init process (identified by pid *and* start time, so pid reuse is caught) is gone.
"""

from __future__ import annotations

import posix  # not os: see below

from isobox import fastjson
from isobox.errors import ConflictError, IsoboxError, NotFoundError, SystemSetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/isobox-runtime"
STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
START_FIFO = "hooks.fifo"  # startContainer hook errors: init -> start

# ``start`` and ``delete`` import this module, and nothing on their path needs :mod:`os`
# beyond the system calls :mod:`posix` (its built-in half) has: importing ``os`` costs
# 1.5-2 ms here (it builds ``os.environ`` and the collections ABCs), a tenth of a ``start``.


def _join(directory: str, name: str) -> str:
    """``os.path.join`` for a relative ``name``."""
    if not directory or directory.endswith("/"):
        return directory + name
    return f"{directory}/{name}"


def _file_type(path: str) -> int:
    """``S_IFMT`` of ``path`` (following symlinks), 0 if it cannot be stat'ed."""
    try:
        return posix.stat(path).st_mode & 0o170000
    except (OSError, ValueError):
        return 0


_S_IFDIR = 0o040000
_S_IFREG = 0o100000


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks); None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write to a temporary name, then rename: readers see the old file or the new one.

    No fsync: the runtime's state lives on /run (tmpfs) and describes processes that do not
    survive a reboot; an fsync would cost milliseconds on every create for nothing.
    """
    tmp = f"{path}.tmp{posix.getpid()}"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
    finally:
        posix.close(fd)
    posix.rename(tmp, path)


def write_all(fd: int, data: bytes) -> None:
    """``write`` until all of ``data`` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


class ContainerState:
    """What the runtime remembers about one container (the contents of state.json)."""

    __slots__ = ("data", "dir", "id")

    def __init__(self, cid: str, directory: str, data: dict[str, Any]) -> None:
        self.id = cid
        self.dir = directory
        self.data = data

    @property
    def pid(self) -> int:
        return int(self.data.get("pid", 0))

    @property
    def bundle(self) -> str:
        return str(self.data.get("bundle", ""))

    @property
    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = self.data.get("config", {})
        return cfg

    @property
    def fifo_path(self) -> str:
        return _join(self.dir, EXEC_FIFO)

    def init_alive(self) -> bool:
        pid = self.pid
        return pid > 0 and process_start_time(pid) == self.data.get("pidStart")

    def status(self, check_frozen: bool = True) -> str:
        if self.data.get("creating"):  # written by create before it starts any work
            creator = int(self.data.get("creator", 0))
            if creator > 0 and process_start_time(creator) == self.data.get("creatorStart"):
                return "creating"
            return "stopped"  # its create died (was killed): only delete can follow
        if not self.init_alive():
            return "stopped"
        if _file_type(self.fifo_path):
            return "created"
        if check_frozen and self.frozen():
            return "paused"
        return "running"

    def frozen(self) -> bool:
        cg = self.data.get("cgroup")
        if not cg:
            return False
        from isobox.cgroups import CgroupManager

        try:
            return CgroupManager.from_state(cg).freezer_state() == "FROZEN"
        except (OSError, IsoboxError):
            return False

    def save(self) -> None:
        write_atomic(_join(self.dir, STATE_FILE), fastjson.dumps(self.data).encode())

    def oci_state(self, status: str | None = None) -> dict[str, Any]:
        """The runtime-spec State JSON (what ``state`` prints and hooks read on stdin)."""
        st = status or self.status()
        return {
            "ociVersion": self.config.get("ociVersion", "1.2.0"),
            "id": self.id,
            "pid": self.pid if st != "stopped" else 0,
            "status": st,
            "bundle": self.bundle,
            "rootfs": self.data.get("rootfs", ""),
            "created": self.data.get("created", ""),
            "owner": self.data.get("owner", ""),
            "annotations": self.config.get("annotations", {}),
        }


class StateStore:
    """The ``--root`` directory of the runtime."""

    __slots__ = ("root",)

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = root

    def container_dir(self, cid: str) -> str:
        from isobox.oci.ids import validate_container_id

        validate_container_id(cid)  # every command, not only create (catalogue case 14)
        return _join(self.root, cid)

    def reserve(self, cid: str) -> str:
        """Create the container's directory; the mkdir is the atomic duplicate-ID check."""
        from isobox.linux.pathnames import makedirs

        makedirs(self.root, 0o711)
        path = self.container_dir(cid)
        try:
            posix.mkdir(path, 0o711)
        except FileExistsError:
            raise ConflictError(f"container with id exists: {cid}") from None
        return path

    def load(self, cid: str, creating_ok: bool = False) -> ContainerState:
        """The container's state; one still being created is refused (ConflictError)
        unless ``creating_ok`` (``state``, ``list``)."""
        path = self.container_dir(cid)
        try:
            with open(_join(path, STATE_FILE), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            if _file_type(path) == _S_IFDIR:
                raise ConflictError(f"container {cid} is still being created") from None
            raise NotFoundError(f"container does not exist: {cid}") from None
        try:
            data = fastjson.loads(raw)
        except ValueError:
            data = None
        if type(data) is not dict:
            raise SystemSetupError(f"{_join(path, STATE_FILE)}: not a valid state file")
        st = ContainerState(cid, path, data)
        if not creating_ok and st.data.get("creating") and st.status() == "creating":
            raise ConflictError(f"container {cid} is still being created")
        return st

    def ids(self) -> list[str]:
        try:
            names = posix.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names
                      if _file_type(_join(_join(self.root, n), STATE_FILE)) == _S_IFREG)

    def remove(self, cid: str) -> None:
        path = self.container_dir(cid)
        try:
            names = posix.listdir(path)
        except FileNotFoundError:
            return
        for name in names:
            try:
                posix.unlink(_join(path, name))
            except IsADirectoryError:
                pass
        try:
            posix.rmdir(path)
        except FileNotFoundError:
            pass
