"""``isobox save``: images as a docker-archive, an oci-archive or an OCI layout directory.

* docker-archive, as ``podman save``/``docker save`` write it (``podman load`` and ``docker
  load`` read it): ``manifest.json``, ``repositories``, the config as ``<id-hex>.json`` and each
  layer uncompressed as ``<diffid-hex>.tar`` (stored gzip/zstd blobs are decompressed and
  checked against their diffID);
* oci-archive / oci-dir: ``oci-layout``, ``index.json`` (one entry per image, named by the
  first reference given for it in ``org.opencontainers.image.ref.name`` (full name, as podman
  writes it) and ``io.containerd.image.name``) and the blobs as stored.

Output is deterministic: fixed order, mtime 0, uid/gid 0, fixed modes. A layer whose blob is not
in the store (built locally) is regenerated from its unpacked directory with
``layertar.write_layer``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, cast

from isobox.errors import ConfigError, ConflictError, NotFoundError, VerificationError
from isobox.images.archive.load import CHUNK, open_decompressed
from isobox.images.archive.oci_layout import CONTAINERD_NAME, LAYOUT_VERSION, REF_NAME
from isobox.images.db import LayerRow
from isobox.images.reference import Reference, parse_reference
from isobox.images.store import ImageRecord, ImageStore
from isobox.oci import image as oci
from isobox.oci.digest import hex_of

if TYPE_CHECKING:
    from isobox.images.layertar import LayerBlob

SAVE_FORMATS = ("docker-archive", "oci-archive", "oci-dir")


@dataclass
class _Selected:
    record: ImageRecord
    refs: list[Reference] = field(default_factory=list)


def select_images(store: ImageStore, names: list[str]) -> list[_Selected]:
    """Images in the order named; a name that is a reference contributes itself as a tag."""
    if not names:
        raise ConfigError("save", "no image named")
    chosen: dict[str, _Selected] = {}
    for name in names:
        image_id = store.resolve_id(name)
        sel = chosen.setdefault(image_id, _Selected(store.get(image_id)))
        ref = _as_tag(name)
        if ref is not None and str(ref) in sel.record.refs and ref not in sel.refs:
            sel.refs.append(ref)
    return list(chosen.values())


def _as_tag(name: str) -> Reference | None:
    if name.startswith("sha256:") or (len(name) <= 64 and all(c in "0123456789abcdef"
                                                               for c in name)):
        return None
    try:
        ref = parse_reference(name)
    except ConfigError:
        return None
    return None if ref.digest else ref


# sinks -----------------------------------------------------------------------------------------
class _Sink:
    def add_dir(self, name: str) -> None:
        raise NotImplementedError

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add_stream(name, io.BytesIO(data), len(data))

    def add_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _TarSink(_Sink):
    def __init__(self, out: BinaryIO, mode: int) -> None:
        self.tf = tarfile.open(fileobj=out, mode="w|",  # noqa: SIM115
                               format=tarfile.PAX_FORMAT)
        self.mode = mode

    def _info(self, name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_dir(self, name: str) -> None:
        info = self._info(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self.tf.addfile(info)

    def add_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        info = self._info(name)
        info.size, info.mode = size, self.mode
        self.tf.addfile(info, stream)

    def close(self) -> None:
        self.tf.close()


class _DirSink(_Sink):
    def __init__(self, path: str) -> None:
        os.makedirs(path, mode=0o755, exist_ok=True)
        if os.listdir(path):
            raise ConflictError(f"{path}: the OCI layout directory is not empty")
        self.path = path

    def add_dir(self, name: str) -> None:
        os.makedirs(os.path.join(self.path, name), mode=0o755, exist_ok=True)

    def add_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        dest = os.path.join(self.path, name)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(stream, f, CHUNK)


# layers ----------------------------------------------------------------------------------------
@contextmanager
def uncompressed_layer(store: ImageStore, layer: LayerRow) -> Iterator[tuple[BinaryIO, int]]:
    """The layer as an uncompressed tar whose sha256 was checked to be its diffID."""
    if layer.media_type == oci.OCI_LAYER and store.blobs.has(layer.blob_digest) \
            and layer.blob_digest == layer.diff_id:
        with store.blobs.open(layer.blob_digest) as f:
            yield f, store.blobs.size(layer.blob_digest)
        return
    with tempfile.TemporaryFile(dir=store.blobs.ingest_dir) as tmp:
        if store.blobs.has(layer.blob_digest):
            h = hashlib.sha256()
            with store.blobs.open(layer.blob_digest) as f:
                plain, _ = open_decompressed(f)
                for chunk in iter(lambda: plain.read(CHUNK), b""):
                    h.update(chunk)
                    tmp.write(chunk)
            got = f"sha256:{h.hexdigest()}"
        else:
            got = _regenerate(store, layer, cast(BinaryIO, tmp), "none").diff_id
        if got != layer.diff_id:
            raise VerificationError(f"layer {layer.blob_digest}: uncompressed content is {got}, "
                                    f"not its diffID {layer.diff_id}")
        size = tmp.tell()
        tmp.seek(0)
        yield cast(BinaryIO, tmp), size


def _regenerate(store: ImageStore, layer: LayerRow, out: BinaryIO,
                compression: Literal["gzip", "none"]) -> LayerBlob:
    from isobox.images.layertar import write_layer

    if not store.has_layer(layer.diff_id):
        raise NotFoundError(f"layer {layer.diff_id}: neither its blob {layer.blob_digest} nor "
                            f"its unpacked directory is in the store")
    return write_layer(store.layer_dir(layer.diff_id), out, source="overlay-upper",
                       compression=compression)


# docker-archive --------------------------------------------------------------------------------
def _save_docker(store: ImageStore, images: list[_Selected], sink: _Sink) -> None:
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for sel in images:
        rec = sel.record
        config_name = f"{hex_of(rec.id)}.json"
        if config_name not in written:
            sink.add_bytes(config_name, store.blobs.read(rec.id, oci.MAX_DOCUMENT_BYTES))
            written.add(config_name)
        names = []
        for layer in rec.layers:
            name = f"{hex_of(layer.diff_id)}.tar"
            names.append(name)
            if name in written:
                continue
            with uncompressed_layer(store, layer) as (stream, size):
                sink.add_stream(name, stream, size)
            written.add(name)
        # fully qualified, as podman writes them: podman reads ``busybox:1`` as
        # ``localhost/busybox:1``, docker normalizes ``docker.io/library/…`` back
        tags = [str(r) for r in sel.refs]
        manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": names})
        for ref in sel.refs:
            if rec.layers and ref.tag:
                repo = ref.name
                repositories.setdefault(repo, {})[ref.tag] = hex_of(rec.layers[-1].diff_id)
    sink.add_bytes("manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
    if repositories:
        sink.add_bytes("repositories", json.dumps(repositories, separators=(",", ":"),
                                                  sort_keys=True).encode())


# OCI layout ------------------------------------------------------------------------------------
def _save_oci(store: ImageStore, images: list[_Selected], sink: _Sink) -> None:
    sink.add_dir("blobs")
    sink.add_dir("blobs/sha256")
    written: set[str] = set()

    def blob(digest: str) -> None:
        if digest in written:
            return
        with store.blobs.open(digest) as f:
            sink.add_stream(f"blobs/sha256/{hex_of(digest)}", f, store.blobs.size(digest))
        written.add(digest)

    entries: list[dict[str, Any]] = []
    for sel in images:
        rec = sel.record
        manifest_digest, media_type = rec.manifest_digest, rec.manifest_media_type
        missing = [la for la in rec.layers if not store.blobs.has(la.blob_digest)]
        if missing:
            manifest_digest, media_type = _with_regenerated_layers(store, rec)
        manifest = oci.parse_manifest(store.blobs.read(manifest_digest), manifest_digest,
                                      media_type)
        blob(manifest.config.digest)
        for layer in manifest.layers:
            blob(layer.digest)
        blob(manifest_digest)
        base: dict[str, Any] = {"mediaType": media_type, "digest": manifest_digest,
                "size": store.blobs.size(manifest_digest)}
        # One entry per image, named by its first reference: podman refuses an index with
        # more than one entry ("more than one image in oci, choose an image").
        if sel.refs:
            base["annotations"] = {CONTAINERD_NAME: str(sel.refs[0]),
                                   REF_NAME: str(sel.refs[0])}
        entries.append(base)
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": entries}
    sink.add_bytes("index.json", json.dumps(index, separators=(",", ":")).encode())
    sink.add_bytes("oci-layout", json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())


def _with_regenerated_layers(store: ImageStore, rec: ImageRecord) -> tuple[str, str]:
    """Write blobs for layers that have none; returns a manifest naming them (the config,
    hence the image ID, is unchanged)."""
    descs = []
    for la in rec.layers:
        if store.blobs.has(la.blob_digest):
            descs.append({"mediaType": la.media_type, "digest": la.blob_digest,
                          "size": la.blob_size})
            continue
        writer = store.blobs.writer()
        try:
            made = _regenerate(store, la, cast(BinaryIO, writer), "gzip")
        except BaseException:
            writer.abort()
            raise
        if made.diff_id != la.diff_id:
            writer.abort()
            raise VerificationError(f"layer {la.diff_id}: regenerated content has diffID "
                                    f"{made.diff_id}")
        digest = writer.commit()
        size = store.blobs.size(digest)
        descs.append({"mediaType": oci.OCI_LAYER_GZIP, "digest": digest, "size": size})
        if digest == la.blob_digest:
            continue
    if all(d["digest"] == la.blob_digest for d, la in zip(descs, rec.layers, strict=True)):
        return rec.manifest_digest, rec.manifest_media_type
    manifest = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                "config": {"mediaType": oci.OCI_CONFIG, "digest": rec.id,
                           "size": store.blobs.size(rec.id)},
                "layers": descs}
    return store.blobs.put(oci.dumps(manifest)), oci.OCI_MANIFEST


# entry point -----------------------------------------------------------------------------------
def save_images(store: ImageStore, names: list[str], out: BinaryIO | str,
                fmt: str = "docker-archive") -> None:
    """Write the named images to ``out`` (a stream, or for ``oci-dir`` a directory path)."""
    if fmt not in SAVE_FORMATS:
        raise ConfigError("--format", f"unknown format {fmt!r} (expected one of "
                                      f"{', '.join(SAVE_FORMATS)})")
    images = select_images(store, names)
    sink: _Sink
    if fmt == "oci-dir":
        if not isinstance(out, str):
            raise ConfigError("--output", "oci-dir needs a directory path")
        sink = _DirSink(out)
    else:
        if isinstance(out, str):
            raise ConfigError("--output", f"{fmt} is written to a stream")
        sink = _TarSink(out, 0o444 if fmt == "docker-archive" else 0o644)
    if fmt == "docker-archive":
        _save_docker(store, images, sink)
    else:
        _save_oci(store, images, sink)
    sink.close()
