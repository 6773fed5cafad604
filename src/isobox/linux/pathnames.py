"""What ``isobox-runtime create`` needs of :mod:`os.path` (and ``os.makedirs``), for ``str``
paths, on :mod:`posix` alone.

Why not :mod:`os.path`: ``posixpath`` imports :mod:`os`, and ``import os`` costs ~2.2 ms of
a fresh interpreter here (it builds ``os.environ`` on the collections ABCs), a fifteenth of
a whole ``create``, which pays it on every container for these few functions. Each one
behaves as its ``posixpath`` namesake; tests/runtime/test_pathnames.py compares them.
"""

from __future__ import annotations

import posix

_S_IFMT = 0o170000
_S_IFDIR = 0o040000


def join(path: str, *parts: str) -> str:
    for part in parts:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def normpath(path: str) -> str:
    """Collapse ``//``, ``.`` and ``..`` lexically (no symlink is looked at); POSIX keeps
    exactly two leading slashes, and three or more become one."""
    if not path:
        return "."
    slashes = 0
    if path.startswith("/"):
        slashes = 2 if path.startswith("//") and not path.startswith("///") else 1
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part != ".." or (not slashes and not parts) or (parts and parts[-1] == ".."):
            parts.append(part)
        elif parts:
            parts.pop()
    return "/" * slashes + "/".join(parts) or "."


def abspath(path: str) -> str:
    if not path.startswith("/"):
        path = join(posix.getcwd(), path)
    return normpath(path)


def split(path: str) -> tuple[str, str]:
    i = path.rfind("/") + 1
    head, tail = path[:i], path[i:]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head, tail


def isdir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & _S_IFMT == _S_IFDIR
    except (OSError, ValueError):
        return False


def exists(path: str) -> bool:
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def makedirs(path: str, mode: int = 0o777) -> None:
    """``os.makedirs(path, mode, exist_ok=True)``, step for step: the missing parents get the
    default mode, and an existing non-directory at ``path`` is an error."""
    head, tail = split(path)
    if not tail:
        head, tail = split(head)
    if head and tail and not exists(head):
        try:
            makedirs(head)
        except FileExistsError:  # made meanwhile by someone else (or a dangling symlink)
            pass
        if tail == ".":
            return
    try:
        posix.mkdir(path, mode)
    except OSError:
        if not isdir(path):
            raise
