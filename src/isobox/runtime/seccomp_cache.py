"""Compiled seccomp filters, kept under the runtime's ``--root`` for the next container.

libseccomp takes 15-20 ms here to turn Docker's default profile (367 syscall names) into BPF,
on every ``create`` and ``exec``; an engine uses the same profile for nearly every container.
A filter is compiled once (:func:`isobox.linux.seccomp.compile_program`) and stored in
``<root>/.seccomp-cache/<crc32>`` (a dot name: no container ID can start with a dot) with
everything its result depends on, compared in full when read:

* the profile itself, serialised as it came (key order included: a reordered profile is only
  a miss);
* the kernel (release and machine): libseccomp asks the kernel what it supports;
* libseccomp itself: the path of the library that compiled it and that file's device, inode,
  size and mtime (an upgrade installs a new file).

A cache entry decides what the container may call, so it is only used when the directory and
the file belong to this runtime's user and nobody else can write them (no symlink either);
anything else, or any entry that does not parse, is ignored and compiled afresh, and a
compile error is the error of the container's creation, as before.
"""

from __future__ import annotations

import os
import stat

from isobox.errors import SystemSetupError
from isobox.linux import seccomp as sec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CACHE_DIR = ".seccomp-cache"
_MAGIC = b"ISBXSCMP"
_MAX_ENTRY = 1 << 20


def program_for(root: str, profile: dict[str, Any]) -> sec.Program:
    """The compiled filter for ``profile``: from the cache under ``root``, else compiled now
    (and stored, when the cache directory is usable)."""
    import zlib

    from isobox.fastjson import dumps

    uname = os.uname()
    key = f"{dumps(profile)}\n{uname.release} {uname.machine}"
    directory = os.path.join(root, CACHE_DIR)
    path = os.path.join(directory, f"{zlib.crc32(key.encode()):08x}")
    found = _read(directory, path, key)
    if found is not None:
        return found
    program = sec.compile_program(profile)
    library = _library_identity()
    if library is not None:
        _store(directory, path, key, library, program)
    return program


def _safe(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(directory: str, path: str, key: str) -> sec.Program | None:
    from isobox.fastjson import loads

    try:
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or not _safe(st):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _safe(st) or st.st_size > _MAX_ENTRY:
            return None
        data = os.pread(fd, _MAX_ENTRY, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        if data[:8] != _MAGIC:
            return None
        size = int.from_bytes(data[8:12], "little")
        header = loads(data[12:12 + size])
        if header["key"] != key or _identity(header["library"][0]) != header["library"]:
            return None
        return sec.Program(data[12 + size:], int(header["flags"]))
    except (ValueError, KeyError, TypeError, IndexError, SystemSetupError):
        return None


def _identity(library: str) -> list[Any] | None:
    try:
        st = os.stat(library)
    except OSError:
        return None
    return [library, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _library_identity() -> list[Any] | None:
    """The libseccomp this process has loaded (it compiled the program), from its maps."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) == 6 and "/libseccomp.so" in fields[5]:
                    return _identity(fields[5].strip())
    except OSError:
        pass
    return None


def _store(directory: str, path: str, key: str, library: list[Any],
           program: sec.Program) -> None:
    """Write the entry (atomically: readers see the old one or the new one); a cache that
    cannot be written is no error."""
    from isobox.fastjson import dumps
    from isobox.runtime.state import write_atomic

    header = dumps({"key": key, "library": library, "flags": program.flags}).encode()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or not _safe(st):
            return
        write_atomic(path, _MAGIC + len(header).to_bytes(4, "little") + header + program.bpf)
    except OSError:
        pass
