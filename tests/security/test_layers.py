"""Extracting hostile image layers, catalogue cases 27-36, through ``unpack_layer``.

Each test builds the hostile tar in Python and unpacks it into ``box/dest``; beside it sit
``box/victim`` (a canary directory) and ``box/dest-evil`` (a prefix sibling). After every
test the canaries are unchanged and ``box`` holds nothing else; ``host_guard`` adds the
catalogue's after-every-case checks (host canary in /var/tmp, stray files, mounts)."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import resource
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import zstandard

pytest.register_assert_rewrite("sec_helpers")

from harness import REPO, RUN_PREFIX  # noqa: E402
from isobox.errors import InvalidArchiveError  # noqa: E402
from isobox.images.unpack import ROOT_TYPE_ERROR, UnpackLimits, unpack_layer  # noqa: E402

pytest_plugins = ["sec_helpers"]
pytestmark = pytest.mark.usefixtures("host_guard")

Member = tuple[tarfile.TarInfo, bytes]


# -- hostile tars ---------------------------------------------------------------------------

def f(name: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0) -> Member:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.uid, ti.gid = len(data), mode, uid, gid
    return ti, data


def d(name: str, mode: int = 0o755) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, mode
    return ti, b""


def sym(name: str, target: str) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
    return ti, b""


def hl(name: str, target: str, mode: int = 0o644) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, target, mode
    return ti, b""


def node(name: str, kind: bytes, major: int = 0, minor: int = 0) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.devmajor, ti.devminor, ti.mode = kind, major, minor, 0o666
    return ti, b""


def pax(member: Member, **headers: str) -> Member:
    member[0].pax_headers = dict(headers)
    return member


def tar(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def with_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the sandbox ----------------------------------------------------------------------------

def snapshot(path: str) -> dict[str, tuple[int, int, int, bytes]]:
    """(mode, nlink, size, content or link target) of everything below ``path``."""
    out: dict[str, tuple[int, int, int, bytes]] = {}
    for base, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(base, n)
            st = os.lstat(p)
            body = b""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    body = fh.read()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p).encode()
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_nlink, st.st_size, body)
    return out


@dataclass
class Box:
    root: str

    @property
    def dest(self) -> str:
        return os.path.join(self.root, "dest")

    @property
    def victim(self) -> str:
        return os.path.join(self.root, "victim")

    @property
    def evil(self) -> str:
        return os.path.join(self.root, "dest-evil")

    def at(self, rel: str) -> str:
        return os.path.join(self.dest, rel)

    def unpack(self, data: bytes, **kw: object) -> None:
        unpack_layer(io.BytesIO(data), self.dest, **kw)  # type: ignore[arg-type]


@pytest.fixture
def box() -> Iterator[Box]:
    root = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-layers-", dir="/tmp")
    b = Box(root)
    os.mkdir(b.dest, 0o700)
    os.makedirs(os.path.join(b.victim, "sub"))
    with open(os.path.join(b.victim, "file"), "w") as fh:
        fh.write("victim: must never change\n")
    os.mkdir(b.evil)
    with open(os.path.join(b.evil, "secret"), "w") as fh:
        fh.write("sibling secret\n")
    before = {p: snapshot(p) for p in (b.victim, b.evil)}
    try:
        yield b
        assert sorted(os.listdir(root)) == ["dest", "dest-evil", "victim"], \
            "something was written beside the destination"
        for p, snap in before.items():
            assert snapshot(p) == snap, f"{p} changed"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def both_modes() -> pytest.MarkDecorator:
    return pytest.mark.parametrize("mode", ["overlay", "apply"])


# -- case 27: path traversal in entry names -------------------------------------------------

@pytest.mark.parametrize("name", ["../victim/dotdot", "/../victim/slash-dotdot", "..",
                                  "../../pwned", "a/../../victim/x", "./../victim/file"])
def test_case27_dotdot_names_are_rejected(box: Box, name: str) -> None:
    with pytest.raises(InvalidArchiveError, match=r"'\.\.' in the path") as ei:
        box.unpack(tar(f("ok", b"fine"), f(name, b"pwned")))
    assert repr(name) in str(ei.value)


def test_case27_absolute_names_are_clamped(box: Box) -> None:
    host = f"/etc/cron.d/{RUN_PREFIX}-x"
    box.unpack(tar(f(host, b"* * * * * root id\n"), f("//abs2/y", b"y")))
    assert not os.path.exists(host)
    with open(box.at(host.lstrip("/")), "rb") as fh:
        assert fh.read() == b"* * * * * root id\n"
    assert os.path.isfile(box.at("abs2/y"))


# -- case 28: symlink-then-write inside one layer --------------------------------------------

def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


UNBROKEN = f"unbroken-{RUN_PREFIX}"


@pytest.mark.parametrize("links", [
    pytest.param([sym("localetc", "/etc")], id="SymlinkAbsolute"),
    pytest.param([sym("localetc", "/dummy/../etc")], id="SymlinkUpAndOut"),
    pytest.param([sym("localetc", "../../../../../../etc")], id="SymlinkRelativeUp"),
    pytest.param([sym("loop1", "/etc"), sym("localetc", "/loop1")],
                 id="SymlinkMultipleAbsolute"),
    pytest.param([sym("loop1", "/etc"), sym("localetc", "loop1")],
                 id="SymlinkMultipleRelative"),
])
def test_case28_write_through_symlink_lands_in_root(box: Box, links: list[Member]) -> None:
    box.unpack(tar(d("etc"), *links, f(f"localetc/{UNBROKEN}", b"dont trust me")))
    assert read(box.at(f"etc/{UNBROKEN}")) == b"dont trust me"
    assert not os.path.exists(f"/etc/{UNBROKEN}")
    assert os.readlink(box.at("localetc")) == links[-1][0].linkname  # stored verbatim


def test_case28_symlink_empty_file_replaces_the_link(box: Box) -> None:
    """SymlinkEmptyFile: a file entry over a symlink replaces the link, truncating nothing."""
    box.unpack(tar(d("etc"), f("etc/emptied", b"notempty"), sym("localetc", "/etc/emptied"),
                   sym("hostlink", os.path.join(box.victim, "file")),
                   f("localetc"), f("hostlink")))
    assert read(box.at("etc/emptied")) == b"notempty"
    for name in ("localetc", "hostlink"):
        st = os.lstat(box.at(name))
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0


def test_case28_symlink_override_path(box: Box) -> None:
    """SymlinkOverridePath: ``foo -> /`` mid-archive, then ``foo/tmp/breakout``."""
    name = f"breakout-{RUN_PREFIX}"
    box.unpack(tar(d("tmp"), sym("foo", "/"), f(f"foo/tmp/{name}", b"x")))
    assert read(box.at(f"tmp/{name}")) == b"x"
    assert not os.path.exists(f"/tmp/{name}")


def test_case28_loophole_to_victim(box: Box) -> None:
    box.unpack(tar(d("dir"), sym("dir/loophole", "../../victim"),
                   f("dir/loophole/newdir/newfile", b"x")))
    assert read(box.at("victim/newdir/newfile")) == b"x"


# -- case 29: two-hop chains, prefix siblings, tarfile bypass shapes -----------------------

def test_case29_two_hop_chain(box: Box) -> None:
    box.unpack(tar(d("inner"), sym("inner/go_up", ".."), sym("inner/go_up/escape", "../victim"),
                   f("inner/go_up/escape/newfile", b"x")))
    assert read(box.at("victim/newfile")) == b"x"  # resolved inside the root


@pytest.mark.parametrize("target", ["../dest-evil/secret", "/../dest-evil/secret"])
def test_case29_prefix_sibling_hardlink_is_rejected(box: Box, target: str) -> None:
    with pytest.raises(InvalidArchiveError, match="grab: hardlink target"):
        box.unpack(tar(hl("grab", target)))
    assert not os.path.lexists(box.at("grab"))


def test_case29_prefix_sibling_through_symlink(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match="grab: hardlink target 'evil/secret' not found"):
        box.unpack(tar(sym("evil", "../dest-evil"), hl("grab", "evil/secret")))
    assert not os.path.lexists(box.at("grab"))


def path_max_chain(leaf: Member) -> list[Member]:
    """CVE-2025-4517: symlinks to long directory names, so that the resolved path of
    ``a/b/…/p/lll…`` overflows PATH_MAX and ``os.path.realpath`` gives up, then a link
    climbing out of it and a write through that link."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[Member] = []
    path = ""
    for step in steps:
        members.append(d(os.path.join(path, comp)))
        members.append(sym(os.path.join(path, step), comp))
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append(sym(linkpath, os.path.join(*[".."] * len(steps))))
    members.append(sym("escape", os.path.join(linkpath, "..", "..", "victim")))
    members.append(leaf)
    return members


def test_case29_path_max_chain_write(box: Box) -> None:
    box.unpack(tar(*path_max_chain(f("escape/pwned", b"x"))))
    assert read(box.at("victim/pwned")) == b"x"  # the climb stopped at the root


def test_case29_path_max_chain_hardlink(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match="link: hardlink target 'escape/file' not found"):
        box.unpack(tar(*path_max_chain(hl("link", "escape/file"))))
    assert not os.path.lexists(box.at("link"))


def test_case29_hardlink_to_deeper_symlink(box: Box) -> None:
    """CVE-2026-11940: ``a/b/c/deep -> ../../../victim`` is inside the root from its own
    directory; a hardlink ``top`` to it must not become a link that escapes from the root,
    and neither a write nor a chmod through ``top`` may reach the host."""
    box.unpack(tar(d("a/b/c"), sym("a/b/c/deep", "../../../victim"),
                   hl("top", "a/b/c/deep", mode=0o777), f("top/newfile", b"x")))
    top = os.lstat(box.at("top"))
    assert stat.S_ISLNK(top.st_mode)
    assert os.path.samestat(top, os.lstat(box.at("a/b/c/deep")))  # the link itself
    assert read(box.at("victim/newfile")) == b"x"


# -- case 30: symlinks across layers, replacing the root ------------------------------------

def test_case30_symlink_in_lower_layer(box: Box, canary: str) -> None:
    target = os.path.join(canary, "dir")
    box.unpack(tar(sym("etc", target)), whiteouts="apply")
    box.unpack(tar(f("etc/passwd", b"root::0:0::/:/bin/sh\n")), whiteouts="apply")
    assert not os.path.exists(os.path.join(target, "passwd"))
    assert read(box.at(target.lstrip("/") + "/passwd")).startswith(b"root::")


def test_case30_symlink_override_directory(box: Box) -> None:
    box.unpack(tar(d("etc"), f("etc/passwd", b"inside"), d("localetc")), whiteouts="apply")
    box.unpack(tar(sym("localetc", "/etc"), hl("localpasswd", "/localetc/passwd")),
               whiteouts="apply")
    assert os.path.samefile(box.at("localpasswd"), box.at("etc/passwd"))
    assert os.path.islink(box.at("localetc"))


def test_case30_directory_override_symlink(box: Box) -> None:
    box.unpack(tar(d("etc"), f("etc/passwd", b"inside"), sym("localetc", "/etc"),
                   d("localetc"), hl("localetc/localpasswd", "/etc/passwd")))
    st = os.lstat(box.at("localetc"))
    assert stat.S_ISDIR(st.st_mode)
    assert os.path.samefile(box.at("localetc/localpasswd"), box.at("etc/passwd"))


@pytest.mark.parametrize("entry", [sym(".", "/etc"), sym("/", ".."), sym("./", "/"),
                                   f(".", b"x"), hl("/", "etc")],
                         ids=["dot-symlink", "slash-symlink", "dotslash", "dot-file",
                              "slash-hardlink"])
def test_case30_root_type_change_is_refused(box: Box, entry: Member) -> None:
    with pytest.raises(InvalidArchiveError, match=ROOT_TYPE_ERROR):
        box.unpack(tar(d("etc"), entry))
    assert stat.S_ISDIR(os.lstat(box.dest).st_mode)


# -- case 31: hardlinks out of the root ----------------------------------------------------

def test_case31_hardlink_absolute_resolves_in_root(box: Box) -> None:
    box.unpack(tar(d("etc"), f("etc/passwd", b"inside"), hl("localpasswd", "/etc/passwd")))
    assert os.path.samefile(box.at("localpasswd"), box.at("etc/passwd"))
    assert os.stat("/etc/passwd").st_nlink == 1


@pytest.mark.parametrize("links", [
    pytest.param([sym("localetc", "../../../../../../etc")], id="HardlinkRelative"),
    pytest.param([sym("localetc", "/dummy/../etc")], id="HardlinkDownAndOut"),
    pytest.param([sym("localetc", "/".join([".."] * 16) + "/etc")], id="HardlinkRelativeLong"),
])
def test_case31_hardlink_through_symlinks(box: Box, links: list[Member]) -> None:
    box.unpack(tar(d("etc"), f("etc/passwd", b"inside"), *links,
                   hl("localpasswd", "/localetc/passwd")))
    assert os.path.samefile(box.at("localpasswd"), box.at("etc/passwd"))


def test_case31_hardlink_direct_relative_is_rejected(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match="localpasswd: hardlink target"):
        box.unpack(tar(hl("localpasswd", "../../../../../etc/passwd")))


def test_case31_loophole_victim(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match="loophole-victim: hardlink target"):
        box.unpack(tar(hl("loophole-victim", "../victim"), f("loophole-victim/file", b"x")))


def test_case31_hardlink_to_host_file_missing_in_root(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match=r"grab: hardlink target .* not found"):
        box.unpack(tar(hl("grab", os.path.join(box.victim, "file"))))


def test_case31_hardlink_symlink_chmod(box: Box) -> None:
    """CVE-2021-32760: a hardlink to a symlink pointing at a host 0400 file, with mode 0777:
    the host file keeps 0400."""
    perm400 = os.path.join(box.victim, "perm400")
    outside = os.path.join(box.victim, "also-exists-outside-root")
    try:
        for p, m in ((perm400, 0o400), (outside, 0o640)):
            with open(p, "w") as fh:
                fh.write("...")
            os.chmod(p, m)
        box.unpack(tar(sym(outside, perm400), hl("sketchylink", outside, mode=0o777),
                       f("sketchylink", b"overwrite", mode=0o777)))
        assert stat.S_IMODE(os.stat(perm400).st_mode) == 0o400
        assert stat.S_IMODE(os.stat(outside).st_mode) == 0o640
        assert read(perm400) == b"..." and read(outside) == b"..."
    finally:
        os.unlink(perm400)
        os.unlink(outside)


# -- case 32: devices and FIFOs -------------------------------------------------------------

def test_case32_devices_created_or_skipped(box: Box) -> None:
    layer = tar(node("disk", tarfile.BLKTYPE, 8, 0), node("mem", tarfile.CHRTYPE, 1, 1))
    box.unpack(layer, allow_devices=True)
    assert os.lstat(box.at("disk")).st_rdev == os.makedev(8, 0)
    assert stat.S_ISBLK(os.lstat(box.at("disk")).st_mode)
    assert stat.S_ISCHR(os.lstat(box.at("mem")).st_mode)
    for n in ("disk", "mem"):
        os.unlink(box.at(n))
    box.unpack(layer, allow_devices=False)
    assert os.listdir(box.dest) == []


@pytest.mark.parametrize("major,minor", [(4096, 0), (1, 0x100000), (1 << 40, 1),
                                         (1, 1 << 40)])
def test_case32_bad_device_numbers(box: Box, major: int, minor: int) -> None:
    layer = tar(node("baddev", tarfile.CHRTYPE, major, minor), fmt=tarfile.GNU_FORMAT)
    for allow in (True, False):
        with pytest.raises(InvalidArchiveError, match="baddev: invalid device number"):
            box.unpack(layer, allow_devices=allow)
    assert not os.path.lexists(box.at("baddev"))


def test_case32_fifo_is_never_opened(box: Box) -> None:
    """Unpacked in a child with a timeout: opening the FIFO would hang it."""
    layer = tar(node("fifo", tarfile.FIFOTYPE), node("fifo2", tarfile.FIFOTYPE),
                f("fifo2", b"replaces the fifo"), hl("fifo3", "fifo"))
    code = ("import io,sys; from isobox.images.unpack import unpack_layer; "
            "unpack_layer(io.BytesIO(sys.stdin.buffer.read()), sys.argv[1])")
    proc = subprocess.run([sys.executable, "-c", code, box.dest], input=layer, timeout=30,
                          capture_output=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()
    assert stat.S_ISFIFO(os.lstat(box.at("fifo")).st_mode)
    assert read(box.at("fifo2")) == b"replaces the fifo"
    assert os.path.samefile(box.at("fifo"), box.at("fifo3"))


# -- case 33: setuid, capabilities, overlay and SELinux xattrs -------------------------------

CAP_SYS_ADMIN_EP = struct.pack("<IIIII", 0x02000001, 1 << 21, 0, 0, 0)


def test_case33_setuid_and_capability_kept(box: Box) -> None:
    cap = f("capbin", b"\x7fELF", mode=0o755)
    cap[0].pax_headers = {"SCHILY.xattr.security.capability":
                          CAP_SYS_ADMIN_EP.decode("utf-8", "surrogateescape")}
    box.unpack(tar(f("sh", b"#!", mode=0o4755), f("sgid", b"x", mode=0o2755, uid=1000, gid=50),
                   f("suid-user", b"x", mode=0o4711, uid=1000, gid=1000), cap))
    assert stat.S_IMODE(os.lstat(box.at("sh")).st_mode) == 0o4755
    st = os.lstat(box.at("sgid"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o2755, 1000, 50)
    st = os.lstat(box.at("suid-user"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o4711, 1000)  # chmod after chown
    assert os.getxattr(box.at("capbin"), "security.capability") == CAP_SYS_ADMIN_EP


def test_case33_overlay_and_selinux_xattrs_dropped(box: Box) -> None:
    bad = {"trusted.overlay.opaque": "y", "trusted.overlay.redirect": "/etc",
           "trusted.overlay.metacopy": "", "user.overlay.opaque": "y",
           "security.selinux": "system_u:object_r:shadow_t:s0", "trusted.other": "x"}
    headers = {f"SCHILY.xattr.{k}": v for k, v in bad.items()}
    headers["SCHILY.xattr.user.keep"] = "kept"
    box.unpack(tar(pax(d("dir"), **headers), pax(f("file", b"x"), **headers)))
    for n in ("dir", "file"):
        names = os.listxattr(box.at(n), follow_symlinks=False)
        assert not set(bad) & set(names), names
        assert os.getxattr(box.at(n), "user.keep") == b"kept"


# -- case 34: malformed whiteouts -----------------------------------------------------------

@both_modes()
@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh...", "etc/.wh..", "etc/.wh.",
                                  "etc/.wh..."])
def test_case34_invalid_whiteouts(box: Box, mode: str, name: str) -> None:
    with pytest.raises(InvalidArchiveError, match="invalid whiteout entry") as ei:
        box.unpack(tar(d("etc"), f("etc/keep", b"x"), f(name)), whiteouts=mode)
    assert repr(name) in str(ei.value)


@both_modes()
def test_case34_whiteout_through_symlinked_parent(box: Box, mode: str) -> None:
    victim_file = os.path.join(box.victim, "whitedout")
    inroot = box.at(box.victim.lstrip("/"))
    with open(victim_file, "w") as fh:
        fh.write("host file")
    try:
        box.unpack(tar(d(box.victim), f(f"{box.victim}/whitedout", b"in root"),
                       f(f"{box.victim}/sub/x", b"in root")), whiteouts="apply")
        box.unpack(tar(sym("localetc", box.victim), f("localetc/.wh.whitedout"),
                       f("localetc/sub/.wh..wh..opq")), whiteouts=mode)
        assert read(victim_file) == b"host file"
        assert os.listxattr(box.victim) == [] and os.listxattr(
            os.path.join(box.victim, "sub")) == []
        if mode == "apply":
            assert not os.path.lexists(os.path.join(inroot, "whitedout"))
            assert os.listdir(os.path.join(inroot, "sub")) == []
        else:
            st = os.lstat(os.path.join(inroot, "whitedout"))
            assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
            assert os.getxattr(os.path.join(inroot, "sub"), "trusted.overlay.opaque") == b"y"
    finally:
        os.unlink(victim_file)


def test_case34_dotdot_whiteout_is_rejected(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match=r"'\.\.' in the path"):
        box.unpack(tar(d("etc"), f("dne/../.wh.etc")), whiteouts="apply")


@both_modes()
def test_case34_whiteout_name_as_directory(box: Box, mode: str) -> None:
    box.unpack(tar(d("etc"), f("etc/passwd", b"x"), f(".wh.etc/somefile", b"ordinary")),
               whiteouts=mode)
    assert read(box.at(".wh.etc/somefile")) == b"ordinary"
    assert read(box.at("etc/passwd")) == b"x"


# -- case 35: bombs, quotas and malformed archives ------------------------------------------

def zeros_tar(files: int, size: int, compress: str) -> bytes:
    """A tar of ``files`` files of ``size`` zero bytes (a MiB multiple), compressed without
    holding it in memory."""
    chunk = bytes(1 << 20)
    if compress == "gzip":
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        comp, flush = c.compress, c.flush
    elif compress == "zstd":
        z = zstandard.ZstdCompressor().compressobj()
        comp, flush = z.compress, z.flush
    else:
        x = lzma.LZMACompressor(preset=0)
        comp, flush = x.compress, x.flush
    out = []
    for i in range(files):
        header = tarfile.TarInfo(f"zeros{i}")
        header.size = size
        out.append(comp(header.tobuf(tarfile.PAX_FORMAT)))
        out.extend(comp(chunk) for _ in range(size // len(chunk)))
    out.append(comp(bytes(1024)))
    out.append(flush())
    return b"".join(out)


@pytest.mark.parametrize("compress", ["gzip", "zstd", "xz"])
def test_case35_decompression_bomb_is_bounded(box: Box, compress: str) -> None:
    bomb = zeros_tar(128, 8 << 20, compress)  # 1 GiB, each file within the limit
    assert len(bomb) < 2 << 20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limits = UnpackLimits(max_bytes=16 << 20)
    with pytest.raises(InvalidArchiveError, match=f"limit of {16 << 20} uncompressed bytes"):
        box.unpack(bomb, limits=limits)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown_kib < 96 << 10, f"peak RSS grew by {grown_kib} KiB"
    assert sum(os.path.getsize(box.at(n)) for n in os.listdir(box.dest)) <= 16 << 20


def test_case35_too_many_entries(box: Box) -> None:
    block = tarfile.TarInfo("d/").tobuf(tarfile.PAX_FORMAT)
    n = 100_000
    layer = gzip.compress(block * (n + 5) + bytes(1024))
    with pytest.raises(InvalidArchiveError, match=f"more than {n} entries"):
        box.unpack(layer, limits=UnpackLimits(max_entries=n))


def test_case35_huge_pax_header(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match="exceeds the pax limit"):
        box.unpack(tar(f("ok", b"x"), pax(f("big", b"x"), comment="x" * (2 << 20))))
    assert read(box.at("ok")) == b"x"


def test_case35_pax_header_claiming_a_terabyte(box: Box) -> None:
    """Only the header arrives: the reader refuses before trying to buffer 1 TiB."""
    ti = tarfile.TarInfo("././@PaxHeader")
    ti.type, ti.size = tarfile.XHDTYPE, 1 << 40
    with pytest.raises(InvalidArchiveError, match="exceeds the pax limit"):
        box.unpack(ti.tobuf(tarfile.GNU_FORMAT) + bytes(4096))


def test_case35_negative_size(box: Box) -> None:
    block = bytearray(tarfile.TarInfo("neg").tobuf(tarfile.USTAR_FORMAT))
    block[124:136] = b"\xff" * 12  # base-256: -1
    with pytest.raises(InvalidArchiveError, match="neg: invalid size -1"):
        box.unpack(with_checksum(block) + bytes(1024))


def test_case35_nul_in_name(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match="NUL byte"):
        box.unpack(tar(pax(f("x", b"data"), path="etc/\x00passwd")))


def test_case35_file_larger_than_the_limit(box: Box) -> None:
    with pytest.raises(InvalidArchiveError, match="zeros0: invalid size"):
        box.unpack(zeros_tar(1, 32 << 20, "gzip"), limits=UnpackLimits(max_bytes=16 << 20))


def test_case35_sparse_terabyte(box: Box) -> None:
    member = pax(f("sparse", b""), **{"GNU.sparse.map": "0,0",
                                     "GNU.sparse.size": str(1 << 40)})
    with pytest.raises(InvalidArchiveError, match="sparse"):
        box.unpack(tar(member))


@pytest.mark.parametrize("field", ["uid", "gid"])
def test_case35_huge_ids(box: Box, field: str) -> None:
    with pytest.raises(InvalidArchiveError, match="ids: invalid owner"):
        box.unpack(tar(pax(f("ids", b"x"), **{field: str(1 << 31)})))


def test_case35_xattr_name_of_invalid_length(box: Box) -> None:
    member = pax(f("xa", b"x"), **{"SCHILY.xattr.user." + "n" * 300: "v"})
    with pytest.raises(InvalidArchiveError, match="xa: invalid xattr"):
        box.unpack(tar(member))


def test_case35_corrupt_header_mid_archive(box: Box) -> None:
    """tarfile treats a bad checksum as the end of the archive; unpack_layer does not."""
    good = tar(f("a", b"1"), f("b", b"2"))
    broken = bytearray(good)
    broken[1024 + 148] ^= 0x01  # checksum of the second header
    with pytest.raises(InvalidArchiveError,
                       match=r"invalid tar header at offset 1024 \(after 'a'\)"):
        box.unpack(bytes(broken))


def test_case35_truncated_gzip(box: Box) -> None:
    layer = gzip.compress(tar(f("a", os.urandom(100_000))))
    with pytest.raises(InvalidArchiveError):
        box.unpack(layer[: len(layer) // 2])


# -- case 36: decompression never runs binaries from the tree ------------------------------

FAKE = "#!/bin/sh\necho executed > {marker}\ncat\n"


def test_case36_fake_decompressors_never_run(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = os.path.join(box.dest, "xz-was-executed")
    tools = ("xz", "unxz", "zstd", "unzstd", "gzip", "gunzip", "pigz", "unpigz", "bzip2")
    box.unpack(tar(d("usr/bin"), *(f(f"usr/bin/{t}", FAKE.format(marker=marker).encode(),
                                     mode=0o755) for t in tools)))
    monkeypatch.setenv("PATH", box.at("usr/bin") + ":" + os.environ.get("PATH", ""))

    def no_exec(*a: object, **k: object) -> None:
        raise AssertionError("unpack_layer started a process")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_exec)
    monkeypatch.setattr(os, "posix_spawn", no_exec)
    monkeypatch.setattr(os, "execv", no_exec)
    inner = tar(f("payload", b"in-process"), pax(f("owned", b"x", uid=4321, gid=8765),
                                                 uname="root", gname="root"))
    for i, blob in enumerate((lzma.compress(inner), zstandard.ZstdCompressor().compress(inner),
                              gzip.compress(inner))):
        sub = box.at(f"l{i}")
        os.mkdir(sub)
        res = unpack_layer(io.BytesIO(blob), sub)
        assert res.diff_id == sha(inner)
        assert read(os.path.join(sub, "payload")) == b"in-process"
        st = os.lstat(os.path.join(sub, "owned"))
        assert (st.st_uid, st.st_gid) == (4321, 8765)  # numeric, no NSS lookup of "root"
    assert not os.path.exists(marker)
