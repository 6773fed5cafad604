"""Compiled seccomp filters, kept under the runtime's ``--root`` for the next container.

libseccomp takes 15-20 ms here to turn Docker's default profile (367 syscall names) into BPF,
on every ``create`` and ``exec``; an engine uses the same profile for nearly every container.
A filter is compiled once (:func:`isobox.linux.seccomp.compile_program`) and stored in
``<root>/.seccomp-cache/<crc32>`` (a dot name: no container ID can start with a dot) with
everything its result depends on, compared in full when read:

* the profile itself, serialised as it came (key order included: a reordered profile is only
  a miss);
* the kernel (release and machine): libseccomp asks the kernel what it supports;
* our translation of the profile (``isobox/linux/seccomp.py``: its size and mtime) and the
  entry format;
* the libseccomp this process loads (``dlopen``, then its file's path, device, inode, size
  and mtime from ``/proc/self/maps``): an upgrade, or another copy taking precedence, is a
  miss.

An entry decides what the container may call, so it is used only when ``--root``, the cache
directory and the entry belong to this runtime's user and nobody else can write them; the
directory and the entry are opened without following symlinks and checked on their open
descriptors. Anything else, or an entry that does not parse, is ignored and the profile
compiled afresh; a compile error is the error of the container's creation, as before. The
directory holds at most :data:`MAX_ENTRIES` entries (it is cleared when full).
"""

from __future__ import annotations

import posix
import stat

from isobox.errors import SystemSetupError
from isobox.linux import pathnames
from isobox.linux import seccomp as sec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CACHE_DIR = ".seccomp-cache"
MAX_ENTRIES = 64
_MAGIC = b"ISBXSCM2"
_MAX_ENTRY = 1 << 20
_DIR_FLAGS = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC


def program_for(root: str, profile: dict[str, Any]) -> sec.Program:
    """The compiled filter for ``profile``: from the cache under ``root``, else compiled now
    (and stored, when the cache directory is usable)."""
    import zlib

    from isobox.fastjson import dumps

    uname = posix.uname()
    translator = posix.stat(sec.__file__)
    key = (f"{_MAGIC.decode()} {translator.st_size} {translator.st_mtime_ns} {uname.release} "
           f"{uname.machine}\n{dumps(profile)}")
    name = f"{zlib.crc32(key.encode()):08x}"
    library = _loaded_library()
    dir_fd = _open_dir(root, create=False)
    if dir_fd >= 0:
        try:
            found = _read(dir_fd, name, key, library)
        finally:
            posix.close(dir_fd)
        if found is not None:
            return found
    program = sec.compile_program(profile)
    library = _loaded_library()  # compile_program loaded it, if it was not yet
    if library is not None:
        _store(root, name, key, library, program)
    return program


def _safe(st: posix.stat_result) -> bool:
    return st.st_uid == posix.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _open_dir(root: str, create: bool) -> int:
    """A descriptor of the cache directory if it (and ``root``) can be trusted, else -1."""
    try:
        st = posix.lstat(root)
        if not stat.S_ISDIR(st.st_mode) or not _safe(st):
            return -1
        if create:
            try:
                posix.mkdir(pathnames.join(root, CACHE_DIR), 0o700)
            except FileExistsError:
                pass
        fd = posix.open(pathnames.join(root, CACHE_DIR), _DIR_FLAGS)
    except OSError:
        return -1
    if _safe(posix.fstat(fd)):
        return fd
    posix.close(fd)
    return -1


def _read(dir_fd: int, name: str, key: str, library: list[Any] | None) -> sec.Program | None:
    from isobox.fastjson import loads

    try:
        fd = posix.open(name, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = posix.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _safe(st) or st.st_size > _MAX_ENTRY:
            return None
        data = posix.pread(fd, _MAX_ENTRY, 0)
    except OSError:
        return None
    finally:
        posix.close(fd)
    try:
        if data[:8] != _MAGIC:
            return None
        size = int.from_bytes(data[8:12], "little")
        header = loads(data[12:12 + size])
        if header["key"] != key or library is None or header["library"] != library:
            return None
        return sec.Program(data[12 + size:], int(header["flags"]))
    except (ValueError, KeyError, TypeError, IndexError, SystemSetupError):
        return None


def _loaded_library() -> list[Any] | None:
    """Path, device, inode, size and mtime of the libseccomp this process loads."""
    from _ctypes import dlopen

    try:
        dlopen("libseccomp.so.2", posix.RTLD_NOW)  # what compile_program would use; cheap
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) == 6 and "/libseccomp.so" in fields[5]:
                    path = fields[5].strip()
                    st = posix.stat(path)
                    return [path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    except OSError:
        pass
    return None


def _store(root: str, name: str, key: str, library: list[Any], program: sec.Program) -> None:
    """Write the entry under a temporary name created exclusively, then rename it into
    place (readers see the old entry or the new one). A cache that cannot be written is no
    error."""
    from isobox.fastjson import dumps
    from isobox.runtime.state import write_all

    header = dumps({"key": key, "library": library, "flags": program.flags}).encode()
    data = _MAGIC + len(header).to_bytes(4, "little") + header + program.bpf
    dir_fd = _open_dir(root, create=True)
    if dir_fd < 0:
        return
    tmp = f".tmp{posix.getpid()}"
    try:
        if len(posix.listdir(dir_fd)) >= MAX_ENTRIES:
            for old in posix.listdir(dir_fd):
                posix.unlink(old, dir_fd=dir_fd)
        fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW
                        | posix.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            write_all(fd, data)
        finally:
            posix.close(fd)
        posix.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        try:
            posix.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
    finally:
        posix.close(dir_fd)
