"""Archives and offline images: docker-archive and OCI archives in and out, ``import`` and
``export``, through the Python API and the CLI."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
from typing import Any

import pytest
import zstandard
from store_helpers import layer_tar, put_image, sha

from isobox.errors import ConfigError, ImageError, InvalidArchiveError, VerificationError
from isobox.images.archive import load_archive, save_images
from isobox.images.reference import parse_reference
from isobox.images.rootfs_import import apply_changes, import_rootfs
from isobox.images.store import ImageStore
from isobox.oci import image as oci

ISOBOX = os.path.join(os.path.dirname(sys.executable), "isobox")
Entry = tuple[str, Any]  # (name, bytes) or (name, ("sym"|"hard", target))


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


def image_config(layers: list[bytes], **extra: Any) -> bytes:
    cfg = {"architecture": "amd64", "os": "linux", "created": "2026-11-26T00:00:00Z",
           "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
           "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layers]},
           "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
    cfg.update(extra)
    return json.dumps(cfg).encode()


def docker_archive(images: list[tuple[list[bytes], list[str]]], *, layout: str = "podman",
                   gzip_layers: bool = False) -> bytes:
    """What ``podman save`` (layout podman), docker < 25 (legacy) or docker ≥ 25 write."""
    entries: list[Entry] = []
    manifest = []
    seen: set[str] = set()
    for layers, tags in images:
        cfg = image_config(layers)
        chex = hashlib.sha256(cfg).hexdigest()
        paths = []
        for tar in layers:
            data = gzip.compress(tar, mtime=0) if gzip_layers else tar
            dhex = hashlib.sha256(data).hexdigest()
            if layout == "docker25":
                path = f"blobs/sha256/{dhex}"
            elif layout == "legacy":
                path = f"{dhex}/layer.tar"
            else:
                path = f"{dhex}.tar"
            if path not in seen:
                entries.append((path, data))
                if layout == "podman":  # the v1 directory with a symlink, as podman writes
                    entries += [(f"v1{dhex[:20]}/layer.tar", ("sym", f"../{dhex}.tar")),
                                (f"v1{dhex[:20]}/VERSION", b"1.0"),
                                (f"v1{dhex[:20]}/json", b"{}")]
                seen.add(path)
            paths.append(path)
        cpath = f"blobs/sha256/{chex}" if layout == "docker25" else f"{chex}.json"
        entries.append((cpath, cfg))
        manifest.append({"Config": cpath, "RepoTags": tags, "Layers": paths})
    entries.append(("manifest.json", json.dumps(manifest).encode()))
    entries.append(("repositories", b"{}"))
    return build_tar(entries)


def oci_archive(layers: list[bytes], annotations: dict[str, str] | None = None, *,
                nested: bool = False, extra_entries: list[Entry] | None = None) -> bytes:
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> dict[str, Any]:
        digest = sha(data)
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    descs = [{"mediaType": oci.OCI_LAYER_GZIP, **put(gzip.compress(t, mtime=0))}
             for t in layers]
    cfg = image_config(layers)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                           "config": {"mediaType": oci.OCI_CONFIG, **put(cfg)},
                           "layers": descs}).encode()
    top = {"mediaType": oci.OCI_MANIFEST, **put(manifest)}
    if nested:
        arm = {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1,
               "platform": {"os": "linux", "architecture": "arm64"}}
        inner = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
            arm, {**top, "platform": {"os": "linux", "architecture": oci.host_platform()
                                      .architecture}}]}).encode()
        top = {"mediaType": oci.OCI_INDEX, **put(inner)}
    if annotations:
        top["annotations"] = annotations
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [top]}
    entries: list[Entry] = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                            ("index.json", json.dumps(index).encode())]
    entries += [(f"blobs/sha256/{d[7:]}", b) for d, b in sorted(blobs.items())]
    return build_tar(entries + (extra_entries or []))


LAYER_A = layer_tar({"bin": None, "bin/hello": b"hello\n", "etc": None,
                     "etc/os-release": b"ID=test\n", "bin/link": "hello"})
LAYER_B = layer_tar({"data": None, "data/x": b"x" * 5000}, whiteouts=("etc/.wh.os-release",))


def load_bytes(store: ImageStore, data: bytes) -> list[Any]:
    return load_archive(store, io.BytesIO(data))


# docker-archive --------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["podman", "legacy", "docker25"])
def test_load_docker_archive_layouts(store: ImageStore, layout: str) -> None:
    data = docker_archive([([LAYER_A, LAYER_B], ["example.com/app:v1", "app:latest"])],
                          layout=layout)
    [loaded] = load_bytes(store, data)
    rec = loaded.record
    assert rec.id == sha(image_config([LAYER_A, LAYER_B]))
    assert rec.diff_ids == [sha(LAYER_A), sha(LAYER_B)]
    assert loaded.names == ["example.com/app:v1", "app:latest"]
    assert store.resolve_id("app") == rec.id
    # uncompressed layers are stored as they are: the blob is the diffID
    assert [la.blob_digest for la in rec.layers] == rec.diff_ids
    assert {la.media_type for la in rec.layers} == {oci.OCI_LAYER}
    with open(os.path.join(store.layer_dir(sha(LAYER_A)), "bin/hello"), "rb") as f:
        assert f.read() == b"hello\n"
    # nothing but the image's blobs is left (v1 json, VERSION, repositories are not stored)
    assert store.collect_garbage() == 0


def test_load_docker_archive_gzip_layers_and_compressed_outer(store: ImageStore) -> None:
    data = docker_archive([([LAYER_A], ["gz:1"])], gzip_layers=True)
    [loaded] = load_bytes(store, zstandard.ZstdCompressor().compress(data))
    assert loaded.record.layers[0].media_type == oci.OCI_LAYER_GZIP
    assert loaded.record.diff_ids == [sha(LAYER_A)]
    [again] = load_bytes(store, gzip.compress(data))
    assert again.record.id == loaded.record.id


def test_load_docker_archive_several_images_shared_layer(store: ImageStore) -> None:
    data = docker_archive([([LAYER_A], ["one:1"]), ([LAYER_A, LAYER_B], ["two:2"]),
                           ([LAYER_B], [])])
    loaded = load_bytes(store, data)
    assert [x.names for x in loaded] == [["one:1"], ["two:2"], []]
    assert len({x.record.id for x in loaded}) == 3
    assert len(store.images()) == 3


def test_load_refuses_non_archives(store: ImageStore) -> None:
    with pytest.raises(InvalidArchiveError, match=r"not a tar archive|corrupt"):
        load_bytes(store, b"this is not a tar" * 100)
    with pytest.raises(InvalidArchiveError, match=r"neither manifest\.json"):
        load_bytes(store, build_tar([("hello", b"x")]))
    with pytest.raises(InvalidArchiveError, match="no image"):
        load_bytes(store, build_tar([("manifest.json", b"[]")]))
    assert store.images() == []


def test_failure_in_second_image_leaves_nothing_visible(store: ImageStore) -> None:
    good = docker_archive([([LAYER_A], ["good:1"])])
    bad_entries: list[Entry] = []
    with tarfile.open(fileobj=io.BytesIO(good)) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m)
            bad_entries.append((m.name, f.read() if f else (("sym", m.linkname))))
    manifest = json.loads(dict(bad_entries)["manifest.json"])
    manifest.append({"Config": manifest[0]["Config"], "RepoTags": ["bad:1"],
                     "Layers": ["missing.tar"]})
    bad_entries = [e for e in bad_entries if e[0] != "manifest.json"]
    bad_entries.append(("manifest.json", json.dumps(manifest).encode()))
    with pytest.raises(ImageError, match=r"layers length mismatch|no such file"):
        load_bytes(store, build_tar(bad_entries))
    assert store.images() == []
    store.collect_garbage()
    assert os.listdir(store.blobs.blob_dir) == []
    assert os.listdir(store.layer_root) == []


# OCI ---------------------------------------------------------------------------------------
def test_load_oci_archive_with_podman_ref_name(store: ImageStore) -> None:
    data = oci_archive([LAYER_A, LAYER_B],
                       {"org.opencontainers.image.ref.name": "localhost/ociapp:v2"})
    [loaded] = load_bytes(store, data)
    assert loaded.names == ["localhost/ociapp:v2"]
    assert loaded.record.layers[0].media_type == oci.OCI_LAYER_GZIP
    assert store.resolve("localhost/ociapp:v2").diff_ids == [sha(LAYER_A), sha(LAYER_B)]


def test_load_oci_archive_containerd_name_and_nested_index(store: ImageStore) -> None:
    data = oci_archive([LAYER_A], {"org.opencontainers.image.ref.name": "3.19",
                                   "io.containerd.image.name": "docker.io/library/alp:3.19"},
                       nested=True)
    [loaded] = load_bytes(store, data)
    assert loaded.names == ["alp:3.19"]
    # a bare tag names nothing
    [anon] = load_bytes(store, oci_archive([LAYER_B], {"org.opencontainers.image.ref.name":
                                                       "latest"}))
    assert anon.refs == ()


# save ------------------------------------------------------------------------------------------
def _files(store: ImageStore, diff_ids: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for d in diff_ids:
        root = store.layer_dir(d)
        for base, _dirs, files in os.walk(root):
            for name in files:
                p = os.path.join(base, name)
                if not os.path.islink(p) and os.path.isfile(p):
                    with open(p, "rb") as f:
                        out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_load_round_trip_is_deterministic(store: ImageStore, tmp_path: Any,
                                               fmt: str) -> None:
    _, rec = put_image(store, [LAYER_A, LAYER_B], "docker.io/library/rt:1")
    put_image(store, [LAYER_A], "rt:small")
    assert rec is not None
    out1, out2 = io.BytesIO(), io.BytesIO()
    save_images(store, ["rt:1", "rt:small"], out1, fmt)
    save_images(store, ["rt:1", "rt:small"], out2, fmt)
    assert out1.getvalue() == out2.getvalue()
    with tarfile.open(fileobj=io.BytesIO(out1.getvalue())) as tf:
        names = tf.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in tf.getmembers())
        if fmt == "docker-archive":
            assert names.count(f"{sha(LAYER_A)[7:]}.tar") == 1  # shared layer written once
            manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
            assert manifest[0]["RepoTags"] == ["docker.io/library/rt:1"]
            assert manifest[0]["Config"] == f"{rec.id[7:]}.json"
            layer = tf.extractfile(manifest[0]["Layers"][1]).read()  # type: ignore[union-attr]
            assert layer == LAYER_B  # decompressed from the stored gzip blob, as docker does
            repos = json.load(tf.extractfile("repositories"))  # type: ignore[arg-type]
            assert repos == {"docker.io/library/rt": {"1": sha(LAYER_B)[7:],
                                                      "small": sha(LAYER_A)[7:]}}
        else:
            index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
            assert index["manifests"][0]["digest"] == rec.manifest_digest
            assert index["manifests"][0]["annotations"][
                "org.opencontainers.image.ref.name"] == "docker.io/library/rt:1"
    other = ImageStore(str(tmp_path / "other"))
    try:
        loaded = load_archive(other, io.BytesIO(out1.getvalue()))
        assert [x.names for x in loaded] == [["rt:1"], ["rt:small"]]
        assert loaded[0].record.id == rec.id
        assert loaded[0].record.diff_ids == rec.diff_ids
        if fmt == "oci-archive":
            assert loaded[0].record.manifest_digest == rec.manifest_digest
        assert _files(other, rec.diff_ids) == _files(store, rec.diff_ids)
    finally:
        other.close()


def test_save_by_id_has_no_tags_and_oci_dir(store: ImageStore, tmp_path: Any) -> None:
    _, rec = put_image(store, [LAYER_A], "byid:1")
    assert rec is not None
    out = io.BytesIO()
    save_images(store, [rec.short_id], out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] is None
        assert "repositories" not in tf.getnames()
    d = str(tmp_path / "layout")
    save_images(store, ["byid:1"], d, "oci-dir")
    assert sorted(os.listdir(d)) == ["blobs", "index.json", "oci-layout"]
    assert os.path.isfile(os.path.join(d, "blobs", "sha256", rec.manifest_digest[7:]))
    with pytest.raises(ConfigError):
        save_images(store, ["byid:1"], io.BytesIO(), "tarball")


def test_save_regenerates_a_layer_without_blob(store: ImageStore, tmp_path: Any) -> None:
    layertar = pytest.importorskip("isobox.images.layertar")
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "built").write_bytes(b"locally built\n")
    blob = io.BytesIO()
    made = layertar.write_layer(str(src), blob, source="overlay-upper", compression="gzip")
    staged = os.path.join(store.layer_tmp, f"unpack-{made.diff_id[7:]}-x")
    subprocess.run(["cp", "-a", str(src), staged], check=True)
    store.add_layer_dir(staged, made.diff_id, made.uncompressed_size)
    from isobox.images.db import LayerRow

    rec = store.create_image({"architecture": "amd64", "os": "linux", "config": {}},
                             [LayerRow(made.diff_id, made.digest, made.size,
                                       oci.OCI_LAYER_GZIP)], [parse_reference("built:1")])
    assert not store.blobs.has(made.digest)
    for fmt in ("docker-archive", "oci-archive"):
        out = io.BytesIO()
        save_images(store, ["built:1"], out, fmt)
        other = ImageStore(str(tmp_path / f"other-{fmt}"))
        try:
            [loaded] = load_archive(other, io.BytesIO(out.getvalue()))
            assert loaded.record.id == rec.id
            with open(os.path.join(other.layer_dir(made.diff_id), "etc/built"), "rb") as f:
                assert f.read() == b"locally built\n"
        finally:
            other.close()


# import ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", ["none", "gzip", "xz", "zstd"])
def test_import_rootfs(store: ImageStore, compress: str) -> None:
    tar = layer_tar({"bin": None, "bin/sh": b"#!fake\n", "etc": None, "etc/passwd": b"root\n"})
    data = {"none": lambda b: b, "gzip": gzip.compress, "xz": lzma.compress,
            "zstd": zstandard.ZstdCompressor().compress}[compress](tar)
    rec = import_rootfs(store, io.BytesIO(data), [parse_reference("imp:1")],
                        changes=['CMD ["sh", "-c", "echo hi"]', "ENV A=1 B=two",
                                 "WORKDIR /srv", "USER nobody", "EXPOSE 80 53/udp",
                                 'LABEL org.x="y z"', "ENTRYPOINT exec app"])
    assert rec.diff_ids == [sha(tar)]
    assert rec.layers[0].media_type == oci.OCI_LAYER_GZIP
    cfg = rec.config.raw
    assert cfg["comment"] == "Imported from -"
    assert cfg["history"] == [{"created": cfg["created"], "comment": "Imported from -"}]
    inner = cfg["config"]
    assert inner["Cmd"] == ["sh", "-c", "echo hi"]
    assert inner["Entrypoint"] == ["/bin/sh", "-c", "exec app"]
    assert inner["Env"] == ["A=1", "B=two"]
    assert inner["WorkingDir"] == "/srv" and inner["User"] == "nobody"
    assert inner["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert inner["Labels"] == {"org.x": "y z"}
    with open(os.path.join(store.layer_dir(sha(tar)), "etc/passwd"), "rb") as f:
        assert f.read() == b"root\n"


def test_import_change_errors_and_bad_tar(store: ImageStore) -> None:
    with pytest.raises(ConfigError, match="unsupported instruction"):
        apply_changes({}, ["RUN rm -rf /"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_changes({}, ["LABEL a=1 b"])
    with pytest.raises((InvalidArchiveError, VerificationError)):
        import_rootfs(store, io.BytesIO(b"\x00garbage" * 1000))
    assert store.images() == []
    store.collect_garbage()
    assert os.listdir(store.blobs.blob_dir) == []


# CLI -------------------------------------------------------------------------------------------
def isobox(root: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([ISOBOX, "--root", root, *args], input=input, capture_output=True,
                          timeout=120, check=False)


def test_cli_load_save_import(store_root: str, tmp_path: Any) -> None:
    data = docker_archive([([LAYER_A], ["cli:1"])])
    p = isobox(store_root, "load", input=data)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "Loaded image: cli:1\n"
    arc = tmp_path / "a.tar"
    arc.write_bytes(oci_archive([LAYER_B]))
    p = isobox(store_root, "load", "-i", str(arc))
    assert p.returncode == 0 and p.stdout.decode().startswith("Loaded image ID: sha256:")
    out = tmp_path / "out.tar"
    p = isobox(store_root, "save", "-o", str(out), "cli:1")
    assert p.returncode == 0, p.stderr
    p2 = isobox(store_root, "save", "cli:1")
    assert p2.returncode == 0 and p2.stdout == out.read_bytes()
    p = isobox(store_root, "save", "--format", "oci-archive", "-o", str(tmp_path / "o.tar"),
               "nosuch:1")
    assert p.returncode == 1 and b"isobox: error: no such image" in p.stderr
    assert not (tmp_path / "o.tar").exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
    tar = layer_tar({"hello": b"imported\n"})
    p = isobox(store_root, "import", "-c", "CMD [\"/hello\"]", "-m", "my msg", "-", "imp:cli",
               input=gzip.compress(tar))
    assert p.returncode == 0, p.stderr
    image_id = p.stdout.decode().strip()
    assert image_id.startswith("sha256:")
    with _open(store_root) as s:
        rec = s.resolve("imp:cli")
        assert rec.id == image_id and rec.config.raw["comment"] == "my msg"
        assert rec.config.config["Cmd"] == ["/hello"]
    p = isobox(store_root, "load", "-i", str(tmp_path / "missing.tar"))
    assert p.returncode == 1 and b"no such file" in p.stderr
    p = isobox(store_root, "load", input=b"garbage" * 100)
    assert p.returncode == 1 and p.stderr.startswith(b"isobox: error:")
    assert b"Traceback" not in p.stderr


class _open:
    def __init__(self, root: str) -> None:
        self.store = ImageStore(root)

    def __enter__(self) -> ImageStore:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def test_cli_export_snapshot(store_root: str, tmp_path: Any) -> None:
    pytest.importorskip("isobox.images.layertar")
    from isobox.images.snapshots import Snapshots

    tar = layer_tar({"etc": None, "etc/base": b"from the image\n", "gone": b"x"})
    with _open(store_root) as s:
        rec = import_rootfs(s, io.BytesIO(tar), [parse_reference("exp:1")])
        snaps = Snapshots(s)
        snap = snaps.create("ibx-export-test", image_id=rec.id)
        try:
            with open(os.path.join(snap.rootfs, "etc", "added"), "w") as f:
                f.write("from the container\n")
            os.unlink(os.path.join(snap.rootfs, "gone"))
            snaps.unmount(snap)  # export mounts it for the time it needs
            p = isobox(store_root, "export", "ibx-export-test")
            assert p.returncode == 0, p.stderr
            with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tf:
                names = {n.lstrip("./") for n in tf.getnames()}
                assert {"etc/base", "etc/added"} <= names and "gone" not in names
                assert not any(".wh." in n for n in names)
            assert not os.path.ismount(snap.rootfs)
            p = isobox(store_root, "export", "-o", str(tmp_path / "e.tar"), "ibx-export-test")
            assert p.returncode == 0 and (tmp_path / "e.tar").stat().st_size > 0
            p = isobox(store_root, "export", "nosuch")
            assert p.returncode == 1 and b"No such container: nosuch" in p.stderr
        finally:
            snaps.remove("ibx-export-test")


def test_import_refuses_truncated_and_corrupt_compression(store: ImageStore) -> None:
    """A gzip tarball cut before its trailer was imported as complete; a corrupt xz one raised
    LZMAError (a traceback instead of an error message)."""
    tar = layer_tar({"etc": None, "etc/hostname": b"box\n"})
    gz = gzip.compress(tar, mtime=0)
    with pytest.raises(InvalidArchiveError, match="truncated gzip"):
        import_rootfs(store, io.BytesIO(gz[:-8]))
    xz = lzma.compress(tar)
    with pytest.raises(InvalidArchiveError, match="corrupt compressed"):
        import_rootfs(store, io.BytesIO(xz[:12] + b"\xff" * 16 + xz[28:]))
    assert store.images() == []
    store.collect_garbage()
    assert os.listdir(store.blobs.blob_dir) == []
    assert [n for n in os.listdir(store.blobs.ingest_dir) if not n.endswith(".lock")] == []
