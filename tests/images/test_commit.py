"""``isobox commit``: a snapshot's changes (modified, added and deleted files) become a layer
of a new image, as ``docker commit`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from harness import RUN_PREFIX, mounts_under
from isobox.images.bootstrap import bootstrap_busybox
from isobox.images.snapshots import Snapshots
from isobox.images.store import ImageStore

ISOBOX = os.path.join(os.path.dirname(sys.executable), "isobox")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay mounts)")


def isobox(root: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([ISOBOX, "--root", root, *args], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture
def busybox_store(store_root: str) -> Iterator[ImageStore]:
    store = ImageStore(store_root)
    bootstrap_busybox(store)
    yield store
    snaps = Snapshots(store)
    for s in snaps.all():
        snaps.remove(s.id)
    store.close()
    assert not mounts_under(store_root)


def test_commit_changed_added_and_deleted_files(busybox_store: ImageStore) -> None:
    store = busybox_store
    snaps = Snapshots(store)
    base = store.resolve("busybox")
    sid = f"{RUN_PREFIX}-commit"
    snap = snaps.create(sid, image_id=base.id)
    with open(os.path.join(snap.rootfs, "etc/passwd"), "a") as f:
        f.write("app:x:1000:1000::/home/app:/bin/sh\n")
    os.unlink(os.path.join(snap.rootfs, "etc/group"))
    os.makedirs(os.path.join(snap.rootfs, "srv/data"))
    with open(os.path.join(snap.rootfs, "srv/data/new.txt"), "w") as f:
        f.write("new\n")
    out = isobox(store.root, "commit", "-c", 'CMD ["cat", "/srv/data/new.txt"]',
                 "-c", "ENV MODE=prod", "-m", "my change", "-a", "Jane <jane@example.com>",
                 sid, "committed:1").stdout.strip()
    rec = store.resolve("committed:1")
    assert out == rec.id
    assert len(rec.layers) == len(base.layers) + 1
    cfg = rec.config.raw
    assert cfg["config"]["Cmd"] == ["cat", "/srv/data/new.txt"]
    assert "MODE=prod" in cfg["config"]["Env"]
    assert cfg["author"] == "Jane <jane@example.com>" and cfg["comment"] == "my change"
    assert len(cfg["history"]) == len(base.config.raw["history"]) + 1
    assert cfg["history"][-1]["comment"] == "my change"
    # the snapshot is still there (commit does not consume it)
    assert store.db.snapshot(sid) is not None
    snaps.remove(sid)

    view = snaps.create(f"{RUN_PREFIX}-view", image_id=rec.id)
    try:
        with open(os.path.join(view.rootfs, "etc/passwd")) as f:
            assert f.read().endswith("app:x:1000:1000::/home/app:/bin/sh\n")
        assert not os.path.lexists(os.path.join(view.rootfs, "etc/group"))  # whiteout
        with open(os.path.join(view.rootfs, "srv/data/new.txt")) as f:
            assert f.read() == "new\n"
        assert os.path.exists(os.path.join(view.rootfs, "bin/busybox"))
    finally:
        snaps.remove(view.id)
    hist = json.loads(isobox(store.root, "image", "history", "--format", "json",
                             "committed:1").stdout)
    assert hist[0]["Id"] == rec.id


def test_commit_without_name_and_errors(busybox_store: ImageStore) -> None:
    store = busybox_store
    snaps = Snapshots(store)
    sid = f"{RUN_PREFIX}-commit2"
    snaps.create(sid, image_id=store.resolve_id("busybox"))
    image_id = isobox(store.root, "commit", sid).stdout.strip()
    assert store.get(image_id).refs == ()
    assert "<none>" in isobox(store.root, "images").stdout
    p = isobox(store.root, "commit", "nosuch", check=False)
    assert p.returncode == 1 and p.stderr == "isobox: error: no such snapshot: nosuch\n"
    p = isobox(store.root, "commit", "-c", "RUN true", sid, check=False)
    assert p.returncode == 1 and "RUN" in p.stderr and "Traceback" not in p.stderr
    p = isobox(store.root, "commit", sid, "Bad Name", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    snaps.remove(sid)
