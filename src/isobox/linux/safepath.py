"""Resolve and create paths inside a root directory without ever leaving it.

Every lookup goes through ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` relative to
an fd of the root, so a symlink (absolute or with ``..``) in the tree is resolved as if the
root were ``/``. Missing directories are created one component at a time with ``mkdirat``
and re-opened with ``RESOLVE_NO_SYMLINKS``, so a symlink swapped in by a racing process is
refused instead of followed. Callers mount onto ``/proc/self/fd/N`` of the returned fd.
"""

from __future__ import annotations

import errno
import posix
import stat

from isobox.errors import SystemSetupError
from isobox.linux import syscalls as _sc
from isobox.linux.syscalls import (
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    openat2,
)

IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
O_PATH = posix.O_PATH


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def components(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def open_in_root(rootfd: int, path: str, flags: int = O_PATH) -> int:
    rel = "/".join(components(path)) or "."
    return openat2(rootfd, rel, flags, IN_ROOT)


def _open_child_nofollow(parent: int, name: str, flags: int) -> int:
    return openat2(parent, name, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)


def mkdir_all(rootfd: int, path: str, mode: int = 0o755) -> int:
    """Open (creating as needed) the directory ``path`` inside the root; returns an O_PATH fd."""
    try:
        return open_in_root(rootfd, path, O_PATH | posix.O_DIRECTORY)
    except FileNotFoundError:
        pass
    comps = components(path)
    cur = posix.dup(rootfd)
    try:
        for i, comp in enumerate(comps):
            prefix = "/".join(comps[: i + 1])
            try:
                nxt = openat2(rootfd, prefix, O_PATH | posix.O_DIRECTORY, IN_ROOT)
            except FileNotFoundError:
                try:
                    posix.mkdir(comp, mode, dir_fd=cur)
                except FileExistsError:
                    pass
                try:
                    nxt = _open_child_nofollow(cur, comp, O_PATH | posix.O_DIRECTORY)
                except OSError as e:
                    raise OSError(e.errno, f"cannot create directory /{prefix}: "
                                  f"{posix.strerror(e.errno or 0)}", "/" + prefix) from None
            except NotADirectoryError:
                raise NotADirectoryError(errno.ENOTDIR, f"/{prefix} is not a directory",
                                         "/" + prefix) from None
            posix.close(cur)
            cur = nxt
        return cur
    except BaseException:
        posix.close(cur)
        raise


def split_parent(path: str) -> tuple[str, str]:
    comps = components(path)
    if not comps:
        raise IsADirectoryError(errno.EISDIR, "the root itself", path)
    return "/".join(comps[:-1]), comps[-1]


def open_parent(rootfd: int, path: str, mode: int = 0o755) -> tuple[int, str]:
    """(fd of the parent directory, created as needed; final component name)."""
    parent, name = split_parent(path)
    if name == "..":
        raise OSError(errno.EINVAL, f"{path}: final component may not be ..", path)
    return mkdir_all(rootfd, parent, mode), name


def create_file(rootfd: int, path: str, mode: int = 0o644) -> int:
    """Open (creating if missing) the non-directory ``path`` inside the root as O_PATH.

    A symlink at the final component is refused (it would be followed by the mount).
    """
    try:
        fd = open_in_root(rootfd, path, O_PATH | posix.O_NOFOLLOW)
    except FileNotFoundError:
        pass
    else:
        st = posix.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            posix.close(fd)
            raise OSError(errno.ELOOP, f"{path} is a symlink", path)
        return fd
    parent, name = open_parent(rootfd, path)
    try:
        try:
            posix.close(posix.open(name, posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW
                                   | posix.O_WRONLY | posix.O_CLOEXEC, mode, dir_fd=parent))
        except FileExistsError:
            pass
        return _open_child_nofollow(parent, name, O_PATH)
    finally:
        posix.close(parent)


def is_symlink_in_root(rootfd: int, path: str) -> bool:
    """True when the final component of ``path`` (parents resolved in root) is a symlink."""
    try:
        parent_path, name = split_parent(path)
    except IsADirectoryError:
        return False
    try:
        parent = open_in_root(rootfd, parent_path, O_PATH | posix.O_DIRECTORY)
    except OSError:
        return False
    try:
        st = posix.stat(name, dir_fd=parent, follow_symlinks=False)
        return stat.S_ISLNK(st.st_mode)
    except OSError:
        return False
    finally:
        posix.close(parent)


# -- writes to procfs (CVE-2025-52881) ---------------------------------------------------
PROC_ROOT_INO = 1  # the root directory of every procfs instance


def check_procfs_root(fd: int, what: str) -> None:
    """Refuse ``fd`` unless it is the root directory of a procfs instance."""
    if _sc.fstatfs_type(fd) != _sc.PROC_SUPER_MAGIC:
        raise SystemSetupError(f"{what} is not procfs; refusing to write to it")
    ino = posix.fstat(fd).st_ino
    if ino != PROC_ROOT_INO:
        raise SystemSetupError(f"{what}: unexpected inode {ino} (not the root of a procfs); "
                               "refusing to write to it")


def open_procfs(path: str = "/proc") -> int:
    """An O_PATH fd of the procfs mounted at ``path`` (not following a symlink), verified."""
    fd = posix.open(path, O_PATH | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
    try:
        check_procfs_root(fd, path)
    except BaseException:
        posix.close(fd)
        raise
    return fd


def private_procfs() -> int:
    """A procfs instance of our own (fsopen/fsmount, attached nowhere), for the current PID
    namespace: nothing mounted over the container's /proc can redirect writes made through
    it. Raises OSError where the kernel refuses a new procfs (e.g. in a user namespace)."""
    flags = _sc.MOUNT_ATTR_NOSUID | _sc.MOUNT_ATTR_NODEV | _sc.MOUNT_ATTR_NOEXEC
    fd = _sc.fsmount_new("proc", flags)
    try:
        check_procfs_root(fd, "the private procfs")
    except BaseException:
        posix.close(fd)
        raise
    return fd


def proc_write(procfd: int, rel: str, data: bytes) -> None:
    """Write ``data`` to ``rel`` below the procfs root ``procfd`` (from :func:`open_procfs`
    or :func:`private_procfs`): the walk follows no symlink, crosses no mount point and never
    leaves the root, and the file it opens must be on procfs."""
    try:
        fd = openat2(procfd, rel, posix.O_WRONLY,
                     RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)
    except OSError as e:
        why = posix.strerror(e.errno or 0)
        if e.errno in (errno.ELOOP, errno.EXDEV):
            why = "a symlink or a mount point is in the way; refusing to follow it"
        raise SystemSetupError(f"/proc/{rel}: {why}") from None
    try:
        if _sc.fstatfs_type(fd) != _sc.PROC_SUPER_MAGIC:
            raise SystemSetupError(f"/proc/{rel} is not procfs; refusing to write to it")
        posix.write(fd, data)
    finally:
        posix.close(fd)
