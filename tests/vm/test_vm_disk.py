"""Disks: ext4 images from a directory, qcow2 overlays, and the refusal of user disks that
point at other host files (SECURITY.md cases 55 and 56)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from isobox.vm.disk import check_user_disk, create_overlay, ext4_image_from_dir
from isobox.vm.errors import DiskError


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_ext4_image_holds_the_tree(vm_tmp: Path) -> None:
    src = vm_tmp / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc/hostname").write_text("box\n")
    (src / "big").write_bytes(os.urandom(3 << 20))
    os.symlink("etc/hostname", src / "link")
    os.chown(src / "etc/hostname", 1234, 5678)
    img = vm_tmp / "root.ext4"
    ext4_image_from_dir(src, img, free_mib=32)
    st = os.stat(img)
    assert st.st_mode & 0o777 == 0o600
    assert st.st_blocks * 512 < st.st_size  # sparse
    subprocess.run(["e2fsck", "-fn", str(img)], check=True, capture_output=True)
    cat = subprocess.run(["debugfs", "-R", "cat /etc/hostname", str(img)],
                         capture_output=True, text=True, check=True)
    assert cat.stdout == "box\n"
    stat = subprocess.run(["debugfs", "-R", "stat /etc/hostname", str(img)],
                          capture_output=True, text=True, check=True).stdout
    assert "User:  1234" in stat and "Group:  5678" in stat
    free = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True,
                          check=True).stdout
    blocks = int(next(ln.split(":")[1] for ln in free.splitlines()
                      if ln.startswith("Free blocks:")))
    assert blocks * 4096 >= 32 << 20
    assert sorted(p.name for p in vm_tmp.iterdir()) == ["root.ext4", "src"]


def test_ext4_failure_leaves_nothing(vm_tmp: Path) -> None:
    with pytest.raises(DiskError, match="not a directory"):
        ext4_image_from_dir(vm_tmp / "missing", vm_tmp / "x.ext4")
    assert list(vm_tmp.iterdir()) == []


def test_overlay_has_explicit_backing_format(vm_tmp: Path) -> None:
    base = vm_tmp / "base.raw"
    base.write_bytes(b"\0" * (1 << 20))
    ov = vm_tmp / "ov.qcow2"
    create_overlay(base, "raw", ov, size=4 << 20)
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", str(ov)],
        capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename-format"] == "raw"
    assert info["full-backing-filename"] == str(base)
    assert info["virtual-size"] == 4 << 20
    assert os.stat(ov).st_mode & 0o777 == 0o600
    with pytest.raises(DiskError, match="vmdk"):
        create_overlay(base, "vmdk", vm_tmp / "bad.qcow2")
    assert sorted(p.name for p in vm_tmp.iterdir()) == ["base.raw", "ov.qcow2"]


def test_plain_raw_and_qcow2_accepted(vm_tmp: Path) -> None:
    raw = vm_tmp / "a.raw"
    raw.write_bytes(b"\0" * (1 << 20))
    info = check_user_disk(raw)
    assert (info.format, info.virtual_size) == ("raw", 1 << 20)
    q = vm_tmp / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(q), "64M")
    info = check_user_disk(q)
    assert (info.format, info.virtual_size) == ("qcow2", 64 << 20)
    with pytest.raises(DiskError, match="exceeds the limit"):
        check_user_disk(q, max_virtual_size=32 << 20)


@pytest.fixture
def canary(vm_tmp: Path) -> Path:
    c = vm_tmp / "canary"
    c.write_bytes(b"SECRET" * 1000)
    return c


def _refused(path: Path, match: str) -> None:
    with pytest.raises(DiskError) as e:
        check_user_disk(path)
    assert str(path) in str(e.value) and "refusing" in str(e.value)
    assert match in str(e.value)


def test_raw_named_disk_with_qcow2_backing_header(vm_tmp: Path, canary: Path) -> None:
    evil = vm_tmp / "evil.img"  # case 55: "raw" upload whose sector 0 is a qcow2 header
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(canary), "-F", "raw", str(evil), "1M")
    _refused(evil, "backing/data file")


def test_qcow2_with_data_file(vm_tmp: Path, canary: Path) -> None:
    evil = vm_tmp / "data.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o",
             f"data_file={canary},data_file_raw=on", str(evil), "1M")
    _refused(evil, "backing/data file")


def test_qcow2_with_json_backing_name(vm_tmp: Path, canary: Path) -> None:
    evil = vm_tmp / "json.qcow2"
    name = 'json:{"file":{"driver":"file","filename":"' + str(canary) + '"}}'
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw", str(evil), "1M")
    _refused(evil, "backing/data file")


def test_other_formats_and_special_files(vm_tmp: Path, canary: Path) -> None:
    vmdk = vm_tmp / "a.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(vmdk), "1M")
    _refused(vmdk, "format vmdk is not supported")
    desc = vm_tmp / "desc.vmdk"
    desc.write_text(f'# Disk DescriptorFile\nversion=1\nRW 2048 FLAT "{canary}" 0\n')
    _refused(desc, "format vmdk")
    _refused(vm_tmp, "not a regular file")
    fifo = vm_tmp / "fifo"
    os.mkfifo(fifo)
    _refused(fifo, "not a regular file")
    with pytest.raises(DiskError, match="No such file"):
        check_user_disk(vm_tmp / "missing")


@pytest.mark.parametrize(("offset", "value", "match"), [
    (72, 1 << 7, "incompatible features 0x80 are unknown"),
    (72, 1 << 1, "marked corrupt"),
    (72, 1 << 2, "external data file"),
    (32, 1, "encrypted"),
])
def test_qcow2_header_flags(vm_tmp: Path, offset: int, value: int, match: str) -> None:
    q = vm_tmp / "flags.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(q), "1M")
    with open(q, "r+b") as f:
        f.seek(offset)
        f.write(value.to_bytes(8 if offset == 72 else 4, "big"))
    _refused(q, match)


@pytest.mark.parametrize("length", [0, 72, 103, 105])
def test_qcow2_bad_header_length_cannot_hide_extensions(vm_tmp: Path, length: int) -> None:
    """A v3 header_length below 104 (or misaligned) would make a parser read the fixed header
    as extensions and stop early, past a data-file extension: refused outright."""
    q = vm_tmp / "hdrlen.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(q), "1M")
    with open(q, "r+b") as f:
        f.seek(100)
        f.write(length.to_bytes(4, "big"))
    _refused(q, "header length")
