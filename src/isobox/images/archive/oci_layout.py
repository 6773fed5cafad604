"""OCI image layouts (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``), in a tar
(oci-archive, and docker ≥ 25's ``docker save``) or a directory.

Every blob is reached from a validated digest (``blobs/sha256/<64 hex>``, never a path taken
from the document), and was verified against that digest while it was spooled (case 38); a
``blobs/…`` member that is a link out of the archive is refused (case 40).
"""

from __future__ import annotations

from isobox.errors import ConfigError, InvalidArchiveError
from isobox.images.archive.load import PreparedImage, PreparedLayer, Spool, load_json, parse_ref
from isobox.images.reference import Reference
from isobox.oci import image as oci

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_VERSION = "1.0.0"
_MAX_NESTING = 4


def prepare(spool: Spool, platform: oci.Platform) -> list[PreparedImage]:
    layout = spool.doc("oci-layout")
    if layout is not None:
        doc = load_json(layout, "oci-layout")
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if version != LAYOUT_VERSION:
            raise InvalidArchiveError(f"oci-layout: unsupported imageLayoutVersion "
                                      f"{version!r:.40}")
    try:
        index = oci.parse_index(spool.docs["index.json"], "index.json")
    except ConfigError as e:
        raise InvalidArchiveError(str(e)) from None
    out = []
    for i, desc in enumerate(index.manifests):
        where = f"index.json: manifests[{i}]"
        manifest_desc = _resolve(spool, desc, platform, where, 0)
        out.append(_prepare_manifest(spool, manifest_desc, _refs(desc, where), where))
    return out


def _resolve(spool: Spool, desc: oci.Descriptor, platform: oci.Platform, where: str,
             depth: int) -> oci.Descriptor:
    if desc.media_type in oci.MANIFEST_TYPES:
        return desc
    if desc.media_type not in oci.INDEX_TYPES:
        raise InvalidArchiveError(f"{where}: unsupported media type {desc.media_type!r}")
    if depth >= _MAX_NESTING:
        raise InvalidArchiveError(f"{where}: indexes nested more than {_MAX_NESTING} deep")
    member = spool.blob(desc.digest, desc.size, where)
    data = spool.store.blobs.read(member.digest, oci.MAX_DOCUMENT_BYTES)
    try:
        nested = oci.parse_index(data, f"{where} {desc.digest}", desc.media_type)
        chosen = oci.select_platform(nested, platform, f"{where} {desc.digest}")
    except ConfigError as e:
        raise InvalidArchiveError(str(e)) from None
    return _resolve(spool, chosen, platform, f"{where} → {chosen.digest}", depth + 1)


def _refs(desc: oci.Descriptor, where: str) -> list[Reference]:
    """The image's name: containerd's full-name annotation, else ``ref.name`` when it is a
    full reference (podman writes ``localhost/name:tag``); a bare tag names nothing."""
    full = desc.annotations.get(CONTAINERD_NAME)
    if full:
        return [parse_ref(full, f"{where}.annotations[{CONTAINERD_NAME!r}]")]
    name = desc.annotations.get(REF_NAME, "")
    if name and ("/" in name or ":" in name):
        return [parse_ref(name, f"{where}.annotations[{REF_NAME!r}]")]
    return []


def _prepare_manifest(spool: Spool, desc: oci.Descriptor, refs: list[Reference],
                      where: str) -> PreparedImage:
    store = spool.store
    member = spool.blob(desc.digest, desc.size, where)
    try:
        manifest = oci.parse_manifest(store.blobs.read(member.digest, oci.MAX_DOCUMENT_BYTES),
                                      f"{where} {desc.digest}", desc.media_type)
        spool.blob(manifest.config.digest, manifest.config.size, f"{where}.config")
        config = oci.parse_image_config(
            store.blobs.read(manifest.config.digest, oci.MAX_DOCUMENT_BYTES),
            f"{where} config {manifest.config.digest}")
    except ConfigError as e:
        raise InvalidArchiveError(str(e)) from None
    if len(manifest.layers) != len(config.diff_ids):
        from isobox.errors import VerificationError

        raise VerificationError(f"invalid manifest, layers length mismatch: expected "
                                f"{len(config.diff_ids)}, got {len(manifest.layers)}")
    layers = []
    for i, (layer, diff_id) in enumerate(zip(manifest.layers, config.diff_ids, strict=True)):
        spool.blob(layer.digest, layer.size, f"{where}.layers[{i}]")
        layers.append(PreparedLayer(diff_id, layer.digest, layer.media_type))
    return PreparedImage(desc.digest, desc.media_type, layers, refs)
