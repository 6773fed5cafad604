"""The guest initramfs: a newc archive GNU cpio reads back, with the module closure
(dependencies first, stored decompressed), static busybox and the agent as /init."""

from __future__ import annotations

import io
import lzma
import os
import subprocess
from pathlib import Path

import pytest
import zstandard

from isobox.vm.cpio import CpioWriter
from isobox.vm.errors import VMError
from isobox.vm.initramfs import (
    DEFAULT_MODULES,
    OPTIONAL_MODULES,
    guest_initramfs,
    module_closure,
    module_name,
)
from isobox.vm.kernel import GuestKernel


def _extract(archive: Path, dest: Path) -> None:
    dest.mkdir()
    subprocess.run(["cpio", "-i", "-d", "-m", "--quiet", "-F", str(archive)], cwd=dest,
                   check=True)


def test_cpio_writer_round_trip(vm_tmp: Path) -> None:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.add_dir("d", 0o750)
    w.add_file("d/f", b"hello", 0o640)
    w.add_file("d/empty", b"")
    w.add_symlink("d/l", "f")
    with pytest.raises(ValueError, match="duplicate"):
        w.add_file("d/f", b"again")
    w.close()
    assert len(buf.getvalue()) % 4 == 0
    (vm_tmp / "a.cpio").write_bytes(buf.getvalue())
    _extract(vm_tmp / "a.cpio", vm_tmp / "x")
    x = vm_tmp / "x"
    assert (x / "d/f").read_bytes() == b"hello" and (x / "d/empty").read_bytes() == b""
    assert os.readlink(x / "d/l") == "f"
    assert (os.stat(x / "d").st_mode & 0o7777) == 0o750
    assert (os.stat(x / "d/f").st_mode & 0o7777) == 0o640


def _fake_modules(root: Path) -> Path:
    mods = root / "lib/modules/9.9.9-test"
    (mods / "kernel/a").mkdir(parents=True)
    (mods / "kernel/a/base.ko").write_bytes(b"BASE")
    (mods / "kernel/a/mid.ko.xz").write_bytes(lzma.compress(b"MID", lzma.FORMAT_XZ))
    (mods / "kernel/a/top-mod.ko.zst").write_bytes(zstandard.ZstdCompressor().compress(b"TOP"))
    (mods / "modules.dep").write_text(
        "kernel/a/top-mod.ko.zst: kernel/a/mid.ko.xz kernel/a/base.ko\n"
        "kernel/a/mid.ko.xz: kernel/a/base.ko\n"
        "kernel/a/base.ko:\n")
    (mods / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    return mods


def test_closure_order_builtin_and_unknown(vm_tmp: Path) -> None:
    mods = _fake_modules(vm_tmp)
    assert module_name("kernel/a/top-mod.ko.zst") == "top_mod"
    assert module_closure(mods, ["top_mod", "ext4"]) == [
        "kernel/a/base.ko", "kernel/a/mid.ko.xz", "kernel/a/top-mod.ko.zst"]
    with pytest.raises(VMError, match="'nosuch'"):
        module_closure(mods, ["nosuch"])


def test_host_closure_puts_dependencies_first(host_kernel: GuestKernel) -> None:
    optional = [n for names in OPTIONAL_MODULES.values() for n in names]
    order = module_closure(host_kernel.modules_dir, [*DEFAULT_MODULES, *optional])
    names = [module_name(r) for r in order]
    for want in ("virtio_mmio", "virtio_blk", "virtio_console", "ext4", "9pnet_virtio",
                 "virtio_net", "crc32c_generic"):
        assert want in names
    assert names.index("virtio_ring") < names.index("virtio") < names.index("virtio_blk")
    assert names.index("jbd2") < names.index("ext4")
    assert names.index("9pnet") < names.index("9p")


def test_initramfs_contents_and_cache(host_kernel: GuestKernel, vm_tmp: Path) -> None:
    agent = vm_tmp / "agent"
    agent.write_bytes(Path("/bin/busybox").read_bytes())  # any static ELF will do
    cache = vm_tmp / "cache"
    out = guest_initramfs(cache, host_kernel, agent)
    assert out.parent == cache / "initramfs" and out.suffix == ".cpio"
    mtime = os.stat(out).st_mtime_ns
    assert guest_initramfs(cache, host_kernel, agent) == out
    assert os.stat(out).st_mtime_ns == mtime
    _extract(out, vm_tmp / "x")
    x = vm_tmp / "x"
    assert os.access(x / "init", os.X_OK) and (x / "bin/busybox").is_file()
    for d in ("dev", "proc", "sys", "rootfs", "tmp"):
        assert (x / d).is_dir()
    listed = (x / "modules").read_text().split()
    boot = {module_name(p) for p in listed}
    assert {"virtio_blk", "ext4"} <= boot and not boot & {"9p", "virtio_net"}
    for group in OPTIONAL_MODULES:  # only in the archives of VMs with the device
        assert not (x / f"modules.{group}").exists()
    assert not (x / "lib/modules" / host_kernel.version / "kernel/fs/9p").exists()
    full = guest_initramfs(cache, host_kernel, agent, groups=sorted(OPTIONAL_MODULES))
    assert full != out and full.stat().st_size > out.stat().st_size
    assert guest_initramfs(cache, host_kernel, agent, groups=["net"]) not in (out, full)
    assert guest_initramfs(cache, host_kernel, agent, groups=["balloon", "9p", "net"]) == full
    _extract(full, vm_tmp / "full")
    for group in OPTIONAL_MODULES:  # loaded only when the VM has the device
        listed += (vm_tmp / "full" / f"modules.{group}").read_text().split()
    assert listed and all(p.startswith(f"/lib/modules/{host_kernel.version}/") for p in listed)
    for p in listed:
        data = (vm_tmp / "full" / p.lstrip("/")).read_bytes()
        assert data[:4] == b"\x7fELF", p  # stored decompressed
    with pytest.raises(VMError, match=r"module group\(s\): gpu"):
        guest_initramfs(cache, host_kernel, agent, groups=["gpu"])
    # Another agent gives another archive.
    agent.write_bytes(b"#!/bin/busybox sh\necho hi\n")
    assert guest_initramfs(cache, host_kernel, agent) != out


def test_compressed_modules_stored_decompressed(vm_tmp: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    import isobox.vm.initramfs as ini

    mods = _fake_modules(vm_tmp)
    monkeypatch.setattr(ini, "DEFAULT_MODULES", ("top_mod",))
    monkeypatch.setattr(ini, "OPTIONAL_MODULES", {})
    kernel = GuestKernel("9.9.9-test", vm_tmp / "vmlinux", mods)
    agent = vm_tmp / "agent.sh"
    agent.write_bytes(b"#!/bin/busybox sh\n")
    out = guest_initramfs(vm_tmp / "cache", kernel, agent)
    _extract(out, vm_tmp / "x")
    base = vm_tmp / "x/lib/modules/9.9.9-test/kernel/a"
    assert (base / "mid.ko").read_bytes() == b"MID"
    assert (base / "top-mod.ko").read_bytes() == b"TOP"
    assert (vm_tmp / "x/modules").read_text().split() == [
        f"/lib/modules/9.9.9-test/kernel/a/{n}" for n in ("base.ko", "mid.ko", "top-mod.ko")]


def test_dynamic_agent_refused(host_kernel: GuestKernel, vm_tmp: Path) -> None:
    agent = vm_tmp / "agent"
    agent.write_bytes(Path("/bin/ls").read_bytes())
    with pytest.raises(VMError, match="statically linked"):
        guest_initramfs(vm_tmp / "cache", host_kernel, agent)
    assert not (vm_tmp / "cache").exists()
