"""The guest kernel: Debian's bzImage decompressed to its ELF vmlinux, booted PVH.

QEMU boots an ELF vmlinux carrying a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) straight into
64-bit code on ``-M microvm``, skipping the real-mode setup and the in-guest decompression
of a bzImage (seconds under TCG). The decompressed image is cached by the input's digest."""

from __future__ import annotations

import bz2
import hashlib
import lzma
import mmap
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from isobox.atomicfile import atomic_file
from isobox.vm.errors import VMError

BOOT_DIR = Path("/boot")
MODULES_ROOT = Path("/lib/modules")
HINT = "`make deps` or `apt-get install linux-image-amd64` provides it"

ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


Buffer = bytes | memoryview | mmap.mmap


@dataclass(frozen=True)
class GuestKernel:
    version: str
    vmlinux: Path
    modules_dir: Path


def _zstd(data: bytes) -> bytes:
    import zstandard

    d = zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()
    return d.decompress(data)


def _gzip(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=31).decompress(data)


def _xz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data)


def _lzma(data: bytes) -> bytes:
    return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data)


def _bzip2(data: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(data)


# Stream magics, as scripts/extract-vmlinux looks for them.
_CODECS: list[tuple[bytes, Callable[[bytes], bytes]]] = [
    (b"\xfd7zXZ\x00", _xz),
    (b"\x28\xb5\x2f\xfd", _zstd),
    (b"\x1f\x8b\x08", _gzip),
    (b"\x5d\x00\x00", _lzma),
    (b"BZh", _bzip2),
]


def _try(data: Buffer, offset: int, fn: Callable[[bytes], bytes]) -> bytes | None:
    try:
        out = fn(bytes(data[offset:]))
    except Exception:  # a false magic match: any decoder error means "not here"
        return None
    return out if out.startswith(ELF_MAGIC) else None


def _payload_offset(data: Buffer) -> int | None:
    """Where the boot protocol (>= 2.08) header says the compressed payload starts."""
    if len(data) < 0x250 or bytes(data[0x202:0x206]) != b"HdrS":
        return None
    version = struct.unpack_from("<H", data, 0x206)[0]
    if version < 0x208:
        return None
    setup_sects = data[0x1F1] or 4
    return (setup_sects + 1) * 512 + int(struct.unpack_from("<I", data, 0x248)[0])


def decompress_bzimage(data: Buffer, where: str) -> bytes:
    """The ELF vmlinux inside a bzImage: at the header's payload offset, else by scanning."""
    start = _payload_offset(data)
    if start is not None:
        for magic, fn in _CODECS:
            if bytes(data[start:start + len(magic)]) == magic:
                out = _try(data, start, fn)
                if out is not None:
                    return out
    raw = bytes(data)
    for magic, fn in _CODECS:
        pos = raw.find(magic)
        while pos != -1:
            out = _try(raw, pos, fn)
            if out is not None:
                return out
            pos = raw.find(magic, pos + 1)
    raise VMError(f"{where}: no xz/zstd/gzip/lzma/bzip2 stream holding an ELF kernel found "
                  "(lz4/lzo kernels are not supported)")


def has_pvh_note(elf: Buffer) -> bool:
    """True if a PT_NOTE segment of this ELF64 holds a "Xen" note of type 18 (PVH entry)."""
    if len(elf) < 64 or bytes(elf[:4]) != ELF_MAGIC or elf[4] != 2:
        return False
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 56 > len(elf):
            return False
        p_type = struct.unpack_from("<I", elf, base)[0]
        if p_type != PT_NOTE:
            continue
        off, size = struct.unpack_from("<Q", elf, base + 8)[0], \
            struct.unpack_from("<Q", elf, base + 32)[0]
        pos, end = off, min(off + size, len(elf))
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = bytes(elf[pos + 12:pos + 12 + namesz]).rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


_VERSION_RE = re.compile(rb"Linux version (\S+) \(")


def _bzimage_version(data: Buffer) -> str | None:
    if len(data) < 0x210 or bytes(data[0x202:0x206]) != b"HdrS":
        return None
    ptr = struct.unpack_from("<H", data, 0x20E)[0]
    if not ptr:
        return None
    raw = bytes(data[ptr + 0x200:ptr + 0x200 + 256]).split(b"\0", 1)[0]
    word = raw.split(b" ", 1)[0]
    return word.decode(errors="replace") or None


def _version_key(v: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+~]", v)]


def default_kernel() -> tuple[Path, str]:
    """The newest /boot/vmlinuz-<ver> whose /lib/modules/<ver> exists."""
    found: list[tuple[str, Path]] = []
    try:
        names = os.listdir(BOOT_DIR)
    except OSError:
        names = []
    for name in names:
        if name.startswith("vmlinuz-"):
            ver = name.removeprefix("vmlinuz-")
            if (MODULES_ROOT / ver / "modules.dep").is_file():
                found.append((ver, BOOT_DIR / name))
    if not found:
        raise VMError(f"no guest kernel: no {BOOT_DIR}/vmlinuz-<version> with "
                      f"{MODULES_ROOT}/<version>/modules.dep; {HINT}")
    ver, path = max(found, key=lambda t: _version_key(t[0]))
    return path, ver


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def guest_kernel(cache_dir: Path, kernel: Path | None = None,
                 modules_dir: Path | None = None) -> GuestKernel:
    """Resolve the guest kernel to a PVH-bootable ELF vmlinux (decompressed and cached)."""
    version: str | None = None
    if kernel is None:
        kernel, version = default_kernel()
    try:
        fd = os.open(kernel, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise VMError(f"guest kernel {kernel}: no such file; {HINT}") from None
    except OSError as e:
        raise VMError(f"guest kernel {kernel}: {e.strerror}") from None
    with open(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size < 64:
            raise VMError(f"guest kernel {kernel}: too small to be a kernel")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] == ELF_MAGIC:
                vmlinux = kernel
                if not has_pvh_note(data):
                    raise VMError(f"guest kernel {kernel}: ELF without a PVH entry note "
                                  "(needs CONFIG_PVH=y)")
                if version is None:
                    m = _VERSION_RE.search(data)
                    version = m.group(1).decode() if m else None
            else:
                if version is None:
                    version = _bzimage_version(data)
                vmlinux = _cached_vmlinux(cache_dir, kernel, data)
    if modules_dir is None:
        if version is None:
            raise VMError(f"guest kernel {kernel}: cannot read its version; pass the modules "
                          "directory explicitly")
        modules_dir = MODULES_ROOT / version
    if not (modules_dir / "modules.dep").is_file():
        raise VMError(f"guest kernel modules {modules_dir}: no modules.dep; {HINT}")
    return GuestKernel(version=version or modules_dir.name, vmlinux=vmlinux,
                       modules_dir=modules_dir)


def file_id(path: Path) -> str:
    """What identifies a file's version cheaply (device, inode, size, mtime): cache keys that
    avoid reading the file on every VM start."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise VMError(f"{path}: {e.strerror}") from None
    return f"{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _cached_vmlinux(cache_dir: Path, kernel: Path, data: mmap.mmap) -> Path:
    index = cache_dir / "kernels" / f"{hashlib.sha256(file_id(kernel).encode()).hexdigest()}.id"
    try:  # this very file was decompressed before: skip hashing its 8 MB
        known = cache_dir / "kernels" / f"{index.read_text().strip()}.vmlinux"
        if known.is_file():
            return known
    except OSError:
        pass
    digest = hashlib.sha256(data).hexdigest()
    out = cache_dir / "kernels" / f"{digest}.vmlinux"
    if out.is_file():
        _write_index(index, digest)
        return out
    elf = decompress_bzimage(data, str(kernel))
    if not has_pvh_note(elf):
        raise VMError(f"guest kernel {kernel}: its vmlinux has no PVH entry note "
                      "(needs CONFIG_PVH=y)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(str(out)) as f:
        f.write(elf)
    _write_index(index, digest)
    return out


def _write_index(index: Path, digest: str) -> None:
    with atomic_file(str(index)) as f:
        f.write(digest.encode())
