"""Reading and writing cgroup control files: one ``open`` + one ``read``/``write`` each.

Control files must be written with a single ``write(2)`` (the kernel parses each write as one
command), so this module never buffers; every failed write becomes a
:class:`CgroupWriteError` naming the file and the value.
"""

from __future__ import annotations

import posix  # not os: ``isobox-runtime delete`` never imports it (1.5-2 ms)

from isobox.errors import SystemSetupError

_O_RD = posix.O_RDONLY | posix.O_CLOEXEC
_O_WR = posix.O_WRONLY | posix.O_CLOEXEC


class CgroupWriteError(SystemSetupError):
    """The kernel refused a value; ``errno`` says why (callers retry on some)."""

    def __init__(self, path: str, value: str, err: OSError) -> None:
        self.path = path
        self.value = value
        self.errno = err.errno or 0
        super().__init__(f'cannot write "{value}" to {path}: {posix.strerror(self.errno)}')


def write(path: str, value: str) -> None:
    try:
        fd = posix.open(path, _O_WR)
    except OSError as err:
        raise CgroupWriteError(path, value, err) from None
    try:
        posix.write(fd, value.encode())
    except OSError as err:
        raise CgroupWriteError(path, value, err) from None
    finally:
        posix.close(fd)


def read(path: str) -> str:
    """The file's text (raises ``OSError``)."""
    fd = posix.open(path, _O_RD)
    try:
        chunks = []
        while True:
            chunk = posix.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        posix.close(fd)


def read_opt(path: str) -> str | None:
    """The file's text, or None if it does not exist (controller absent or cgroup gone)."""
    try:
        return read(path)
    except FileNotFoundError:
        return None


def parse_uint(text: str) -> int:
    """A single number; ``max`` (v2) reads as 0, as runc reports unlimited values."""
    text = text.strip()
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return 0


def read_uint(path: str) -> int:
    """The number in ``path``, 0 when the file is missing or not a number."""
    text = read_opt(path)
    return 0 if text is None else parse_uint(text)


def read_keyed(path: str) -> dict[str, int]:
    """A flat-keyed file (``memory.stat``, ``cpu.stat``, ``memory.events``): key → int."""
    text = read_opt(path)
    out: dict[str, int] = {}
    if text is None:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value:
            out[key] = parse_uint(value)
    return out


def exists(path: str) -> bool:
    try:
        posix.stat(path)
    except OSError:
        return False
    return True
