"""Interrupted imports and concurrent garbage collection: an import killed at any point
leaves no visible image and nothing that ``image prune`` cannot remove; a prune running
during an import does not delete the import's blobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from store_helpers import layer_tar, put_image
from test_archive import docker_archive

from isobox.images.store import ImageStore

ISOBOX = os.path.join(os.path.dirname(sys.executable), "isobox")


def _store_is_empty(store: ImageStore) -> None:
    assert store.images(include_intermediate=True) == []
    assert list(store.blobs.digests()) == []
    assert os.listdir(store.layer_root) == []
    assert os.listdir(store.layer_tmp) == []
    assert [n for n in os.listdir(store.blobs.ingest_dir) if not n.endswith(".lock")] == []


def test_load_killed_midway_leaves_nothing_prune_cannot_remove(store: ImageStore,
                                                               tmp_path: object) -> None:
    layers = [layer_tar({f"d{i}/f{j}": os.urandom(4096) for j in range(400)}) for i in range(6)]
    archive = os.path.join(str(tmp_path), "big.tar")
    with open(archive, "wb") as f:
        f.write(docker_archive([(layers, ["big:1"])]))
    t0 = time.monotonic()
    subprocess.run([ISOBOX, "--root", store.root, "load", "-i", archive], check=True,
                   capture_output=True)
    full = time.monotonic() - t0
    store.prune(all_images=True)
    _store_is_empty(store)
    interrupted = 0
    for fraction in (0.3, 0.5, 0.7, 0.85):
        p = subprocess.Popen([ISOBOX, "--root", store.root, "load", "-i", archive],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * fraction)
        p.send_signal(signal.SIGKILL)
        p.wait()
        reopened = ImageStore(store.root)
        try:
            visible = reopened.images()
            assert visible == [] or [r.tags for r in visible] == [["docker.io/library/big:1"]]
            if not visible:
                interrupted += 1
            reopened.prune(all_images=True)
            _store_is_empty(reopened)
        finally:
            reopened.close()
    assert interrupted, f"no kill landed inside the load (full load: {full:.2f} s)"


def test_garbage_collection_waits_for_content_being_added(store_root: str) -> None:
    adder = ImageStore(store_root)
    collector = ImageStore(store_root)
    try:
        with adder.adding_content():
            orphan_so_far = adder.blobs.put(b"a layer an import has written, not yet committed")
            done = threading.Event()
            t = threading.Thread(target=lambda: (collector.collect_garbage(), done.set()))
            t.start()
            time.sleep(0.3)
            assert not done.is_set(), "GC ran while an import was adding content"
            assert adder.blobs.has(orphan_so_far)
            put_image(adder, [layer_tar({"x": b"1"})], "kept:1")
        t.join(10)
        assert done.is_set()
        assert [r.tags for r in collector.images()] == [["docker.io/library/kept:1"]]
        assert not adder.blobs.has(orphan_so_far), "the true orphan is collected afterwards"
    finally:
        adder.close()
        collector.close()
