"""``isobox images / image inspect / history / tag / rmi / prune / system df`` as a user runs
them: real subprocesses against a temporary store root."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from store_helpers import layer_tar, put_image

from isobox.images.store import ImageStore

ISOBOX = os.path.join(os.path.dirname(sys.executable), "isobox")


def isobox(root: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([ISOBOX, "--root", root, *args], capture_output=True, text=True,
                       timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_ls_inspect_history_tag_rmi(store: ImageStore) -> None:
    _, rec = put_image(store, [layer_tar({"a": b"1" * 5000}), layer_tar({"b": b"2"})],
                       "demo:1", config_extra={"config": {"Cmd": ["sh"], "Env": ["A=1"]}})
    assert rec is not None
    root = store.root
    out = isobox(root, "images").stdout.splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert out[1].split()[:3] == ["demo", "1", rec.short_id]
    listed = [json.loads(ln) for ln in
              isobox(root, "image", "ls", "--format", "json").stdout.splitlines()]
    assert [(r["ID"], r["Repository"], r["Tag"]) for r in listed] == \
        [(rec.short_id, "demo", "1")]  # docker images' JSON: an object per line and tag
    assert isobox(root, "images", "-q").stdout.split() == [rec.short_id]
    doc = json.loads(isobox(root, "image", "inspect", "demo:1").stdout)[0]
    assert doc["Id"] == rec.id and doc["Config"]["Env"] == ["A=1"]
    assert doc["RootFS"]["Layers"] == rec.diff_ids and doc["Os"] == "linux"
    assert doc["Descriptor"] == {"mediaType": rec.manifest_media_type,
                                 "digest": rec.manifest_digest,
                                 "size": store.blobs.size(rec.manifest_digest)}
    hist = json.loads(isobox(root, "image", "history", "--format", "json", "demo:1").stdout)
    assert [h["CreatedBy"] for h in hist] == ["layer 1", "layer 0"]
    assert hist[0]["Id"] == rec.id and hist[1]["Id"] == "<missing>"
    assert hist[1]["Size"] >= 5000
    isobox(root, "tag", "demo:1", "example.test/demo:2")
    assert isobox(root, "rmi", "example.test/demo:2").stdout == "Untagged: example.test/demo:2\n"
    out = isobox(root, "rmi", "demo:1").stdout.splitlines()
    assert out == ["Untagged: demo:1", f"Deleted: {rec.id}"]
    assert isobox(root, "images", "-q").stdout == ""


def test_errors_are_clear_and_nonzero(store: ImageStore) -> None:
    root = store.root
    p = isobox(root, "image", "inspect", "nosuch:1", check=False)
    assert p.returncode == 1 and p.stderr == "isobox: error: no such image: nosuch:1\n"
    p = isobox(root, "tag", "nosuch", "Bad Name", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    put_image(store, [layer_tar({"a": b"1"})], "x:1")
    p = isobox(root, "tag", "x:1", "UPPER", check=False)
    assert p.returncode == 1 and "target reference" in p.stderr and "UPPER" in p.stderr
    p = isobox(root, "rmi", "x:1", "nosuch", check=False)
    assert p.returncode == 1 and "no such image: nosuch" in p.stderr
    assert "Deleted:" in p.stdout


def test_prune_and_df(store: ImageStore) -> None:
    root = store.root
    put_image(store, [layer_tar({"a": b"1" * 10_000})])
    put_image(store, [layer_tar({"b": b"2"})], "kept:1")
    df = json.loads(isobox(root, "system", "df", "--format", "json").stdout)
    assert df[0]["Type"] == "Images" and df[0]["TotalCount"] == 2
    out = isobox(root, "image", "prune", "-f").stdout
    assert out.startswith("Deleted Images:") and "Total reclaimed space:" in out
    assert len(store.images()) == 1
    isobox(root, "image", "prune", "-a", "-f")
    assert store.images() == []


def test_images_filters_and_reference_argument(store: ImageStore) -> None:
    """``docker images [REPO[:TAG]] [-f ...]``: the list narrowed as dockerd narrows it."""
    root = store.root
    _, app = put_image(store, [layer_tar({"a": b"1"})], "app/web:1",
                       config_extra={"config": {"Labels": {"tier": "front"}}})
    _, dangling = put_image(store, [layer_tar({"b": b"2"})])
    assert app is not None and dangling is not None
    isobox(root, "tag", "app/web:1", "app/web:2")

    def names(*args: str) -> list[str]:
        return isobox(root, "images", *args, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()

    assert sorted(names()) == ["<none>:<none>", "app/web:1", "app/web:2"]
    assert names("app/web:2") == ["app/web:2"]
    assert sorted(names("app/web")) == ["app/web:1", "app/web:2"]
    assert sorted(names("-f", "reference=app/*:1")) == ["app/web:1"]
    assert names("-f", "label=tier=front", "-f", "dangling=false", "app/web:1") == ["app/web:1"]
    assert isobox(root, "images", "-q", "-f", "dangling=true").stdout.split() == \
        [dangling.short_id]
    for bad, word in ((("-f", "colour=red"), "colour"), (("-f", "dangling=maybe"), "maybe"),
                      (("-f", "dangling"), "dangling")):
        p = isobox(root, "images", *bad, check=False)
        assert p.returncode != 0 and word in p.stderr and "Traceback" not in p.stderr


def test_output_to_a_missing_directory_is_a_clear_error(store: ImageStore,
                                                        tmp_path: object) -> None:
    root = store.root
    put_image(store, [layer_tar({"a": b"1"})], "out:1")
    for target, message in ((f"{tmp_path}/missing/x.tar", "no such directory"),
                            (str(tmp_path), "is a directory")):
        p = isobox(root, "save", "-o", target, "out:1", check=False)
        assert p.returncode == 1 and f"--output: {target}: {message}" in p.stderr, p.stderr
    assert os.listdir(str(tmp_path)) == []
    p = isobox(root, "export", "-o", f"{tmp_path}/x.tar", "nosuch-ctr", check=False)
    assert p.returncode == 1 and "No such container: nosuch-ctr" in p.stderr
