"""Users and groups of an image: ``/etc/passwd`` and ``/etc/group`` read inside its root.

Used by ``USER``/``--chown`` in builds and by ``--user`` at run time. Each database is
resolved inside the rootfs (a symlink cannot lead to the host), must be a regular file (a
FIFO or a device is refused before it is opened: no hang, no watchdog armed) and is read up
to :data:`MAX_USER_DB` bytes (containerd's bound; catalogue case 43).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from isobox.errors import ImageError
from isobox.linux import safepath

MAX_USER_DB = 10 * 1024 * 1024  # containerd's bound on /etc/passwd and /etc/group
MAX_ID = 0xFFFFFFFE
_O_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
_CHUNK = 1 << 20


class UserLookupError(ImageError):
    """``--user``/``USER`` cannot be resolved in the image (unknown name, hostile database)."""


@dataclass(frozen=True)
class User:
    """A user resolved in the image's passwd and group files."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


def read_bounded(fd: int, limit: int) -> bytes:
    """At most ``limit + 1`` bytes (one more than allowed, so the caller sees "too big")."""
    chunks, total = [], 0
    while total <= limit:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_user_db(rootfs: str, path: str) -> str | None:
    """``path`` (``/etc/passwd``) of the image, resolved inside ``rootfs``; None if missing."""
    rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            pfd = safepath.open_in_root(rootfd, path)  # O_PATH: nothing is opened yet
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UserLookupError(f"{path} in the image: {e.strerror}") from None
    finally:
        os.close(rootfd)
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):  # a device is never opened (a watchdog would arm)
            raise UserLookupError(f"{path} in the image is not a regular file")
        if st.st_size > MAX_USER_DB:
            raise UserLookupError(f"{path} in the image is larger than {MAX_USER_DB} bytes")
        try:
            fd = os.open(safepath.fd_path(pfd), _O_READ)
        except OSError as e:
            raise UserLookupError(f"{path} in the image: {e.strerror}") from None
    finally:
        os.close(pfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between fstat and open
            raise UserLookupError(f"{path} in the image is not a regular file")
        data = read_bounded(fd, MAX_USER_DB)
    except OSError as e:
        raise UserLookupError(f"{path} in the image: "
                              f"{e.strerror or os.strerror(e.errno or errno.EIO)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_USER_DB:
        raise UserLookupError(f"{path} in the image is larger than {MAX_USER_DB} bytes")
    return data.decode("utf-8", errors="replace")


def _entries(text: str | None, fields: int) -> list[list[str]]:
    if not text:
        return []
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            out.append(parts)
    return out


def lookup_user(rootfs: str, spec: str, *, groups: bool = True) -> User:
    """``user[:group]`` (names or numbers) for the image at ``rootfs``, as moby's getUser.

    A numeric user missing from ``/etc/passwd`` is fine (gid 0, as Docker); a name must
    exist; an empty user (``:1000``) is uid 0, not looked up (libcontainer's default user).
    ``groups``: also give the supplementary groups, the primary gid first (moby since
    CVE-2022-36109: a group the process drops out of could otherwise grant it access), then,
    for a user found in ``/etc/passwd`` without an explicit group, those that list its name
    in ``/etc/group``; without duplicates."""
    user, _, group = spec.partition(":")
    if not user and not group:
        raise UserLookupError(f"invalid user {spec!r}")
    name: str | None = None
    uid, gid = 0, 0
    if user.isdigit():
        uid = int(user)
        if not group or groups:
            for p in _entries(read_user_db(rootfs, "/etc/passwd"), 4):
                if p[2] == user and p[3].isdigit():
                    gid, name = int(p[3]), p[0]
                    break
    elif user:
        for p in _entries(read_user_db(rootfs, "/etc/passwd"), 4):
            if p[0] == user and p[2].isdigit() and p[3].isdigit():
                uid, gid, name = int(p[2]), int(p[3]), user
                break
        else:
            raise UserLookupError(f"unable to find user {user}: no matching entries in "
                                  "passwd file")
    member_of: list[int] = []
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for g in _entries(read_user_db(rootfs, "/etc/group"), 3):
                if g[0] == group and g[2].isdigit():
                    gid = int(g[2])
                    break
            else:
                raise UserLookupError(f"unable to find group {group}: no matching entries in "
                                      "group file")
    elif groups and name is not None:
        for g in _entries(read_user_db(rootfs, "/etc/group"), 4):
            if name in g[3].split(",") and g[2].isdigit():
                member_of.append(int(g[2]))
    extra = list(dict.fromkeys([gid, *member_of])) if groups else []
    if uid > MAX_ID or gid > MAX_ID or any(x > MAX_ID for x in extra):
        raise UserLookupError(f"invalid user {spec!r}: id out of range")
    return User(uid, gid, tuple(extra))
