"""A minimal, deterministic newc ("070701") cpio writer for the guest initramfs.

Only directories, regular files and symlinks: the guest mounts devtmpfs for device nodes.
Every entry gets uid/gid 0 and mtime 0, so equal inputs give byte-identical archives."""

from __future__ import annotations

import stat
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


class CpioWriter:
    """Append entries to ``out``; call :meth:`close` to write the trailer (does not close out)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 0
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        name = name.strip("/") or "."
        if name in self._names and name != TRAILER:
            raise ValueError(f"cpio: duplicate entry {name!r}")
        self._names.add(name)
        self._ino += 1
        raw_name = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
                  0, 0, 0, 0, len(raw_name), 0)
        header = MAGIC + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + raw_name + _pad(len(header) + len(raw_name)))
        self._out.write(data + _pad(len(data)))

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._entry(path, stat.S_IFDIR | (mode & 0o7777), b"")

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(path, stat.S_IFREG | (mode & 0o7777), data)

    def add_symlink(self, path: str, target: str) -> None:
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def close(self) -> None:
        self._entry(TRAILER, 0, b"")
