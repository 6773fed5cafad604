"""Mount flags: Docker's parsing and error texts, host checks (catalogue cases 22 and 46),
and the OCI mounts they become."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from isobox.engine.mountspec import (
    check_mount,
    oci_mounts,
    parse_mount,
    parse_tmpfs,
    parse_volume,
    ram_in_bytes,
    validate_mounts,
)
from isobox.engine.options import MountSpec
from isobox.errors import ConfigError


def _vp(name: str) -> str:
    return f"/var/lib/isobox/volumes/{name}/_data"


# -- -v -----------------------------------------------------------------------------------

def test_volume_forms() -> None:
    assert parse_volume("/src:/dst") == MountSpec("bind", "/dst", "/src")
    assert parse_volume("/src:/dst:ro,rslave,Z") == MountSpec(
        "bind", "/dst", "/src", read_only=True, options=("rslave", "Z"))
    assert parse_volume("data:/var/lib/x:ro,nocopy") == MountSpec(
        "volume", "/var/lib/x", "data", read_only=True, volume_nocopy=True)
    assert parse_volume("/anon") == MountSpec("volume", "/anon")
    assert parse_volume("/src/../src2/:/a/./b/") == MountSpec("bind", "/a/b", "/src2")
    for consistency in ("cached", "delegated", "consistent"):  # Docker Desktop's, ignored
        assert parse_volume(f"/src:/dst:{consistency}") == MountSpec("bind", "/dst", "/src")
        assert parse_volume(f"v1:/dst:ro,{consistency}") == MountSpec(
            "volume", "/dst", "v1", read_only=True)
        assert parse_mount(f"type=bind,src=/src,dst=/dst,consistency={consistency}") == \
            MountSpec("bind", "/dst", "/src")


@pytest.mark.parametrize(("text", "message"), [
    ("", "invalid volume specification: ''"),
    (":/x", "invalid volume specification: ':/x'"),
    ("/foo:rw", "invalid volume specification: '/foo:rw'"),
    ("/a:/b:ro:x", "invalid volume specification: '/a:/b:ro:x'"),
    ("/a:/b:ro,rw", "invalid mode: ro,rw"),
    ("/a:/b:bogus", "invalid mode: bogus"),
    ("/a:/b:cached,delegated", "invalid mode: cached,delegated"),
    ("/a:/", "invalid specification: destination can't be '/'"),
    ("/a:/x/..", "invalid specification: destination can't be '/'"),
    ("relative", "invalid mount config for type \"volume\": invalid mount path: 'relative' "
                 "mount path must be absolute"),
    ("vol:rel/path", "invalid mount config for type \"volume\": invalid mount path: "
                     "'rel/path' mount path must be absolute"),
    ("/a:/a/../../b", "leaves the container's root"),
    ("x:/d", "volume name is too short"),
    ("bad name:/d", 'includes invalid characters for a local volume name'),
    ("/a:/b:nocopy", 'invalid mount config for type "bind": field VolumeOptions'),
    ("/anon:ro", "invalid volume specification: '/anon:ro'"),
])
def test_volume_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_volume(text)
    assert message in str(e.value)


def test_volume_error_is_dockers_exact_text() -> None:
    with pytest.raises(ConfigError) as e:
        parse_volume("/a:/")
    assert str(e.value) == ('invalid mount config for type "bind": invalid specification: '
                            "destination can't be '/'")


# -- --mount ------------------------------------------------------------------------------

def test_mount_forms() -> None:
    assert parse_mount("type=bind,source=/s,target=/t,readonly,bind-propagation=rshared") == \
        MountSpec("bind", "/t", "/s", read_only=True, options=("rshared",))
    assert parse_mount("type=volume,src=v1,dst=/t,volume-nocopy") == MountSpec(
        "volume", "/t", "v1", volume_nocopy=True)
    assert parse_mount("src=v1,destination=/t,ro=false") == MountSpec("volume", "/t", "v1")
    assert parse_mount("type=tmpfs,dst=/run,tmpfs-size=64m,tmpfs-mode=1770") == MountSpec(
        "tmpfs", "/run", options=(f"size={64 << 20}", "mode=1770"))
    assert parse_mount('type=bind,"src=/a,b",dst=/t').source == "/a,b"
    assert parse_mount("Type=BIND,Source=/s,Target=/t").type == "bind"


@pytest.mark.parametrize(("text", "message"), [
    ("type=bind,src=/s,dst=/t,bogus", "invalid field 'bogus' must be a key=value pair"),
    ("type=bind,src=/s,dst=/t,color=red", "unexpected key 'color' in 'color=red'"),
    ("type=bind,src=/s,dst=/t,consistency=weird", "invalid value for consistency: weird"),
    ("type=bind,src=/s", "target is required"),
    ("type=bind,dst=/t", 'invalid mount config for type "bind": field Source must not be '
                         "empty"),
    ("type=bind,src=rel,dst=/t", "invalid mount path: 'rel' mount path must be absolute"),
    ("type=bind,src=/s,dst=/t,readonly=maybe", "invalid value for readonly: maybe"),
    ("type=bind,src=/s,dst=/t,bind-propagation=sideways", "invalid propagation mode: "
                                                          "sideways"),
    ("type=volume,src=v1,dst=/t,bind-propagation=rslave",
     "cannot mix 'bind-*' options with mount type 'volume'"),
    ("type=bind,src=/s,dst=/t,volume-nocopy", "cannot mix 'volume-*' options with mount "
                                              "type 'bind'"),
    ("type=bind,src=/s,dst=/t,tmpfs-size=1m", "cannot mix 'tmpfs-*' options"),
    ("type=tmpfs,dst=/t,tmpfs-size=lots", "invalid value for tmpfs-size: lots"),
    ("type=tmpfs,dst=/t,tmpfs-mode=999", "invalid value for tmpfs-mode: 999"),
    ("type=tmpfs,src=/x,dst=/t", 'invalid mount config for type "tmpfs": field Source must '
                                 "not be specified"),
    ("type=volume,dst=/t,readonly", "must not set ReadOnly mode when using anonymous "
                                    "volumes"),
    ("type=npipe,src=/s,dst=/t", 'invalid mount config for type "npipe": mount type '
                                 "unknown"),
    ("type=bind,src=/s,dst=/", "destination can't be '/'"),
])
def test_mount_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_mount(text)
    assert message in str(e.value)


# -- --tmpfs ------------------------------------------------------------------------------

def test_tmpfs() -> None:
    assert parse_tmpfs("/run:rw,size=64m,mode=1777") == MountSpec(
        "tmpfs", "/run", options=(f"size={64 << 20}", "mode=1777"))
    assert parse_tmpfs("/t:ro,exec") == MountSpec("tmpfs", "/t", read_only=True,
                                                  options=("exec",))
    assert parse_tmpfs("/t") == MountSpec("tmpfs", "/t")
    assert parse_tmpfs("/t:size=50%,nr_inodes=1k,uid=1000").options == (
        "size=50%", "nr_inodes=1k", "uid=1000")
    for bad, msg in (("/t:size=huge", 'invalid tmpfs option "size=huge"'),
                     ("/t:foo", 'invalid tmpfs option "foo"'),
                     ("/t:mode=8", 'invalid tmpfs option "mode=8"'),
                     ("/t:uid=root", 'invalid tmpfs option "uid=root"'),
                     ("/t:size=50%%", 'invalid tmpfs option'),
                     ("rel", "mount path must be absolute"),
                     ("/:size=1m", "destination can't be '/'")):
        with pytest.raises(ConfigError, match=msg):
            parse_tmpfs(bad)


def test_ram_in_bytes() -> None:
    assert ram_in_bytes("512") == 512
    assert ram_in_bytes("1k") == 1024
    assert ram_in_bytes("10MiB") == 10 << 20
    assert ram_in_bytes("1.5g") == 3 << 29
    with pytest.raises(ValueError):
        ram_in_bytes("10x")


# -- validate_mounts ----------------------------------------------------------------------

def test_validate_accepts_and_normalises(tmp_path: Path) -> None:
    validate_mounts([parse_volume(f"{tmp_path}:/data"), parse_tmpfs("/run"),
                     parse_volume("v1:/v")], data_root="/var/lib/isobox-none")


def test_duplicate_targets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Duplicate mount point: /data"):
        validate_mounts([parse_volume(f"{tmp_path}:/data"), parse_tmpfs("/data/")],
                        data_root="/nonexistent")


@pytest.mark.parametrize(("target", "message"), [
    ("/proc", '"/proc" cannot be mounted because it is not of type proc'),
    ("/proc/sys", '"/proc/sys" cannot be mounted because it is inside /proc'),
    ("/proc//sys", '"/proc/sys" cannot be mounted because it is inside /proc'),
    ("/proc/self/attr", "inside /proc"),
    ("/x/../proc/sys/kernel", '"/proc/sys/kernel" cannot be mounted because it is inside '
                              "/proc"),
    ("/sys/kernel", '"/sys/kernel" cannot be mounted because it is inside /sys'),
])
def test_kernel_filesystems_refused(tmp_path: Path, target: str, message: str) -> None:
    """Case 22 (every mount type) — the check runs on the normalised target."""
    for spec in (MountSpec("bind", target, str(tmp_path)), MountSpec("tmpfs", target),
                 MountSpec("volume", target, "v1")):
        with pytest.raises(ConfigError) as e:
            validate_mounts([spec], data_root="/nonexistent")
        assert message in str(e.value)


def test_lxcfs_file_binds_allowed(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal: 1 kB\n")
    validate_mounts([MountSpec("bind", "/proc/meminfo", str(f))], data_root="/nonexistent")
    with pytest.raises(ConfigError, match="inside /proc"):
        validate_mounts([MountSpec("tmpfs", "/proc/meminfo")], data_root="/nonexistent")


def test_api_binds_case_46(tmp_path: Path) -> None:
    """Binds from the API: a missing source fails without a mkdir on the host; bad
    destinations fail with moby's messages."""
    missing = tmp_path / "nonexistent" / "x"
    with pytest.raises(ConfigError) as e:
        validate_mounts([parse_volume(f"{missing}:/data")], data_root="/nonexistent")
    assert str(e.value) == (f'invalid mount config for type "bind": bind source path does not '
                            f"exist: {missing}")
    assert not (tmp_path / "nonexistent").exists()
    for dest, msg in (("/", "destination can't be '/'"),
                      ("relative/path", "mount path must be absolute"),
                      ("/a/../../b", "leaves the container's root"),
                      ("/proc/sys", "inside /proc")):
        with pytest.raises(ConfigError, match=msg):
            validate_mounts([MountSpec("bind", dest, str(tmp_path))],
                            data_root="/nonexistent")


def test_source_in_data_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "containers").mkdir(parents=True)
    inside = str(root / "containers")
    for spec in (MountSpec("bind", "/x", inside, options=("rprivate",)),
                 MountSpec("bind", "/x", "/", options=("private",)),   # root contains it
                 MountSpec("bind", "/x", str(root), options=("shared",))):
        with pytest.raises(ConfigError) as e:
            validate_mounts([spec], data_root=str(root))
        assert 'must use either propagation mode "rslave" or "rshared"' in str(e.value)
    # through a symlink too
    link = tmp_path / "link"
    link.symlink_to(root)
    with pytest.raises(ConfigError, match="rslave"):
        validate_mounts([MountSpec("bind", "/x", str(link), options=("private",))],
                        data_root=str(root))
    for ok in ("rslave", "rshared"):
        validate_mounts([MountSpec("bind", "/x", inside, options=(ok,))], data_root=str(root))
    # none given: allowed, and oci_mounts applies rslave (moby's rule)
    spec = MountSpec("bind", "/x", inside)
    validate_mounts([spec], data_root=str(root))
    assert oci_mounts([spec], volume_path=_vp, data_root=str(root))[0]["options"] == [
        "rbind", "rw", "rslave"]
    # a sibling with the same prefix is not inside
    sib = tmp_path / "root2"
    sib.mkdir()
    validate_mounts([MountSpec("bind", "/x", str(sib), options=("private",))],
                    data_root=str(root))


def test_socket_source_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "s.sock")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(path)
        validate_mounts([MountSpec("bind", "/run/x.sock", path)], data_root="/nonexistent")
    finally:
        s.close()
        os.unlink(path)
    assert any("socket" in r.getMessage() for r in caplog.records)


# -- oci_mounts ---------------------------------------------------------------------------

def test_oci_mounts_shapes_and_order() -> None:
    specs = [parse_volume("/h/a:/data/sub/deeper:ro"), parse_tmpfs("/data/sub:size=1m"),
             parse_volume("v1:/data"), parse_mount("type=bind,src=/h,dst=/z,"
                                                   "bind-propagation=rshared"),
             parse_tmpfs("/t:exec,mode=755")]
    out = oci_mounts(specs, volume_path=_vp)
    assert [m["destination"] for m in out] == ["/data", "/z", "/t", "/data/sub",
                                               "/data/sub/deeper"]
    by = {m["destination"]: m for m in out}
    assert by["/data"] == {"destination": "/data", "type": "bind", "source": _vp("v1"),
                           "options": ["rbind", "rw", "rprivate"]}
    assert by["/data/sub/deeper"]["options"] == ["rbind", "ro", "rprivate"]
    assert by["/z"]["options"] == ["rbind", "rw", "rshared"]
    assert by["/data/sub"] == {"destination": "/data/sub", "type": "tmpfs",
                               "source": "tmpfs",
                               "options": ["nosuid", "nodev", "noexec", f"size={1 << 20}",
                                           "rw"]}
    assert by["/t"]["options"] == ["nosuid", "nodev", "exec", "mode=755", "rw"]


def test_oci_mounts_anonymous_volume_must_be_named() -> None:
    with pytest.raises(ConfigError, match="anonymous volume for /anon was not created"):
        oci_mounts([parse_volume("/anon")], volume_path=_vp)


def test_image_volume_targets_case_42() -> None:
    """An image's ``Volumes`` key climbing out with '..' is refused before any copy-up."""
    with pytest.raises(ConfigError, match="leaves the container's root"):
        check_mount(MountSpec("volume", "/../../../../var/tmp/canary"))
    assert check_mount(MountSpec("volume", "/data/./x/../y")).target == "/data/y"
