"""``isobox image bootstrap``: base images built offline from the host's busybox-static, and
(slow, needs a Debian mirror) from debootstrap."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from harness import RUN_PREFIX
from isobox.images.bootstrap import DEFAULT_MIRROR, bootstrap_busybox, busybox_rootfs_tar
from isobox.images.snapshots import Snapshots
from isobox.images.store import ImageStore

ISOBOX = os.path.join(os.path.dirname(sys.executable), "isobox")


def isobox(root: str, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISOBOX, "--root", root, *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})})


def test_busybox_tar_is_deterministic() -> None:
    assert busybox_rootfs_tar() == busybox_rootfs_tar()


def test_bootstrap_busybox_image(store: ImageStore, tmp_path: Any) -> None:
    rec = bootstrap_busybox(store)
    assert rec.tags == ["docker.io/library/busybox:latest"]
    assert store.resolve_id("busybox") == rec.id
    assert rec.config.config["Cmd"] == ["sh"]
    assert rec.config.raw["created"] == "1970-01-01T00:00:00Z"
    layer = store.layer_dir(rec.diff_ids[0])
    assert os.path.isfile(os.path.join(layer, "bin", "busybox"))
    assert os.readlink(os.path.join(layer, "bin", "sh")) == "/bin/busybox"
    assert os.stat(os.path.join(layer, "tmp")).st_mode & 0o7777 == 0o1777
    for d in ("proc", "sys", "dev"):
        assert os.path.isdir(os.path.join(layer, d))
    with open(os.path.join(layer, "etc", "passwd")) as f:
        users = [line.split(":")[0] for line in f]
    assert users == ["root", "nobody"]
    # the same busybox gives the same image ID in another store
    other = ImageStore(str(tmp_path / "other"))
    try:
        assert bootstrap_busybox(other, "example.com/bb:1").id == rec.id
    finally:
        other.close()
    # and the image works: a shell in a snapshot of it
    snaps = Snapshots(store)
    snap = snaps.create(f"{RUN_PREFIX}-bb", image_id=rec.id)
    try:
        p = subprocess.run(["chroot", snap.rootfs, "/bin/sh", "-c", "echo hi from $(whoami)"],
                           capture_output=True, text=True, timeout=30, check=False)
        assert p.stdout == "hi from root\n", p.stderr
    finally:
        snaps.remove(snap.id)


def test_cli_bootstrap(store_root: str) -> None:
    p = isobox(store_root, "image", "bootstrap", "busybox")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "Tagged busybox:latest"
    p2 = isobox(store_root, "image", "bootstrap", "busybox", "--tag", "mybb:2")
    assert p2.returncode == 0 and p2.stdout.splitlines()[-1] == p.stdout.splitlines()[-1]
    p = isobox(store_root, "image", "bootstrap", "alpine")
    assert p.returncode == 1 and "isobox: error: bootstrap: unknown base 'alpine'" in p.stderr
    p = isobox(store_root, "image", "bootstrap", "debian:hamm")
    assert p.returncode == 1 and "unknown Debian suite 'hamm'" in p.stderr


def _mirror_reachable(mirror: str) -> bool:
    import httpx

    try:
        r = httpx.head(f"{mirror}/dists/bookworm/Release", timeout=5, follow_redirects=True)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


@pytest.mark.slow
def test_bootstrap_debian_bookworm() -> None:
    mirror = os.environ.get("ISOBOX_DEBIAN_MIRROR") or DEFAULT_MIRROR
    if not _mirror_reachable(mirror):
        pytest.skip(f"Debian mirror {mirror} is unreachable (set ISOBOX_DEBIAN_MIRROR)")
    pytest.importorskip("isobox.images.layertar")
    root = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-store-", dir="/var/tmp")
    try:
        p = isobox(root, "image", "bootstrap", "debian:bookworm", "--mirror", mirror,
                   timeout=1800)
        assert p.returncode == 0, p.stderr
        store = ImageStore(root)
        try:
            rec = store.resolve("debian:bookworm")
            assert rec.config.config["Cmd"] == ["bash"]
            layer = store.layer_dir(rec.diff_ids[0])
            with open(os.path.join(layer, "etc", "os-release")) as f:
                assert "bookworm" in f.read()
            assert os.path.isfile(os.path.join(layer, "usr", "bin", "apt-get"))
            assert os.listdir(os.path.join(layer, "dev")) == []
            assert os.listdir(store.layer_tmp) == []
        finally:
            store.close()
        with open("/proc/self/mountinfo") as f:
            assert root not in f.read()
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", root], check=False)
