"""Durable atomic file replacement: write a temporary sibling, fsync, rename (DESIGN.md's rule
for state on disk). Readers see the old file or the new one, never a part."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO


@contextmanager
def atomic_file(path: str, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` (with ``mode``) when the block completes;
    on an exception the temporary file is removed and ``path`` is untouched."""
    target = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.",
                               dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def atomic_path(path: str, mode: int = 0o644) -> Iterator[str]:
    """Yield the path of an empty temporary sibling for a program to write (a compiler,
    ``qemu-img``, ``mkfs``); it replaces ``path`` with ``mode`` when the block completes and is
    removed on an exception."""
    target = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.",
                               dir=os.path.dirname(target))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.rename(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
