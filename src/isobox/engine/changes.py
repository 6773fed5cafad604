"""``diff``: what a container changed in its root filesystem, from the snapshot's overlay upper
directory (Docker's overlay2 ``changes``).

* a character device 0:0 in the upper directory is a whiteout: ``D``;
* an entry also present in a lower layer is ``C`` (a directory appears in the upper directory
  as soon as anything below it changed, so parents of a change are ``C``, as in Docker);
* anything else is ``A``; an opaque directory is ``C`` and what it hides from the lower
  layers is ``D``.

Mount points the runtime created (``/etc/hosts``, volume targets, ``/proc``…) are left out,
like Docker. Lower layers are image content: they are only looked up through directory fds
with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``, so a symlink in an image is never followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING

from isobox.engine.state import ContainerRow
from isobox.linux.syscalls import RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, openat2

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

ADDED, CHANGED, DELETED = "A", "C", "D"
KIND_CODES = {CHANGED: 0, ADDED: 1, DELETED: 2}  # Docker's API ``Kind`` numbers
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(dirfd: int) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(dirfd, name) == b"y":
                return True
        except OSError:
            continue
    return False


class _Lowers:
    """Existence lookups in the image layers, top-most first."""

    def __init__(self, dirs: list[str]) -> None:
        self.fds = [os.open(d, _DIR) for d in dirs if os.path.isdir(d)]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)

    def exists(self, rel: str) -> bool:
        for fd in self.fds:
            try:
                efd = openat2(fd, rel, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                              RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
            except FileNotFoundError:
                if self._hidden_in(fd, rel):
                    return False
                continue
            except OSError:  # a symlink on the way, or not a directory: hidden here
                return False
            try:
                return not _is_whiteout(os.fstat(efd))
            finally:
                os.close(efd)
        return False

    def _hidden_in(self, fd: int, rel: str) -> bool:
        """True when a parent of ``rel`` is whited out or opaque in this layer."""
        comps = rel.split("/")
        for i in range(1, len(comps)):
            parent = "/".join(comps[:i])
            try:
                pfd = openat2(fd, parent, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                              RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
            except OSError:
                return False
            try:
                st = os.fstat(pfd)
                if _is_whiteout(st):
                    return True
                if stat.S_ISDIR(st.st_mode):
                    dfd = os.open(".", _DIR, dir_fd=pfd)
                    try:
                        if _opaque(dfd):
                            return True
                    finally:
                        os.close(dfd)
            finally:
                os.close(pfd)
        return False

    def children(self, rel: str) -> set[str]:
        """Names below directory ``rel`` in the merged lower layers."""
        names: set[str] = set()
        for fd in self.fds:
            try:
                dfd = openat2(fd, rel, _DIR, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
            except OSError:
                continue
            try:
                for name in os.listdir(dfd):
                    if self.exists(f"{rel}/{name}"):
                        names.add(name)
                if _opaque(dfd):
                    break
            finally:
                os.close(dfd)
        return names


def _walk(dfd: int, rel: str) -> Iterator[tuple[str, os.stat_result, int | None]]:
    """(path, lstat, fd of the directory if it is one) for every entry below ``dfd``."""
    for name in sorted(os.listdir(dfd)):
        path = f"{rel}/{name}" if rel else name
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            cfd = os.open(name, _DIR, dir_fd=dfd)
            try:
                yield path, st, cfd
                yield from _walk(cfd, path)
            finally:
                os.close(cfd)
        else:
            yield path, st, None


def upper_changes(upper: str, lowers: list[str], exclude: set[str] | frozenset[str] = frozenset()
                  ) -> list[tuple[str, str]]:
    """(kind, absolute path) for every change in the overlay ``upper`` dir, sorted by path."""
    out: dict[str, str] = {}
    low = _Lowers(lowers)
    try:
        rootfd = os.open(upper, _DIR)
        try:
            for rel, st, dfd in _walk(rootfd, ""):
                path = "/" + rel
                if path in exclude:
                    continue
                if _is_whiteout(st):
                    out[path] = DELETED
                    continue
                out[path] = CHANGED if low.exists(rel) else ADDED
                if dfd is not None and out[path] == CHANGED and _opaque(dfd):
                    present = set(os.listdir(dfd))
                    for name in low.children(rel) - present:
                        out[f"{path}/{name}"] = DELETED
        finally:
            os.close(rootfd)
    finally:
        low.close()
    _drop_mount_parents(out, exclude)
    return sorted(((k, p) for p, k in out.items()), key=lambda kp: kp[1])


def _drop_mount_parents(out: dict[str, str], exclude: set[str] | frozenset[str]) -> None:
    """A directory copied up only because the runtime created a mount point below it
    (``/etc`` for ``/etc/hosts``) is not a change of the container's."""
    parents: set[str] = set()
    for path in exclude:
        while (path := os.path.dirname(path)) not in ("/", ""):
            parents.add(path)
    for path in sorted(parents & set(out), key=len, reverse=True):
        if out[path] != CHANGED:
            continue
        prefix = path + "/"
        if not any(p.startswith(prefix) for p in out):
            del out[path]


def _mount_points(spec: dict[str, object]) -> set[str]:
    mounts = spec.get("mounts")
    if not isinstance(mounts, list):
        return set()
    return {os.path.normpath(str(m.get("destination"))) for m in mounts
            if isinstance(m, dict) and m.get("destination")}


def container_changes(engine: Engine, row: ContainerRow) -> list[tuple[str, str]]:
    """``docker diff``: [(kind A/C/D, path)] for the container's root filesystem."""
    from isobox.engine.inspect import read_spec

    snap = engine.snapshots.get(row.id)
    exclude = _mount_points(read_spec(engine, row.id))
    return upper_changes(snap.upper, engine.snapshots.lowerdirs(snap), exclude)
