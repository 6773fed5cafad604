"""Catalogue cases 37-40 on the archive path (``isobox load``): hostile docker-archives and
OCI archives. Each must fail with an error naming the entry or field, leave no image visible,
write nothing outside the store (a canary directory stays as it was, no host file is read),
and leave nothing behind once ``collect_garbage`` ran."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from harness import RUN_PREFIX
from isobox.errors import ImageError
from isobox.images.archive import load_archive
from isobox.images.store import ImageStore
from isobox.oci import image as oci

Entry = tuple[str, Any]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_tar(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "sym" else tarfile.LNKTYPE
                info.linkname = content[1]
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def layer(name: str = "f", data: bytes = b"data\n") -> bytes:
    return build_tar([(name, data)])


def config(layers: list[bytes], diff_ids: list[str] | None = None) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                       "rootfs": {"type": "layers",
                                  "diff_ids": diff_ids if diff_ids is not None
                                  else [sha(t) for t in layers]}}).encode()


def docker_archive(manifest: list[dict[str, Any]], entries: list[Entry]) -> bytes:
    return build_tar([*entries, ("manifest.json", json.dumps(manifest).encode())])


def good_docker_parts(layers: list[bytes]) -> tuple[list[dict[str, Any]], list[Entry]]:
    cfg = config(layers)
    entries: list[Entry] = [(f"{sha(t)[7:]}.tar", t) for t in layers]
    entries.append((f"{sha(cfg)[7:]}.json", cfg))
    return ([{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": ["hostile:1"],
              "Layers": [f"{sha(t)[7:]}.tar" for t in layers]}], entries)


def oci_parts(layers: list[bytes], *, manifest_override: dict[str, Any] | None = None,
              layer_media: str = oci.OCI_LAYER_GZIP
              ) -> tuple[dict[str, bytes], dict[str, Any], dict[str, Any]]:
    """(blobs by digest, manifest doc, index.json doc)."""
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> dict[str, Any]:
        blobs[sha(data)] = data
        return {"digest": sha(data), "size": len(data)}

    cfg = config(layers)
    manifest = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                "config": {"mediaType": oci.OCI_CONFIG, **put(cfg)},
                "layers": [{"mediaType": layer_media, **put(gzip.compress(t, mtime=0))}
                           for t in layers]}
    manifest.update(manifest_override or {})
    mbytes = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        {"mediaType": oci.OCI_MANIFEST, **put(mbytes),
         "annotations": {"org.opencontainers.image.ref.name": "localhost/hostile:1"}}]}
    return blobs, manifest, index


def oci_archive(blobs: dict[str, bytes], index: dict[str, Any],
                extra: list[Entry] | None = None, skip: tuple[str, ...] = ()) -> bytes:
    entries: list[Entry] = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                            ("index.json", json.dumps(index).encode())]
    entries += [(f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items() if d not in skip]
    return build_tar(entries + (extra or []))


# fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def store() -> Iterator[ImageStore]:
    root = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-sec-store-")
    s = ImageStore(root)
    yield s
    s.close()
    with open("/proc/self/mountinfo") as f:
        leaked = [line for line in f if root in line]
    shutil.rmtree(root, ignore_errors=True)
    assert not leaked, f"mounts leaked: {leaked}"


@pytest.fixture
def canary() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-canary-", dir="/var/tmp")
    with open(os.path.join(d, "secret"), "w") as f:
        f.write("host secret\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _snapshot(path: str) -> dict[str, tuple[int, float]]:
    out = {}
    for base, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(base, n)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime)
    return out


def expect_refused(store: ImageStore, canary: str, data: bytes, match: str) -> ImageError:
    before_canary = _snapshot(canary)
    before_images = [r.id for r in store.images()]
    with pytest.raises(ImageError, match=match) as err:
        load_archive(store, io.BytesIO(data))
    assert [r.id for r in store.images()] == before_images, "an image became visible"
    assert _snapshot(canary) == before_canary, "the canary directory changed"
    assert not os.path.exists("/var/tmp/canary"), "a path escaped the store"
    store.collect_garbage()
    assert os.listdir(store.blobs.blob_dir) == [], "orphan blobs after garbage collection"
    assert os.listdir(store.layer_root) == [], "orphan layers after garbage collection"
    assert os.listdir(store.layer_tmp) == []
    assert [n for n in os.listdir(store.blobs.ingest_dir) if not n.endswith(".lock")] == []
    assert set(os.listdir(store.root)) <= {"blobs", "ingest", "layers", "snapshots",
                                           "isobox.db", "isobox.db-wal", "isobox.db-shm", "gc.lock"}
    return err.value


# case 37: digest, size and diffID verification -------------------------------------------------
def test_37_docker_archive_diff_id_mismatch(store: ImageStore, canary: str) -> None:
    la = layer()
    manifest, entries = good_docker_parts([la])
    cfg = config([la], ["sha256:" + "1" * 64])
    entries = [e for e in entries if not e[0].endswith(".json")] + [(f"{sha(cfg)[7:]}.json",
                                                                       cfg)]
    manifest[0]["Config"] = f"{sha(cfg)[7:]}.json"
    e = expect_refused(store, canary, docker_archive(manifest, entries),
                       "invalid diffID for layer 0: expected sha256:1111")
    assert f"got {sha(la)}" in str(e)


def test_37_docker_archive_layers_length_mismatch(store: ImageStore, canary: str) -> None:
    l1, l2, l3 = layer("a"), layer("b"), layer("c")
    manifest, entries = good_docker_parts([l1, l2])
    entries.append((f"{sha(l3)[7:]}.tar", l3))
    manifest[0]["Layers"].append(f"{sha(l3)[7:]}.tar")
    expect_refused(store, canary, docker_archive(manifest, entries),
                   "invalid manifest, layers length mismatch: expected 2, got 3")


def test_37_oci_blob_bytes_do_not_match_digest(store: ImageStore, canary: str) -> None:
    la = layer()
    blobs, _, index = oci_parts([la])
    layer_digest = next(d for d, b in blobs.items() if b.startswith(b"\x1f\x8b"))
    tampered = dict(blobs)
    tampered[layer_digest] = gzip.compress(layer("f", b"evil\n"), mtime=0)
    expect_refused(store, canary, oci_archive(tampered, index),
                   f"blobs/sha256/{layer_digest[7:]}.*unexpected commit digest")


def test_37_oci_size_disagrees_with_descriptor(store: ImageStore, canary: str) -> None:
    blobs, manifest, index = oci_parts([layer()])
    manifest["layers"][0]["size"] += 1
    mbytes = json.dumps(manifest).encode()
    blobs = {d: b for d, b in blobs.items() if d != index["manifests"][0]["digest"]}
    blobs[sha(mbytes)] = mbytes
    index["manifests"][0].update(digest=sha(mbytes), size=len(mbytes))
    expect_refused(store, canary, oci_archive(blobs, index), "layers\\[0\\].*size")


def test_37_oci_layer_diff_id_mismatch(store: ImageStore, canary: str) -> None:
    la = layer()
    blobs, manifest, index = oci_parts([la])
    cfg = config([la], [sha(layer("other"))])
    old_cfg = manifest["config"]["digest"]
    blobs.pop(old_cfg)
    blobs[sha(cfg)] = cfg
    manifest["config"].update(digest=sha(cfg), size=len(cfg))
    mbytes = json.dumps(manifest).encode()
    blobs.pop(index["manifests"][0]["digest"])
    blobs[sha(mbytes)] = mbytes
    index["manifests"][0].update(digest=sha(mbytes), size=len(mbytes))
    expect_refused(store, canary, oci_archive(blobs, index), "invalid diffID for layer 0")


# case 38: digests and references as path components -------------------------------------------
@pytest.mark.parametrize("digest", [
    "sha256:../../../var/tmp/canary/x",
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "sha256:" + "A" * 64,
    "foo:abc",
])
def test_38_hostile_digests_in_index(store: ImageStore, canary: str, digest: str) -> None:
    blobs, _, index = oci_parts([layer()])
    index["manifests"][0]["digest"] = digest
    expect_refused(store, canary, oci_archive(blobs, index),
                   "index.json.*(digest|algorithm)")


def test_38_hostile_digest_in_manifest_layer(store: ImageStore, canary: str) -> None:
    blobs, manifest, index = oci_parts([layer()])
    manifest["layers"][0]["digest"] = "sha256:../../../../var/tmp/canary/x"
    mbytes = json.dumps(manifest).encode()
    blobs.pop(index["manifests"][0]["digest"])
    blobs[sha(mbytes)] = mbytes
    index["manifests"][0].update(digest=sha(mbytes), size=len(mbytes))
    expect_refused(store, canary, oci_archive(blobs, index), "layers\\[0\\].digest")


@pytest.mark.parametrize("tag", ["evil/../../x:1", "/..:1", "a:b/..", "UPPER:1"])
def test_38_hostile_repo_tags(store: ImageStore, canary: str, tag: str) -> None:
    manifest, entries = good_docker_parts([layer()])
    manifest[0]["RepoTags"] = [tag]
    expect_refused(store, canary, docker_archive(manifest, entries), "RepoTags\\[0\\]")


def test_38_foreign_urls_are_ignored(store: ImageStore) -> None:
    blobs, manifest, index = oci_parts([layer()])
    manifest["layers"][0]["urls"] = ["http://192.0.2.1/evil.tar.gz"]
    mbytes = json.dumps(manifest).encode()
    blobs.pop(index["manifests"][0]["digest"])
    blobs[sha(mbytes)] = mbytes
    index["manifests"][0].update(digest=sha(mbytes), size=len(mbytes))
    [loaded] = load_archive(store, io.BytesIO(oci_archive(blobs, index)))
    assert loaded.names == ["localhost/hostile:1"]  # content came from the archive only


# case 39: media-type confusion -----------------------------------------------------------------
def _replace_manifest(blobs: dict[str, bytes], index: dict[str, Any], doc: dict[str, Any]
                      ) -> None:
    mbytes = json.dumps(doc).encode()
    blobs.pop(index["manifests"][0]["digest"])
    blobs[sha(mbytes)] = mbytes
    index["manifests"][0].update(digest=sha(mbytes), size=len(mbytes))


def test_39_index_served_as_manifest(store: ImageStore, canary: str) -> None:
    blobs, _manifest, index = oci_parts([layer()])
    _replace_manifest(blobs, index, {"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
                                     "manifests": []})
    expect_refused(store, canary, oci_archive(blobs, index),
                   "media-type: (expected manifest but found index|document says)")


def test_39_manifest_with_manifests(store: ImageStore, canary: str) -> None:
    blobs, manifest, index = oci_parts([layer()])
    _replace_manifest(blobs, index, {**manifest, "manifests": []})
    expect_refused(store, canary, oci_archive(blobs, index),
                   "media-type: expected manifest but found index")


def test_39_index_with_layers(store: ImageStore, canary: str) -> None:
    blobs, manifest, index = oci_parts([layer()])
    index["layers"] = manifest["layers"]
    expect_refused(store, canary, oci_archive(blobs, index),
                   "index.json: media-type: expected index but found manifest")


def test_39_schema1(store: ImageStore, canary: str) -> None:
    blobs, _, index = oci_parts([layer()])
    _replace_manifest(blobs, index, {"schemaVersion": 1, "fsLayers": [], "name": "x"})
    expect_refused(store, canary, oci_archive(blobs, index), "schema 1 not supported")


def test_39_missing_media_type_ambiguous(store: ImageStore, canary: str) -> None:
    blobs, manifest, index = oci_parts([layer()])
    doc = {k: v for k, v in manifest.items() if k != "mediaType"}
    doc["manifests"] = []
    _replace_manifest(blobs, index, doc)
    expect_refused(store, canary, oci_archive(blobs, index), "media-type")


def test_39_config_media_type_on_a_layer(store: ImageStore, canary: str) -> None:
    blobs, _, index = oci_parts([layer()], layer_media=oci.OCI_CONFIG)
    expect_refused(store, canary, oci_archive(blobs, index), "unsupported layer media type")


# case 40: paths inside the archive --------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("Config", "../../../etc/shadow"),
    ("Config", "/etc/shadow"),
    ("Layers", ["/etc/shadow"]),
    ("Layers", ["../../../../etc/shadow"]),
    ("Layers", ["a/../../etc/shadow"]),
])
def test_40_manifest_paths_outside(store: ImageStore, canary: str, field: str,
                                   value: Any) -> None:
    manifest, entries = good_docker_parts([layer()])
    manifest[0][field] = value
    expect_refused(store, canary, docker_archive(manifest, entries),
                   f"manifest.json: \\[0\\].{field}.*not inside the archive")


@pytest.mark.parametrize("kind", ["sym", "hard"])
def test_40_layer_member_links_to_host_file(store: ImageStore, canary: str, kind: str) -> None:
    secret = os.path.join(canary, "secret")
    la = build_tar([("f", b"host secret\n")])  # what the layer would be if the link were followed
    manifest, entries = good_docker_parts([la])
    name = f"{sha(la)[7:]}.tar"
    entries = [e for e in entries if e[0] != name] + [(name, (kind, secret))]
    expect_refused(store, canary, docker_archive(manifest, entries),
                   f"Layers\\[0\\]: archive entry '{name}' is a link to '{secret}', outside")


def test_40_relative_link_escaping(store: ImageStore, canary: str) -> None:
    la = layer()
    manifest, entries = good_docker_parts([la])
    name = f"{sha(la)[7:]}.tar"
    entries = [e for e in entries if e[0] != name] + [
        ("v1/layer.tar", ("sym", "../../../../var/tmp/x"))]
    manifest[0]["Layers"] = ["v1/layer.tar"]
    expect_refused(store, canary, docker_archive(manifest, entries), "outside the archive")


def test_40_oci_blob_is_a_symlink_to_host_file(store: ImageStore, canary: str) -> None:
    secret = os.path.join(canary, "secret")
    with open(secret, "rb") as f:
        data = f.read()
    blobs, _, index = oci_parts([layer()])
    cfg_digest = next(d for d, b in blobs.items() if b.startswith(b'{"architecture"'))
    # the config blob's digest is that of the host file: following the link would "verify"
    fake = sha(data)
    manifest_doc = json.loads(blobs[index["manifests"][0]["digest"]])
    manifest_doc["config"].update(digest=fake, size=len(data))
    blobs.pop(cfg_digest)
    _replace_manifest(blobs, index, manifest_doc)
    expect_refused(store, canary, oci_archive(blobs, index, [
        (f"blobs/sha256/{fake[7:]}", ("sym", secret))]), "outside the archive")


def test_40_index_points_outside_blobs(store: ImageStore, canary: str) -> None:
    blobs, _, index = oci_parts([layer()])
    index["manifests"][0]["digest"] = "sha256:../../index.json"
    expect_refused(store, canary, oci_archive(blobs, index), "index.json.*digest")


def test_40_member_names_outside(store: ImageStore, canary: str) -> None:
    manifest, entries = good_docker_parts([layer()])
    entries.append(("../../var/tmp/canary/x", b"escape"))
    expect_refused(store, canary, docker_archive(manifest, entries),
                   "archive entry '../../var/tmp/canary/x': path is not inside")


def test_40_bounded_documents_and_entries(store: ImageStore, canary: str) -> None:
    from isobox.images.archive import ArchiveLimits

    manifest, entries = good_docker_parts([layer()])
    data = docker_archive(manifest, entries + [(f"junk{i}", b"") for i in range(50)])
    with pytest.raises(ImageError, match="more than 20 entries"):
        load_archive(store, io.BytesIO(data), limits=ArchiveLimits(max_entries=20))
    big = build_tar([("manifest.json", b" " * (4 << 20) + b"[]")])
    expect_refused(store, canary, big, "manifest.json.*over the 4194304-byte limit")
    assert store.images() == []


# case 35: decompression bombs and malformed compression ------------------------------------------
def _corrupt(data: bytes, at: int) -> bytes:
    return data[:at] + b"\xff" * 16 + data[at + 16:]


def _compressed(kind: str, data: bytes) -> bytes:
    import bz2
    import lzma

    import zstandard

    return {"gzip": lambda d: gzip.compress(d, mtime=0), "xz": lzma.compress,
            "bz2": bz2.compress, "zstd": zstandard.ZstdCompressor().compress}[kind](data)


@pytest.mark.parametrize("kind", ["gzip", "xz", "bz2", "zstd"])
def test_35_corrupt_compressed_archive_is_a_clean_error(store: ImageStore, canary: str,
                                                         kind: str) -> None:
    """A corrupt xz/bzip2/zstd archive raised LZMAError/OSError/ZstdError (a traceback)."""
    manifest, entries = good_docker_parts([layer()])
    expect_refused(store, canary, _corrupt(_compressed(kind, docker_archive(manifest, entries)),
                                           12), "corrupt compressed")


def test_35_corrupt_gzip_layer_is_a_clean_error(store: ImageStore, canary: str) -> None:
    """A docker-archive layer that is a corrupt gzip raised zlib.error while its diffID was
    computed."""
    tar = layer()
    bad = _corrupt(gzip.compress(tar, mtime=0), 12)
    cfg = config([tar])
    entries: list[Entry] = [("l.tar", bad), ("c.json", cfg)]
    expect_refused(store, canary, docker_archive(
        [{"Config": "c.json", "RepoTags": ["hostile:1"], "Layers": ["l.tar"]}], entries),
        "corrupt compressed")


def test_35_truncated_gzip_archive_is_refused(store: ImageStore, canary: str) -> None:
    """A gzip without its end (CRC and size) was read as if complete."""
    manifest, entries = good_docker_parts([layer()])
    data = gzip.compress(docker_archive(manifest, entries), mtime=0)
    expect_refused(store, canary, data[:-8], "truncated gzip")


def _peak_memory(fn: Any) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_35_gzip_bomb_memory_stays_bounded(store: ImageStore) -> None:
    """256 MiB of zeros behind a valid archive, gzip'd to ~250 KiB, were inflated in one call
    (memory grew with the compression ratio, ~1000x per 1 MiB read)."""
    import zlib

    manifest, entries = good_docker_parts([layer()])
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(docker_archive(manifest, entries))]
    zeros = bytes(1 << 20)
    parts += [comp.compress(zeros) for _ in range(256)]
    parts.append(comp.flush())
    bomb = b"".join(parts)
    assert len(bomb) < 1 << 20
    peak = _peak_memory(lambda: load_archive(store, io.BytesIO(bomb)))
    assert [r.tags for r in store.images()] == [["docker.io/library/hostile:1"]]
    assert peak < 64 << 20, f"peak memory {peak >> 20} MiB"


def test_35_huge_pax_header_is_refused_before_it_is_read(store: ImageStore,
                                                          canary: str) -> None:
    """A 64 MiB pax header (a few hundred KiB gzip'd) was read into memory whole."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"comment": "x" * (64 << 20)}
        tf.addfile(info, io.BytesIO(b""))
    data = gzip.compress(buf.getvalue(), mtime=0)
    box: dict[str, ImageError] = {}

    def attempt() -> None:
        box["err"] = expect_refused(store, canary, data, "header of .* bytes is over the")

    peak = _peak_memory(attempt)
    assert "1048576-byte limit" in str(box["err"])
    assert peak < 32 << 20, f"peak memory {peak >> 20} MiB"
