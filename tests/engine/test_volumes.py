"""Volumes: Docker's local-driver semantics on a real filesystem, and copy-up from an image
that never reads outside the image's root (catalogue case 42)."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest

from isobox.engine.volumes import ANONYMOUS_LABEL, VolumeStore
from isobox.errors import ConfigError, ConflictError, NotFoundError

HOST_ONLY = f"host-secret-{os.getpid()}"


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore(str(tmp_path / "root"))


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    """A file on the host that a hostile image tries to get copied (through /etc-like
    symlinks and '..'): its name and content must never appear in a volume."""
    d = tmp_path / "hostdir"
    d.mkdir()
    f = d / "secret"
    f.write_text(HOST_ONLY)
    return d


@pytest.fixture
def rootfs(tmp_path: Path, host_file: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0:image:/root:/bin/sh\n")
    (r / "etc" / "hostname").write_text("image-host\n")
    app = r / "app"
    (app / "sub" / "deep").mkdir(parents=True)
    (app / "file").write_text("hello")
    os.chmod(app / "file", 0o640)
    os.chown(app / "file", 1234, 5678)
    os.chmod(app / "sub", 0o711)
    os.chown(app / "sub", 42, 43)
    (app / "sub" / "deep" / "x").write_bytes(b"\0" * 70000)
    os.link(app / "file", app / "sub" / "hard")
    (app / "abs-link").symlink_to(str(host_file / "secret"))   # stays a symlink
    (app / "rel-link").symlink_to("file")
    os.mkfifo(app / "fifo", 0o620)
    os.chmod(app, 0o750)
    os.chown(app, 7, 8)
    # hostile image paths (case 42)
    (r / "data").symlink_to("/etc")                       # absolute symlink
    (r / "up").symlink_to("../" * 20 + str(host_file).lstrip("/"))
    (r / "loop").symlink_to("loop")
    (r / "afile").write_text("not a directory")
    return r


def _tree(path: str) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, path)
            if os.path.islink(p):
                out[rel] = "-> " + os.readlink(p)
            elif os.path.isfile(p):
                out[rel] = Path(p).read_bytes().decode("latin-1")
            else:
                out[rel] = "dir" if os.path.isdir(p) else "other"
    return out


def _no_host_content(path: str) -> None:
    for rel, content in _tree(path).items():
        assert "secret" not in rel or content.startswith("-> "), rel
        assert HOST_ONLY not in content, rel


# -- create / get / list / inspect / remove -----------------------------------------------

def test_create_layout_and_inspect(store: VolumeStore) -> None:
    v = store.create("data1", labels={"a": "b"})
    assert v.mountpoint == os.path.join(store.root, "volumes", "data1", "_data")
    assert os.path.isdir(v.mountpoint)
    meta = json.loads(Path(store.root, "volumes", "data1", "meta.json").read_text())
    assert meta["Labels"] == {"a": "b"} and meta["Initialized"] is False
    ins = store.inspect("data1")
    assert set(ins) == {"CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options",
                        "Scope"}
    assert ins["Scope"] == "local" and ins["Driver"] == "local" and ins["Name"] == "data1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ins["CreatedAt"])
    # Docker: an existing name returns the existing volume (labels unchanged)
    again = store.create("data1", labels={"other": "x"})
    assert again.labels == {"a": "b"} and again.created_at == v.created_at
    assert [x.name for x in store.list()] == ["data1"]
    # nothing but the volume (and the lock) in the volumes dir: no temporaries left
    assert sorted(os.listdir(os.path.join(store.root, "volumes"))) == [".lock", "data1"]


def test_anonymous(store: VolumeStore) -> None:
    v = store.create()
    assert re.fullmatch(r"[0-9a-f]{64}", v.name)
    assert v.anonymous and v.labels == {ANONYMOUS_LABEL: ""}


@pytest.mark.parametrize(("name", "message"), [
    ("a", "volume name is too short"),
    ("../etc", "includes invalid characters"),
    ("a/b", "includes invalid characters"),
    (".hidden", "includes invalid characters"),
])
def test_bad_names(store: VolumeStore, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        store.create(name)
    assert sorted(os.listdir(store.dir)) == []


def test_bad_driver_and_options(store: VolumeStore) -> None:
    with pytest.raises(NotFoundError, match='plugin "nfs" not found'):
        store.create("v1", driver="nfs")
    with pytest.raises(ConfigError, match='invalid option: "bogus"'):
        store.create("v1", options={"bogus": "1"})
    with pytest.raises(ConfigError, match='option "type" is not supported'):
        store.create("v1", options={"type": "tmpfs"})
    assert store.list() == []


def test_get_missing_and_traversal(store: VolumeStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="get nope: no such volume"):
        store.get("nope")
    (tmp_path / "root" / "evil").mkdir()
    (tmp_path / "root" / "evil" / "meta.json").write_text("{}")
    with pytest.raises(NotFoundError):
        store.get("../evil")
    with pytest.raises(NotFoundError):
        store.mark_initialized("../evil")
    assert not (tmp_path / "root" / "evil" / "lock").exists()


def test_remove(store: VolumeStore) -> None:
    store.create("v1")
    with pytest.raises(ConflictError) as e:
        store.remove("v1", in_use_by=["abc123", "def456"])
    assert str(e.value) == "remove v1: volume is in use - [abc123 def456]"
    with pytest.raises(ConflictError):
        store.remove("v1", force=True, in_use_by=["abc123"])
    assert store.get("v1")
    store.remove("v1")
    assert store.list() == []
    assert sorted(os.listdir(store.dir)) == [".lock"]
    with pytest.raises(NotFoundError):
        store.remove("v1")
    store.remove("v1", force=True)


def test_prune(store: VolumeStore) -> None:
    keep = store.create("keep")
    named = store.create("named")
    anon = store.create()
    with open(os.path.join(anon.mountpoint, "f"), "wb") as f:
        f.write(b"x" * 1000)
    os.link(os.path.join(anon.mountpoint, "f"), os.path.join(anon.mountpoint, "g"))
    os.symlink("/etc/passwd", os.path.join(anon.mountpoint, "l"))
    names, size = store.prune({"keep"}, anonymous_only=True)
    assert names == [anon.name] and size == 1000 + len("/etc/passwd")
    names, size = store.prune({"keep"})
    assert names == [named.name] and size == 0
    assert [v.name for v in store.list()] == [keep.name]


def test_concurrent_create_same_name(store: VolumeStore) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(store.create("shared", labels={"t": "1"}).created_at)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert sorted(os.listdir(store.dir)) == [".lock", "shared"]


# -- copy-up ------------------------------------------------------------------------------

def test_copy_up_tree(store: VolumeStore, rootfs: Path) -> None:
    v = store.create("app")
    store.copy_up("app", str(rootfs), "/app")
    d = v.mountpoint
    assert Path(d, "file").read_text() == "hello"
    st = os.lstat(os.path.join(d, "file"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert os.lstat(os.path.join(d, "sub", "hard")).st_ino == st.st_ino
    sub = os.lstat(os.path.join(d, "sub"))
    assert (stat.S_IMODE(sub.st_mode), sub.st_uid, sub.st_gid) == (0o711, 42, 43)
    assert os.path.getsize(os.path.join(d, "sub", "deep", "x")) == 70000
    assert os.readlink(os.path.join(d, "rel-link")) == "file"
    assert os.path.islink(os.path.join(d, "abs-link"))      # a symlink, never its target
    assert stat.S_ISFIFO(os.lstat(os.path.join(d, "fifo")).st_mode)
    root = os.lstat(d)                    # the volume root takes the image dir's owner/mode
    assert (stat.S_IMODE(root.st_mode), root.st_uid, root.st_gid) == (0o750, 7, 8)
    assert store.get("app").initialized
    _no_host_content(d)


def test_copy_up_case_42_symlink_to_etc(store: VolumeStore, rootfs: Path,
                                        host_file: Path) -> None:
    """``/data -> /etc`` in the image copies the image's /etc, never the host's."""
    v = store.create("etcvol")
    store.copy_up("etcvol", str(rootfs), "/data")
    assert _tree(v.mountpoint) == {"passwd": "root:x:0:0:image:/root:/bin/sh\n",
                                   "hostname": "image-host\n"}
    host_names = set(os.listdir("/etc")) - {"passwd", "hostname"}
    assert not host_names & set(os.listdir(v.mountpoint))


@pytest.mark.parametrize("path", ["/up", "/.." * 20 + "/x", "../../..",
                                  "/app/../../../../etc"])
def test_copy_up_case_42_traversal(store: VolumeStore, rootfs: Path, host_file: Path,
                                   path: str) -> None:
    """'..' and a relative symlink climbing out stop at the image root: whatever is copied
    comes from the rootfs, and no host file content ever lands in the volume."""
    path = path.replace("x", str(host_file).lstrip("/"))
    v = store.create("trav")
    store.copy_up("trav", str(rootfs), path)
    _no_host_content(v.mountpoint)
    got = _tree(v.mountpoint)
    if path in ("../../..",):
        assert got["etc/hostname"] == "image-host\n"         # the rootfs's root
    if path.endswith("/etc"):
        assert got == {"passwd": "root:x:0:0:image:/root:/bin/sh\n",
                       "hostname": "image-host\n"}
    # the host dir does not exist inside the rootfs: nothing copied for /up
    if path == "/up" or path.endswith(str(host_file)):
        assert got == {}


def test_copy_up_unresolvable_fails_cleanly(store: VolumeStore, rootfs: Path) -> None:
    v = store.create("bad")
    with pytest.raises(ConfigError, match="cannot resolve it inside the image"):
        store.copy_up("bad", str(rootfs), "/loop")
    with pytest.raises(ConfigError, match="not a directory in the image"):
        store.copy_up("bad", str(rootfs), "/afile/x")
    with pytest.raises(ConfigError, match="not a directory in the image"):
        store.copy_up("bad", str(rootfs), "/afile")
    assert os.listdir(v.mountpoint) == []
    assert not store.get("bad").initialized
    store.copy_up("bad", str(rootfs), "/etc")       # still usable afterwards
    assert sorted(os.listdir(v.mountpoint)) == ["hostname", "passwd"]


def test_copy_up_failure_midway_leaves_volume_empty(store: VolumeStore, rootfs: Path) -> None:
    # an unreadable-for-copy entry: a directory we cannot descend into as it is a symlink
    # swapped in between listing and opening is hard to time; a too-deep tree is the same
    # code path (an OSError mid-copy)
    deep = rootfs / "deep"
    p = deep
    for _ in range(260):
        p = p / "d"
    os.makedirs(p)
    v = store.create("deepvol")
    from isobox.errors import SystemSetupError
    with pytest.raises(SystemSetupError, match="nested directories"):
        store.copy_up("deepvol", str(rootfs), "/deep")
    assert os.listdir(v.mountpoint) == []
    assert not store.get("deepvol").initialized


def test_copy_up_only_first_use(store: VolumeStore, rootfs: Path) -> None:
    v = store.create("once")
    store.copy_up("once", str(rootfs), "/etc")
    for n in os.listdir(v.mountpoint):
        os.unlink(os.path.join(v.mountpoint, n))     # the user empties the volume
    store.copy_up("once", str(rootfs), "/etc")
    assert os.listdir(v.mountpoint) == []            # not refilled
    # a non-empty volume is never filled, but its first use is recorded
    w = store.create("full")
    open(os.path.join(w.mountpoint, "mine"), "w").close()
    store.copy_up("full", str(rootfs), "/etc")
    assert os.listdir(w.mountpoint) == ["mine"] and store.get("full").initialized
    # a missing image path copies nothing and is no first use: a later image fills it
    m = store.create("missing")
    store.copy_up("missing", str(rootfs), "/not/there")
    assert os.listdir(m.mountpoint) == [] and not store.get("missing").initialized
    store.copy_up("missing", str(rootfs), "/etc")
    assert os.listdir(m.mountpoint) != [] and store.get("missing").initialized
    # nocopy mounts record first use without copying
    n = store.create("nocopy")
    store.mark_initialized("nocopy")
    store.copy_up("nocopy", str(rootfs), "/etc")
    assert os.listdir(n.mountpoint) == []


def test_copy_up_missing_volume(store: VolumeStore, rootfs: Path) -> None:
    with pytest.raises(NotFoundError):
        store.copy_up("ghost", str(rootfs), "/etc")


def test_crash_debris_swept(store: VolumeStore) -> None:
    """A create or remove killed midway leaves a dot-directory that no one lists; the next
    create (under the lock) removes it."""
    os.makedirs(os.path.join(store.dir, ".new-v1-dead", "_data"))
    os.makedirs(os.path.join(store.dir, ".del-v2-dead", "_data"))
    assert store.list() == []
    store.create("v3")
    assert sorted(os.listdir(store.dir)) == [".lock", "v3"]


def test_copy_up_symlink_swap_race(store: VolumeStore, tmp_path: Path, host_file: Path
                                   ) -> None:
    """CVE-2020-1726/CVE-2023-0778 style: while copy-up runs, a directory in the image is
    swapped for a symlink to a host directory, over and over. Whatever each copy-up does
    (copy, or fail cleanly), no host file content ends up in a volume."""
    from isobox.errors import SystemSetupError

    r = tmp_path / "racefs"
    (r / "vol" / "d").mkdir(parents=True)
    for i in range(20):
        (r / "vol" / "d" / f"f{i}").write_text("image")
    stop = threading.Event()

    def swapper() -> None:
        d, moved, link = r / "vol" / "d", r / "vol" / "d.real", r / "vol" / "d.link"
        while not stop.is_set():
            try:
                os.symlink(str(host_file), link)
                os.rename(d, moved)
                os.rename(link, d)           # d is now a symlink to the host dir
                os.rename(d, link)
                os.rename(moved, d)          # and a directory again
                os.unlink(link)
            except OSError:
                pass

    t = threading.Thread(target=swapper)
    t.start()
    outcomes = {"ok": 0, "failed": 0}
    try:
        for i in range(60):
            name = f"race{i}"
            v = store.create(name)
            try:
                store.copy_up(name, str(r), "/vol")
                outcomes["ok"] += 1
            except (SystemSetupError, ConfigError):
                outcomes["failed"] += 1
                assert os.listdir(v.mountpoint) == []
            _no_host_content(v.mountpoint)
            store.remove(name)
    finally:
        stop.set()
        t.join()
    assert outcomes["ok"] > 0
