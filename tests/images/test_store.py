"""The image store for real: verified blobs, atomic visibility, tags, rmi, prune, overlay
snapshots, and layers unpacked once."""

from __future__ import annotations

import os
import threading

import pytest
from store_helpers import layer_tar, put_image, sha

from isobox.errors import ConflictError, NotFoundError, SystemSetupError, VerificationError
from isobox.images.reference import parse_reference
from isobox.images.snapshots import Snapshots
from isobox.images.store import ImageStore


def test_blob_writer_verifies_digest_and_size(store: ImageStore) -> None:
    data = b"hello"
    with pytest.raises(VerificationError, match="unexpected commit digest"):
        store.blobs.put(data, expected=sha(b"other"))
    w = store.blobs.writer(sha(data), size=4)
    with pytest.raises(VerificationError, match="more data than"):
        w.write(data)
    w.abort()
    assert list(store.blobs.digests()) == []
    assert os.listdir(store.blobs.ingest_dir) == []
    assert store.blobs.put(data) == sha(data)
    assert store.blobs.read(sha(data)) == data


def test_resumable_writer_rehashes_the_partial(store: ImageStore) -> None:
    data = os.urandom(300_000)
    w = store.blobs.writer(sha(data), len(data), resumable=True)
    w.write(data[:100_000])
    w.close_keep_partial()
    w = store.blobs.writer(sha(data), len(data), resumable=True)
    assert w.offset == 100_000
    w.write(data[100_000:])
    assert w.commit() == sha(data)


def test_corrupt_blob_in_store_is_detected(store: ImageStore) -> None:
    d = store.blobs.put(b"{}")
    with open(store.blobs.path(d), "wb") as f:
        f.write(b"[]")
    with pytest.raises(VerificationError, match="corrupt"):
        store.blobs.read(d)


def test_commit_image_makes_it_visible_with_unpacked_layers(store: ImageStore) -> None:
    base = layer_tar({"etc/": None, "etc/hostname": b"x\n", "bin/sh": "busybox"})
    top = layer_tar({"etc/motd": b"hi\n"}, whiteouts=("etc/.wh.hostname",))
    _, rec = put_image(store, [base, top], "example.test/app:1")
    assert rec is not None
    assert store.resolve("example.test/app:1").id == rec.id
    assert store.resolve(rec.id[7:19]).id == rec.id
    assert rec.diff_ids == [sha(base), sha(top)]
    upper = store.layer_dir(sha(top))
    with open(os.path.join(upper, "etc/motd")) as f:
        assert f.read() == "hi\n"
    st = os.lstat(os.path.join(upper, "etc/hostname"))  # overlay whiteout: char 0:0
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert rec.size == sum(store.db.layer_sizes().values())


def test_diff_id_mismatch_leaves_no_image_and_prune_cleans(store: ImageStore) -> None:
    good = layer_tar({"a": b"1"})
    mdigest, _ = put_image(store, [good], commit=False,
                           config_extra={"rootfs": {"type": "layers",
                                                    "diff_ids": [sha(b"not the tar")]}})
    with pytest.raises(VerificationError, match="invalid diffID for layer 0"):
        store.commit_image(mdigest, [parse_reference("x/y:z")])
    assert store.images() == []
    assert os.listdir(store.layer_root) == [] and os.listdir(store.layer_tmp) == []
    store.collect_garbage()
    assert list(store.blobs.digests()) == []


def test_layer_count_mismatch_is_refused(store: ImageStore) -> None:
    t = layer_tar({"a": b"1"})
    mdigest, _ = put_image(store, [t], commit=False,
                           config_extra={"rootfs": {"type": "layers",
                                                    "diff_ids": [sha(t), sha(t)]}})
    with pytest.raises(VerificationError, match="layers length mismatch: expected 2, got 1"):
        store.commit_image(mdigest)
    assert store.images() == []


def test_tag_rmi_and_shared_layers(store: ImageStore) -> None:
    shared = layer_tar({"shared": b"s"})
    _, a = put_image(store, [shared], "a:1")
    _, b = put_image(store, [shared, layer_tar({"b": b"b"})], "b:1")
    assert a is not None and b is not None
    store.tag("a:1", "a:2")
    assert set(store.get(a.id).tags) == {"docker.io/library/a:1", "docker.io/library/a:2"}
    with pytest.raises(ConflictError, match="referenced in multiple repositories"):
        store.remove(a.id)
    assert store.remove("a:2") == ["Untagged: a:2"]
    out = store.remove("a:1")
    assert out[-1] == f"Deleted: {a.id}"
    with pytest.raises(NotFoundError):
        store.resolve("a:1")
    assert store.has_layer(sha(shared)), "layer still used by b"
    store.remove("b:1")
    assert os.listdir(store.layer_root) == []
    assert list(store.blobs.digests()) == []


def test_prune_removes_dangling_only_unless_all(store: ImageStore) -> None:
    _, kept = put_image(store, [layer_tar({"k": b"k"})], "kept:1")
    _, dangling = put_image(store, [layer_tar({"d": b"d"})])
    assert kept is not None and dangling is not None
    deleted, freed = store.prune()
    assert deleted == [dangling.id] and freed > 0
    assert [r.id for r in store.images()] == [kept.id]
    deleted, _ = store.prune(all_images=True)
    assert deleted == [kept.id] and store.images() == []
    assert list(store.blobs.digests()) == []


def test_snapshot_overlay_sees_layers_and_blocks_rmi(store: ImageStore) -> None:
    base = layer_tar({"etc/": None, "etc/hostname": b"x\n", "etc/passwd": b"root\n"})
    top = layer_tar({"etc/motd": b"hi\n"}, whiteouts=("etc/.wh.hostname",))
    _, rec = put_image(store, [base, top], "snap:1")
    assert rec is not None
    snaps = Snapshots(store)
    snap = snaps.create("c1", image_id=rec.id)
    try:
        etc = os.path.join(snap.rootfs, "etc")
        assert sorted(os.listdir(etc)) == ["motd", "passwd"]
        with open(os.path.join(etc, "new"), "w") as f:
            f.write("n")
        os.unlink(os.path.join(etc, "passwd"))
        assert os.path.exists(os.path.join(snap.upper, "etc/new"))
        assert not os.path.exists(os.path.join(store.layer_dir(sha(base)), "etc/new"))
        with pytest.raises(ConflictError, match="in use by container c1"):
            store.remove("snap:1")
        assert store.prune(all_images=True)[0] == []
    finally:
        snaps.remove("c1")
    assert not os.path.exists(snap.path)
    store.remove("snap:1")


def test_scratch_snapshot_has_an_empty_root(store: ImageStore) -> None:
    snaps = Snapshots(store)
    snap = snaps.create("scratch1", layers=[], kind="build")
    try:
        assert os.listdir(snap.rootfs) == []
    finally:
        snaps.remove("scratch1")


def test_concurrent_commits_unpack_each_layer_once(store_root: str) -> None:
    first = ImageStore(store_root)
    tar = layer_tar({f"f{i}": os.urandom(2000) for i in range(200)})
    mdigest, _ = put_image(first, [tar], commit=False)
    errors: list[BaseException] = []

    def commit() -> None:
        s = ImageStore(store_root)
        try:
            s.commit_image(mdigest, [parse_reference("race:1")])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=commit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert os.listdir(first.layer_tmp) == []
    assert os.listdir(first.layer_root) == [sha(tar)[7:]]
    assert len(first.images()) == 1
    first.close()


def test_store_directories_are_private(store: ImageStore) -> None:
    for d in (store.root, store.blobs.blob_dir, store.blobs.ingest_dir, store.layer_root,
              store.snapshot_root):
        assert os.stat(d).st_mode & 0o777 == 0o700, d


def test_unpack_of_an_empty_stream_returns(tmp_path: object) -> None:
    """Regression: the reader thread's end-of-stream was awaited twice (the pull hung)."""
    import io

    from isobox.images.unpack import unpack_layer

    result: list[object] = []
    dest = str(tmp_path)
    t = threading.Thread(target=lambda: result.append(unpack_layer(io.BytesIO(b""), dest)),
                         daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "unpack_layer hung on an empty stream"
    assert result and result[0].diff_id == sha(b"")


def test_snapshot_of_many_layers_mounts_and_too_many_is_a_clear_error(store: ImageStore) -> None:
    layers = [layer_tar({f"f{i}": str(i).encode()}) for i in range(60)]
    _, rec = put_image(store, layers[:40], "deep:1")
    assert rec is not None
    snaps = Snapshots(store)
    snap = snaps.create("deep", image_id=rec.id)
    try:
        assert sorted(os.listdir(snap.rootfs)) == sorted(f"f{i}" for i in range(40))
    finally:
        snaps.remove("deep")
    _, too_deep = put_image(store, layers, "deeper:1")
    assert too_deep is not None
    with pytest.raises(SystemSetupError, match="60 layers are more than one overlay mount"):
        snaps.create("deeper", image_id=too_deep.id)
    assert store.db.snapshot("deeper") is None
    assert not os.path.exists(os.path.join(store.snapshot_root, "deeper"))
