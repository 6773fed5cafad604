"""The API's unix socket (catalogue case 44): mode 0660, owner root, group ``isobox``, in a
directory no other user can write to.

Nothing at the socket's path is ever followed: whatever was there (a symlink to
``/etc/shadow``, a regular file, a stale socket) is ``lstat``-checked and unlinked, the new
socket is bound under umask 0177 (never more open than 0600 before its group is set), and
its owner and mode are set through an ``O_PATH | O_NOFOLLOW`` descriptor of the socket
itself, not through the path a racing process could swap."""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
import subprocess

from isobox.errors import SystemSetupError

log = logging.getLogger("isobox.api")


def socket_group(name: str) -> int:
    """The gid of ``name``, creating it as a system group when missing."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    proc = subprocess.run(["groupadd", "--system", name], capture_output=True, text=True,
                          check=False)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SystemSetupError(f"cannot create the group {name!r} for the API socket: "
                               f"{proc.stderr.strip() or 'groupadd failed'}") from None


def _prepare_parent(parent: str, gid: int) -> None:
    """Create the socket's directory (0710) or check an existing one: owned by root (or us)
    and writable by nobody else unless sticky (``/tmp``), so nobody can swap the socket."""
    created = not os.path.isdir(parent)
    os.makedirs(parent, mode=0o710, exist_ok=True)
    pst = os.stat(parent)
    if pst.st_uid not in (0, os.getuid()):
        raise SystemSetupError(f"{parent}: the socket's directory belongs to uid "
                               f"{pst.st_uid}, who could replace the socket")
    if pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not pst.st_mode & stat.S_ISVTX:
        raise SystemSetupError(f"{parent}: the socket's directory is writable by other users "
                               f"(mode {stat.S_IMODE(pst.st_mode):04o}), who could replace "
                               "the socket")
    if created or (not pst.st_mode & stat.S_IXGRP and pst.st_uid == os.getuid()):
        # the group must be able to reach the socket (the run directory is 0700)
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, stat.S_IMODE(pst.st_mode) | stat.S_IXGRP)
        finally:
            os.close(fd)


def _clear_path(path: str) -> None:
    """Remove what is at ``path`` without following it; a live server there is an error."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise SystemSetupError(f"{path} exists and is a directory")
    if stat.S_ISSOCK(st.st_mode):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            pass  # stale: left by a server that was killed
        else:
            raise SystemSetupError(f"another server is listening on {path}")
        finally:
            probe.close()
    else:
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a socket"
        log.warning("%s was %s: removed (never followed) to bind the API socket", path, kind)
    os.unlink(path)


def _own(path: str, gid: int) -> None:
    """chown root:gid and chmod 0660 the socket just bound, through an fd of the path's own
    inode (a symlink planted meanwhile is refused, never followed)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise SystemSetupError(f"{path}: the socket vanished after bind: {e.strerror}") from None
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise SystemSetupError(f"{path} was replaced after bind")
        inode = f"/proc/self/fd/{fd}"   # the magic link reaches the inode, not a path
        os.chown(inode, 0, gid)
        os.chmod(inode, 0o660)
    finally:
        os.close(fd)


def bind_unix(path: str, group: str) -> socket.socket:
    """A listening socket at ``path``, mode 0660, owned by root:``group``. A stale socket
    or any other non-directory there is replaced; a live server is an error."""
    gid = socket_group(group)
    _prepare_parent(os.path.dirname(os.path.abspath(path)), gid)
    _clear_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # no window in which the socket is more open than 0600
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise SystemSetupError(f"cannot listen on {path}: {e.strerror}") from None
    finally:
        os.umask(old)
    try:
        _own(path, gid)
    except BaseException:
        sock.close()
        raise
    return sock
