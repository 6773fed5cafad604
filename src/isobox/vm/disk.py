"""Disk images for VMs: ext4 images built from a directory, qcow2 overlays, and the safety
check of a user-supplied disk (SECURITY.md cases 55 and 56).

A user's disk is inspected in pure Python before any qemu-img run: its format is probed from
the header magic (QEMU is never left to guess), and backing files, external data files,
encryption and formats other than raw and qcow2 are refused. qemu-img then confirms, with
the format given explicitly, under Nova's rlimits (1 GiB address space, 2 s CPU)."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from isobox.atomicfile import atomic_path
from isobox.vm.errors import DiskError

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_MAX_VIRTUAL_SIZE = 256 * GiB
QEMU_IMG_LIMITS = ("prlimit", f"--as={GiB}", "--cpu=2", "--")
QEMU_IMG_TIMEOUT = 30.0

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXT_DATA_FILE = 0x44415441
QCOW2_INCOMPAT_DIRTY = 1 << 0
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_INCOMPAT_KNOWN = 0b11111  # dirty, corrupt, data file, compression type, extended L2

# (offset, magic, format) of the image formats QEMU can probe; any of them but qcow2 is refused.
_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"KDMV", "vmdk"), (0, b"COWD", "vmdk"), (0, b"# Disk DescriptorFile", "vmdk"),
    (0, b"vhdxfile", "vhdx"), (0, b"conectix", "vpc"), (0, b"QED\0", "qed"),
    (0, b"LUKS\xba\xbe", "luks"), (0, b"Bochs Virtual HD Image", "bochs"),
    (0, b"WithoutFreeSpace", "parallels"), (0, b"WithouFreSpacExt", "parallels"),
    (0, b"#!/bin/sh\n#V2.0 Format", "cloop"), (0x40, b"\x7f\x10\xda\xbe", "vdi"),
)


@dataclass(frozen=True)
class DiskInfo:
    path: Path
    format: str  # "raw" | "qcow2"
    virtual_size: int
    actual_size: int


def _refuse(path: Path, reason: str) -> DiskError:
    return DiskError(f"disk {path}: {reason}; refusing")


def probe_format(header: bytes) -> str:
    """The image format a header announces (QEMU's probes, in Python); "raw" if none."""
    if header.startswith(QCOW2_MAGIC):
        version = struct.unpack_from(">I", header, 4)[0] if len(header) >= 8 else 0
        return "qcow2" if version in (2, 3) else "qcow"
    for offset, magic, fmt in _MAGICS:
        if header[offset:offset + len(magic)] == magic:
            return fmt
    return "raw"


def _check_qcow2(path: Path, header: bytes, file_size: int) -> int:
    """Refuse what makes QEMU open another file or a secret; returns the virtual size."""
    if len(header) < 72:
        raise _refuse(path, "truncated qcow2 header")
    version, backing_offset, backing_size, cluster_bits, size, crypt = \
        struct.unpack_from(">IQIIQI", header, 4)
    if backing_offset or backing_size:
        raise _refuse(path, "image has backing/data file (qcow2 backing file)")
    if crypt:
        raise _refuse(path, "qcow2 image is encrypted")
    if not 9 <= cluster_bits <= 21:
        raise _refuse(path, f"qcow2 cluster_bits {cluster_bits} out of range")
    ext_start = 72
    if version == 3:
        if len(header) < 104:
            raise _refuse(path, "truncated qcow2 v3 header")
        incompat = struct.unpack_from(">Q", header, 72)[0]
        if incompat & QCOW2_INCOMPAT_DATA_FILE:
            raise _refuse(path, "image has backing/data file (qcow2 external data file)")
        if incompat & QCOW2_INCOMPAT_CORRUPT:
            raise _refuse(path, "qcow2 image is marked corrupt")
        if incompat & ~QCOW2_INCOMPAT_KNOWN:
            raise _refuse(path, f"qcow2 incompatible features {incompat:#x} are unknown")
        ext_start = struct.unpack_from(">I", header, 100)[0]
        if ext_start < 104 or ext_start % 8 or ext_start > min(len(header), 1 << cluster_bits):
            raise _refuse(path, f"qcow2 header length {ext_start} is invalid")
    elif version != 2:
        raise _refuse(path, f"qcow2 version {version} is unknown")
    pos = ext_start
    cluster = 1 << cluster_bits
    while True:
        if pos + 8 > min(len(header), cluster):
            raise _refuse(path, "qcow2 header extensions run past the first cluster")
        magic, length = struct.unpack_from(">II", header, pos)
        if magic == 0:
            break
        if magic == QCOW2_EXT_DATA_FILE:
            raise _refuse(path, "image has backing/data file (qcow2 data file extension)")
        pos += 8 + (length + 7) // 8 * 8
    return int(size)


def _read_header(path: Path) -> tuple[bytes, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise DiskError(f"disk {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "not a regular file")
        return os.pread(fd, 2 * MiB, 0), st
    finally:
        os.close(fd)


def _qemu_img_info(path: Path, fmt: str) -> dict[str, object]:
    # --image-opts with file.driver=file: the name is never parsed as json:/nbd:/… syntax.
    opts = f"driver={fmt},file.driver=file,file.filename={str(path).replace(',', ',,')}"
    argv = [*QEMU_IMG_LIMITS, "qemu-img", "info", "--output=json", "--image-opts", opts]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _refuse(path, "qemu-img info timed out") from None
    if proc.returncode != 0:
        raise _refuse(path, f"qemu-img info failed: {proc.stderr.strip()[-300:]}")
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        raise _refuse(path, "qemu-img info printed no JSON") from None
    if not isinstance(info, dict):
        raise _refuse(path, "qemu-img info printed no JSON object")
    return info


def check_user_disk(path: Path | str, max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE
                    ) -> DiskInfo:
    """Accept a user's raw or qcow2 disk only if it references no other file (SECURITY.md
    cases 55, 56) and its virtual size is at most ``max_virtual_size`` bytes."""
    path = Path(path)
    header, st = _read_header(path)
    fmt = probe_format(header)
    if fmt == "qcow2":
        virtual = _check_qcow2(path, header, st.st_size)
    elif fmt == "raw":
        virtual = st.st_size
    else:
        raise _refuse(path, f"format {fmt} is not supported (only raw and qcow2)")
    if virtual > max_virtual_size:
        raise _refuse(path, f"virtual size {virtual} bytes exceeds the limit of "
                            f"{max_virtual_size} bytes")
    info = _qemu_img_info(path, fmt)
    data = info.get("format-specific", {})
    extra = data.get("data", {}) if isinstance(data, dict) else {}
    if info.get("format") != fmt:
        raise _refuse(path, f"qemu-img reports format {info.get('format')!r}, not {fmt}")
    if "backing-filename" in info or "full-backing-filename" in info or \
            (isinstance(extra, dict) and "data-file" in extra):
        raise _refuse(path, "image has backing/data file")
    if info.get("encrypted"):
        raise _refuse(path, "image is encrypted")
    vsize = info.get("virtual-size")
    if not isinstance(vsize, int) or vsize > max_virtual_size:
        raise _refuse(path, f"virtual size {vsize} bytes exceeds the limit of "
                            f"{max_virtual_size} bytes")
    asize = info.get("actual-size")
    return DiskInfo(path=path, format=fmt, virtual_size=vsize,
                    actual_size=asize if isinstance(asize, int) else st.st_blocks * 512)


def check_open_disk(fd: int, label: str,
                    max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE) -> DiskInfo:
    """:func:`check_user_disk` on an already open file (through ``/proc/<pid>/fd``, the same
    inode): the file checked is the very one QEMU then gets by descriptor, so it cannot be
    swapped in between. Messages name ``label``."""
    proc = f"/proc/{os.getpid()}/fd/{fd}"
    try:
        info = check_user_disk(proc, max_virtual_size)
    except DiskError as e:
        raise DiskError(str(e).replace(proc, label)) from None
    return DiskInfo(path=Path(label), format=info.format, virtual_size=info.virtual_size,
                    actual_size=info.actual_size)


def _tree_usage(src: Path) -> tuple[int, int]:
    """(bytes rounded to 4 KiB blocks, number of inodes) of the tree at ``src``."""
    total, inodes = 4096, 1
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(src):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            inodes += 1
            total += (st.st_size + 4095) // 4096 * 4096 if not stat.S_ISDIR(st.st_mode) \
                else 4096
    return total, inodes


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DiskError(f"{what}: {argv[0]} failed: {proc.stderr.strip()[-500:]}")


def ext4_image_from_dir(src: Path | str, dest: Path | str, free_mib: int = 256) -> None:
    """A sparse ext4 image at ``dest`` holding the tree at ``src`` (owners and modes kept)
    with about ``free_mib`` MiB free; built beside dest and renamed into place (mode 0600)."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise DiskError(f"ext4 image source {src}: not a directory")
    used, inodes = _tree_usage(src)
    inode_count = inodes + max(4096, free_mib * 64)
    # ~10% for group descriptors and bitmaps, 256 B per inode, a 16 MiB journal.
    size = used + used // 10 + inode_count * 256 + 16 * MiB + free_mib * MiB + 8 * MiB
    size = (size + MiB - 1) // MiB * MiB
    with atomic_path(str(dest), 0o600) as tmp:
        os.truncate(tmp, size)
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", str(inode_count), "-J", "size=16",
              "-E", "root_owner=0:0,lazy_journal_init=1", "-L", "isobox", "-d", str(src), tmp],
             f"ext4 image {dest} from {src}")


def create_overlay(base: Path | str, base_fmt: str, dest: Path | str,
                   size: int | None = None) -> None:
    """A qcow2 at ``dest`` whose backing file is ``base`` with the explicit format
    ``base_fmt`` (never probed); built beside dest and renamed into place (mode 0600)."""
    base, dest = Path(base), Path(dest)
    if base_fmt not in ("raw", "qcow2"):
        raise DiskError(f"overlay base {base}: format {base_fmt!r} is not raw or qcow2")
    if not base.is_file():
        raise DiskError(f"overlay base {base}: no such file")
    with atomic_path(str(dest), 0o600) as tmp:
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_fmt,
                "-b", str(base.absolute()), tmp]
        if size is not None:
            argv.append(str(size))
        _run(argv, f"overlay {dest} on {base}")
