"""write_layer → unpack_layer round trips, and overlay whiteouts in both directions on a real
overlayfs mount."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from isobox.images.layertar import write_layer
from isobox.images.unpack import unpack_layer


def _tree(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    """rel path → (kind, mode, uid, gid, content or link target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", 0, st.st_uid, st.st_gid, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, st.st_uid, st.st_gid, "")
            elif p.is_file():
                out[rel] = ("file", st.st_mode & 0o7777, st.st_uid, st.st_gid, p.read_text())
            else:
                out[rel] = ("other", st.st_mode, st.st_uid, st.st_gid, str(st.st_rdev))
    return out


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    (s / "etc").mkdir(parents=True)
    (s / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (s / "bin").mkdir()
    (s / "bin/busybox").write_text("ELF")
    os.chmod(s / "bin/busybox", 0o4755)
    os.symlink("busybox", s / "bin/sh")
    os.symlink("/etc/passwd", s / "abs-link")
    os.link(s / "etc/passwd", s / "etc/passwd.hard")
    (s / "home/app").mkdir(parents=True)
    os.chown(s / "home/app", 1000, 1000)
    os.chmod(s / "home/app", 0o700)
    os.setxattr(s / "bin/busybox", "user.note", b"kept")
    os.mkfifo(s / "fifo")
    return s


def test_round_trip_preserves_the_tree(src: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    blob = write_layer(str(src), buf)
    assert blob.size == len(buf.getvalue())
    dest = tmp_path / "dest"
    dest.mkdir()
    buf.seek(0)
    result = unpack_layer(buf, str(dest))
    assert result.diff_id == blob.diff_id and result.size == blob.uncompressed_size
    assert _tree(dest) == _tree(src)
    assert os.stat(dest / "etc/passwd").st_ino == os.stat(dest / "etc/passwd.hard").st_ino
    assert os.getxattr(dest / "bin/busybox", "user.note") == b"kept"
    mtime = int(os.lstat(src / "bin/busybox").st_mtime)  # tar keeps whole seconds
    assert int(os.lstat(dest / "bin/busybox").st_mtime) == mtime


def test_write_layer_is_deterministic_and_honours_options(src: Path) -> None:
    a, b = io.BytesIO(), io.BytesIO()
    assert write_layer(str(src), a) == write_layer(str(src), b)
    assert a.getvalue() == b.getvalue()
    raw = io.BytesIO()
    write_layer(str(src), raw, compression="none", prefix="app", uid=7, gid=8,
                exclude=lambda rel: rel.startswith("etc"))
    raw.seek(0)
    with tarfile.open(fileobj=raw, mode="r:") as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert "app/bin/busybox" in members and not any("etc" in n for n in members)
    assert {(m.uid, m.gid) for m in members.values()} == {(7, 8)}


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    yield lower, upper, merged
    subprocess.run(["umount", "-l", str(merged)], check=False, capture_output=True)


def _mount(lower: Path, upper: Path, merged: Path) -> None:
    work = upper.parent / "work"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
                   check=True)


def test_overlay_whiteouts_both_directions(overlay: tuple[Path, Path, Path],
                                           tmp_path: Path) -> None:
    lower, upper, merged = overlay
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc/hostname").write_text("x")
    (base / "var/cache").mkdir(parents=True)
    (base / "var/cache/a").write_text("a")
    buf = io.BytesIO()
    write_layer(str(base), buf)
    buf.seek(0)
    unpack_layer(buf, str(lower))
    _mount(lower, upper, merged)
    os.unlink(merged / "etc/hostname")           # → whiteout in upper
    for name in os.listdir(merged / "var/cache"):
        os.unlink(merged / "var/cache" / name)
    os.rmdir(merged / "var/cache")
    os.mkdir(merged / "var/cache")               # → opaque dir in upper
    (merged / "var/cache/b").write_text("b")
    subprocess.run(["umount", str(merged)], check=True)

    diff = io.BytesIO()
    write_layer(str(upper), diff, source="overlay-upper", compression="none")
    diff.seek(0)
    with tarfile.open(fileobj=diff, mode="r:") as tf:
        names = set(tf.getnames())
    assert "etc/.wh.hostname" in names and "var/cache/.wh..wh..opq" in names
    assert "var/cache/b" in names

    # Back into overlay format as a second lower layer: the merged view hides the deletions.
    top = tmp_path / "top"
    top.mkdir()
    diff.seek(0)
    unpack_layer(diff, str(top))
    st = os.lstat(top / "etc/hostname")
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert os.getxattr(top / "var/cache", "trusted.overlay.opaque") == b"y"
    view = tmp_path / "view"
    view.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={top}:{lower}", str(view)], check=True)
    try:
        assert not (view / "etc/hostname").exists()
        assert os.listdir(view / "var/cache") == ["b"]
    finally:
        subprocess.run(["umount", str(view)], check=True)

    # "apply" mode flattens: the whiteouts delete from what is already there.
    flat = tmp_path / "flat"
    flat.mkdir()
    buf.seek(0)
    unpack_layer(buf, str(flat), whiteouts="apply")
    diff.seek(0)
    unpack_layer(diff, str(flat), whiteouts="apply")
    assert not (flat / "etc/hostname").exists()
    assert os.listdir(flat / "var/cache") == ["b"]
