"""The docker-archive format (what ``docker save`` and ``podman save`` write).

``manifest.json`` is a list of ``{"Config": path, "RepoTags": [...], "Layers": [paths]}``; the
paths name members of the same tar: ``<id>.json`` and ``<id>/layer.tar`` (legacy docker),
``<diffid>.tar`` (podman) or ``blobs/sha256/<hex>`` (docker ≥ 25, which adds an OCI layout).
Layers are usually uncompressed tars: stored as blobs as they are, their digest is the diffID.
Checks and messages follow moby's ``tarexport/load.go`` (catalogue cases 37 and 40).
"""

from __future__ import annotations

from typing import Any

from isobox.errors import ConfigError, InvalidArchiveError, VerificationError
from isobox.images.archive.load import (
    PreparedImage,
    PreparedLayer,
    Spool,
    compression_of,
    digest_uncompressed,
    load_json,
    parse_ref,
)
from isobox.oci import image as oci

LAYER_MEDIA_TYPES = {"none": oci.OCI_LAYER, "gzip": oci.OCI_LAYER_GZIP,
                     "zstd": oci.OCI_LAYER_ZSTD}


def prepare(spool: Spool) -> list[PreparedImage]:
    where = "manifest.json"
    doc = load_json(spool.docs["manifest.json"], where)
    if not isinstance(doc, list):
        raise InvalidArchiveError(f"{where}: expected a list of images")
    return [_prepare_one(spool, entry, f"{where}: [{i}]") for i, entry in enumerate(doc)]


def _prepare_one(spool: Spool, entry: Any, where: str) -> PreparedImage:
    store = spool.store
    if not isinstance(entry, dict):
        raise InvalidArchiveError(f"{where}: expected an object")
    config_member = spool.lookup(entry.get("Config"), f"{where}.Config")
    if config_member.size > oci.MAX_DOCUMENT_BYTES:
        raise InvalidArchiveError(f"{where}.Config: {config_member.name!r} is larger than "
                                  f"{oci.MAX_DOCUMENT_BYTES} bytes")
    config_where = f"{where}.Config {config_member.name}"
    config_bytes = store.blobs.read(config_member.digest, oci.MAX_DOCUMENT_BYTES)
    try:
        config = oci.parse_image_config(config_bytes, config_where)
    except ConfigError as e:
        raise InvalidArchiveError(str(e)) from None
    layer_paths = entry.get("Layers")
    if not isinstance(layer_paths, list):
        raise InvalidArchiveError(f"{where}.Layers: expected a list of paths")
    if len(layer_paths) != len(config.diff_ids):
        raise VerificationError(f"invalid manifest, layers length mismatch: expected "
                                f"{len(config.diff_ids)}, got {len(layer_paths)}")
    layers: list[PreparedLayer] = []
    descs: list[dict[str, Any]] = []
    for i, (path, want) in enumerate(zip(layer_paths, config.diff_ids, strict=True)):
        member = spool.lookup(path, f"{where}.Layers[{i}]")
        with store.blobs.open(member.digest) as f:
            kind = compression_of(f.read(8))
        if kind not in LAYER_MEDIA_TYPES:
            raise InvalidArchiveError(f"{where}.Layers[{i}]: {member.name!r}: unsupported "
                                      f"layer compression {kind}")
        if kind == "none":
            got = member.digest
        else:
            with store.blobs.open(member.digest) as f:
                got, _ = digest_uncompressed(f)
        if got != want:
            raise VerificationError(f"invalid diffID for layer {i}: expected {want}, got {got}")
        media_type = LAYER_MEDIA_TYPES[kind]
        layers.append(PreparedLayer(want, member.digest, media_type))
        descs.append({"mediaType": media_type, "digest": member.digest, "size": member.size})
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list):
        raise InvalidArchiveError(f"{where}.RepoTags: expected a list of references")
    refs = [parse_ref(t, f"{where}.RepoTags[{i}]") for i, t in enumerate(tags)]
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": config_member.digest,
                   "size": config_member.size},
        "layers": descs,
    }
    manifest_digest = spool.put_new(oci.dumps(manifest))
    return PreparedImage(manifest_digest, oci.OCI_MANIFEST, layers, refs)
