"""What an image leaves beside the store and how it goes: a VM root disk built at
`create --isolation vm` (kept while a container uses it, removed by `image prune` /
`system prune` once the image is gone), and `export` of a container by name (no VM boots)."""

from __future__ import annotations

import io
import json
import os
import tarfile

from engine_helpers import Isobox

from harness import unique_id


def _unique_image(isobox: Isobox, tmp: str, tag: str) -> str:
    """busybox's files plus a marker file of this test: an image ID no other test shares."""
    src = unique_id("exp")
    isobox("create", "--name", src, "--network", "none", "busybox", "true")
    try:
        tar = os.path.join(tmp, "rootfs.tar")
        isobox("export", src, "-o", tar)  # by name, as `docker export`
        with tarfile.open(tar, "a") as t:
            data = f"{tag}\n".encode()
            info = tarfile.TarInfo("marker")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        out = isobox("import", tar, tag).stdout.strip()
    finally:
        isobox("rm", src)
    assert out.startswith("sha256:")
    return out


def test_export_takes_a_container_name(isobox: Isobox, tmp_path: os.PathLike[str]) -> None:
    name = unique_id("exn")
    cid = isobox("create", "--name", name, "--network", "none", "busybox", "true").stdout.strip()
    try:
        for ref in (name, cid[:12]):
            r = isobox("export", ref, "-o", os.path.join(tmp_path, "out.tar"))
            assert r.returncode == 0
            with tarfile.open(os.path.join(tmp_path, "out.tar")) as t:
                assert "bin/busybox" in t.getnames()
        bad = isobox("export", "ibx-no-such-container", check=False)
        assert bad.returncode != 0 and "ibx-no-such-container" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        isobox("rm", name)


def test_vm_root_disk_is_pruned_with_its_image(isobox: Isobox,
                                               tmp_path: os.PathLike[str]) -> None:
    tag = f"{unique_id('pr')}:1"
    image_id = _unique_image(isobox, str(tmp_path), tag)
    disk = os.path.join(isobox.root, "vm", "rootfs", image_id.removeprefix("sha256:") + ".ext4")
    vm = unique_id("vmd")
    isobox("create", "--isolation", "vm", "--network", "none", "--name", vm, tag, "true")
    try:
        assert os.path.isfile(disk)  # built by create, without booting anything
        isobox("rmi", "-f", tag)
        isobox("image", "prune")
        assert os.path.isfile(disk), "pruned while a container is made from it"
    finally:
        isobox("rm", "-f", vm)
    r = isobox("image", "prune")
    assert not os.path.exists(disk) and not os.path.exists(disk + ".lock")
    assert "Total reclaimed space: 0B" not in r.stdout
    # the busybox image's own disk is not touched by a prune
    other = unique_id("vmb")
    isobox("create", "--isolation", "vm", "--network", "none", "--name", other, "busybox", "true")
    isobox("rm", other)
    busybox_id = json.loads(isobox("image", "inspect", "busybox").stdout)[0]["Id"]
    assert isobox("image", "inspect", "-f", "{{.Id}}", "busybox").stdout == busybox_id + "\n"
    kept = os.path.join(isobox.root, "vm", "rootfs", busybox_id.removeprefix("sha256:") + ".ext4")
    isobox("system", "prune", "-f")
    assert os.path.isfile(kept)
