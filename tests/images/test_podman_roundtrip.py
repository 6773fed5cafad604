"""Round trips with podman, offline: a busybox image made with ``podman import`` is saved by
podman (docker-archive and oci-archive), loaded by isobox, saved by isobox, and loaded by a
second podman; image IDs, diffIDs and file contents must survive. Every podman here runs with
a temporary ``--root``/``--runroot`` (vfs), so the host's podman storage is never touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from harness import RUN_PREFIX, busybox_bundle, mounts_under, unique_id
from isobox.images.store import ImageStore

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed")]

ISOBOX = os.path.join(os.path.dirname(sys.executable), "isobox")


class Podman:
    def __init__(self, base: str, name: str) -> None:
        # podman refuses a runroot longer than 50 characters: keep the names short
        self.args = ["podman", "--root", os.path.join(base, f"{name}r"),
                     "--runroot", os.path.join(base, f"{name}rr"),
                     "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                     "--events-backend", "none"]

    def __call__(self, *args: str) -> str:
        p = subprocess.run([*self.args, *args], capture_output=True, text=True, timeout=180,
                           check=False)
        assert p.returncode == 0, f"podman {' '.join(args)}: {p.stderr}"
        return p.stdout

    def inspect(self, name: str) -> dict[str, object]:
        [doc] = json.loads(self("image", "inspect", name))
        return dict(doc)


def isobox(root: str, *args: str) -> str:
    p = subprocess.run([ISOBOX, "--root", root, *args], capture_output=True, text=True,
                       timeout=180, check=False)
    assert p.returncode == 0, f"isobox {' '.join(args)}: {p.stderr}"
    return p.stdout


@pytest.fixture(scope="module")
def work() -> Iterator[dict[str, str]]:
    base = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-podman-")
    rootfs = os.path.join(base, "rootfs")
    busybox_bundle.make_rootfs(rootfs)
    tar = os.path.join(base, "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs, "--numeric-owner", "-cf", tar, "."], check=True)
    name = f"localhost/{unique_id('bb').lower()}:v1"
    src = Podman(base, "s")
    src("import", "--change", 'CMD ["sh"]', tar, name)
    for fmt in ("docker-archive", "oci-archive"):
        src("save", "--format", fmt, "-o", os.path.join(base, f"podman-{fmt}.tar"), name)
    image_id = "sha256:" + str(src.inspect(name)["Id"])
    yield {"base": base, "rootfs": rootfs, "name": name, "id": image_id}
    leaked = mounts_under(base)
    for line in leaked:
        subprocess.run(["umount", "-l", line.split()[4]], check=False)
    shutil.rmtree(base, ignore_errors=True)
    assert not leaked, f"mounts leaked: {leaked}"


@pytest.mark.parametrize("podman_fmt", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize("isobox_fmt", ["docker-archive", "oci-archive"])
def test_podman_isobox_podman(work: dict[str, str], podman_fmt: str, isobox_fmt: str) -> None:
    base, name = work["base"], work["name"]
    tag = f"{podman_fmt}-{isobox_fmt}"
    root = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-store-", dir=base)
    out = isobox(root, "load", "-i", os.path.join(base, f"podman-{podman_fmt}.tar"))
    assert out == f"Loaded image: {name}\n"
    store = ImageStore(root)
    try:
        rec = store.resolve(name)
        assert rec.id == work["id"]  # the config came through byte for byte
        [diff_id] = rec.diff_ids
        layer = store.layer_dir(diff_id)
        with open(os.path.join(layer, "bin", "busybox"), "rb") as a, \
                open(os.path.join(work["rootfs"], "bin", "busybox"), "rb") as b:
            assert a.read() == b.read()
        assert os.readlink(os.path.join(layer, "bin", "sh")) == "busybox"
        assert os.stat(os.path.join(layer, "tmp")).st_mode & 0o7777 == 0o1777
    finally:
        store.close()
    archive = os.path.join(base, f"isobox-{tag}.tar")
    hub_name = f"{name.split('/')[1].split(':')[0]}:hub"  # docker.io/library/…, short form
    isobox(root, "tag", name, hub_name)
    # an OCI archive carries one name per image (podman loads one index entry only)
    names = [name, hub_name] if isobox_fmt == "docker-archive" else [name]
    isobox(root, "save", "--format", isobox_fmt, "-o", archive, *names)
    dest = Podman(base, f"d{podman_fmt[:3]}{isobox_fmt[:3]}")
    loaded = dest("load", "-i", archive)
    assert name in loaded or work["id"][7:] in loaded
    doc = dest.inspect(name)
    assert "sha256:" + str(doc["Id"]) == work["id"]
    if isobox_fmt == "docker-archive":
        assert dest.inspect(f"docker.io/library/{hub_name}")["Id"] == doc["Id"]
    assert doc["RootFS"] == {"Type": "layers", "Layers": [diff_id]}
    assert dict(doc["Config"]).get("Cmd") == ["sh"]  # type: ignore[call-overload]
    # the files podman unpacked are the ones podman imported
    mnt = dest("image", "mount", name).strip()
    try:
        with open(os.path.join(mnt, "bin", "busybox"), "rb") as a, \
                open(os.path.join(work["rootfs"], "bin", "busybox"), "rb") as b:
            assert a.read() == b.read()
        assert os.readlink(os.path.join(mnt, "bin", "sh")) == "busybox"
    finally:
        dest("image", "unmount", name)
