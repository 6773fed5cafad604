"""Guest kernel: the bzImage's payload decompressed to a PVH-bootable ELF, cached by digest."""

from __future__ import annotations

import gzip
import lzma
import os
import struct
from pathlib import Path

import pytest
import zstandard

from isobox.vm.errors import VMError
from isobox.vm.kernel import GuestKernel, decompress_bzimage, guest_kernel, has_pvh_note


def _elf(pvh: bool) -> bytes:
    """A minimal ELF64 with one PT_NOTE segment holding a Xen note (type 18 if pvh)."""
    note = struct.pack("<III", 4, 4, 18 if pvh else 17) + b"Xen\0" + b"\0" * 4
    phoff, note_off = 64, 64 + 56
    ehdr = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    return ehdr + phdr + note + b"\0" * 256


def test_host_kernel_is_pvh_elf_and_cached(host_kernel: GuestKernel, vm_cache: Path) -> None:
    k = host_kernel
    assert k.vmlinux.parent == vm_cache / "kernels"
    data = k.vmlinux.read_bytes()
    assert data[:4] == b"\x7fELF" and has_pvh_note(data)
    assert (k.modules_dir / "modules.dep").is_file()
    assert k.modules_dir.name == k.version
    mtime = os.stat(k.vmlinux).st_mtime_ns
    again = guest_kernel(vm_cache)
    assert again == k and os.stat(k.vmlinux).st_mtime_ns == mtime
    assert not [n for n in os.listdir(k.vmlinux.parent) if n.startswith(".")]


def test_elf_kernel_used_as_is(host_kernel: GuestKernel, vm_tmp: Path) -> None:
    k = guest_kernel(vm_tmp, kernel=host_kernel.vmlinux)
    assert k.vmlinux == host_kernel.vmlinux and k.version == host_kernel.version
    assert not (vm_tmp / "kernels").exists()


def test_elf_without_pvh_note_refused(vm_tmp: Path) -> None:
    bad = vm_tmp / "vmlinux"
    bad.write_bytes(_elf(pvh=False))
    assert has_pvh_note(_elf(pvh=True)) and not has_pvh_note(_elf(pvh=False))
    with pytest.raises(VMError, match="PVH"):
        guest_kernel(vm_tmp, kernel=bad, modules_dir=vm_tmp)


def test_missing_kernel_names_path_and_package(vm_tmp: Path) -> None:
    with pytest.raises(VMError) as e:
        guest_kernel(vm_tmp, kernel=vm_tmp / "nope")
    assert str(vm_tmp / "nope") in str(e.value) and "linux-image-amd64" in str(e.value)


def test_missing_modules_dir(host_kernel: GuestKernel, vm_tmp: Path) -> None:
    with pytest.raises(VMError, match=r"modules\.dep"):
        guest_kernel(vm_tmp, kernel=host_kernel.vmlinux, modules_dir=vm_tmp / "mods")


@pytest.mark.parametrize("codec", ["gzip", "xz", "zstd", "lzma"])
def test_stream_found_by_scanning(codec: str) -> None:
    elf = _elf(pvh=True)
    comp = {"gzip": gzip.compress, "xz": lambda b: lzma.compress(b, lzma.FORMAT_XZ),
            "zstd": zstandard.ZstdCompressor().compress,
            "lzma": lambda b: lzma.compress(b, lzma.FORMAT_ALONE)}[codec](elf)
    # Decoy magics before the real stream, garbage after it.
    blob = b"MZ" + b"\x1f\x8b\x08junk\xfd7zXZ\x00junk" + b"\0" * 100 + comp + b"\xff" * 64
    assert decompress_bzimage(blob, "test") == elf


def test_no_stream(vm_tmp: Path) -> None:
    with pytest.raises(VMError, match="no xz/zstd/gzip"):
        decompress_bzimage(b"MZ" + b"\0" * 4096, "blob")
    bad = vm_tmp / "bzImage"
    bad.write_bytes(b"MZ" + b"\0" * 4096)
    with pytest.raises(VMError, match=str(bad)):
        guest_kernel(vm_tmp, kernel=bad, modules_dir=vm_tmp)
    assert not list((vm_tmp / "kernels").glob("*")) if (vm_tmp / "kernels").exists() else True
