"""``isobox push``: a local image → a registry repository.

For every blob (layers in parallel, then the config): ``HEAD`` — skip if the registry has it;
else a cross-repository mount from a repository of the same registry the blob is known to be
in (recorded on pull and push, see :mod:`.sources`); else a monolithic upload
(``POST …/blobs/uploads/`` then ``PUT <location>?digest=…``). Then the manifest is ``PUT``
with its media type, and the digest the registry reports must be ours.

A locally built image may have a layer whose compressed blob was never written (the layer
exists unpacked by diffID): it is produced here from the layer directory. If the new blob
differs from the one the manifest names, a new manifest is written and registered locally.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, cast

from isobox.errors import ConfigError, NotFoundError, RegistryError, VerificationError
from isobox.images.blobs import CHUNK
from isobox.images.db import LayerRow
from isobox.images.reference import Reference, parse_reference
from isobox.images.registry.client import RegistryClient, RegistryOptions
from isobox.images.registry.parallel import run_all
from isobox.images.registry.sources import record_sources, sources_of
from isobox.images.store import ImageRecord, ImageStore
from isobox.lazylog import get_logger
from isobox.oci import image as oci
from isobox.oci.digest import sha256_of

log = get_logger(__name__)

Progress = Callable[[str, str, int, int], None]  # (digest, status, bytes done, total)


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str
    size: int
    uploaded: int  # blobs whose bytes were sent
    mounted: int   # blobs mounted from another repository
    existing: int  # blobs the registry had already


def ensure_layer_blobs(store: ImageStore, rec: ImageRecord) -> ImageRecord:
    """Write missing layer blobs from the unpacked layers; re-manifest if they differ."""
    new_layers: list[LayerRow] = []
    changed = False
    for la in rec.layers:
        if store.blobs.has(la.blob_digest):
            new_layers.append(la)
            continue
        if not store.has_layer(la.diff_id):
            raise NotFoundError(f"image {rec.short_id}: layer {la.diff_id} has neither a blob "
                                f"nor an unpacked copy in the store")
        from isobox.images.layertar import write_layer

        writer = store.blobs.writer()
        try:
            blob = write_layer(store.layer_dir(la.diff_id), cast(BinaryIO, writer),
                               source="overlay-upper")
        except BaseException:
            writer.abort()
            raise
        digest = writer.commit()
        if blob.diff_id != la.diff_id:
            raise VerificationError(f"layer {la.diff_id} of image {rec.short_id} changed on "
                                    f"disk: its content now hashes to {blob.diff_id}")
        if digest != la.blob_digest:
            changed = True
            la = LayerRow(la.diff_id, digest, blob.size, oci.OCI_LAYER_GZIP)
        new_layers.append(la)
    if not changed:
        return rec
    manifest = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                "config": {"mediaType": rec.manifest.config.media_type,
                           "digest": rec.manifest.config.digest,
                           "size": rec.manifest.config.size},
                "layers": [{"mediaType": la.media_type, "digest": la.blob_digest,
                            "size": la.blob_size} for la in new_layers]}
    if rec.manifest.annotations:
        manifest["annotations"] = rec.manifest.annotations
    mdigest = store.blobs.put(oci.dumps(manifest))
    refs = [parse_reference(r) for r in rec.refs if "@" not in r]
    return store.commit_image(mdigest, refs)


def _chunks(store: ImageStore, digest: str, size: int,
            progress: Progress | None) -> Callable[[], Iterator[bytes]]:
    def gen() -> Iterator[bytes]:
        done = 0
        with store.blobs.open(digest) as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                done += len(chunk)
                if progress:
                    progress(digest, "pushing", done, size)
                yield chunk
    return gen


def push_blob(store: ImageStore, client: RegistryClient, repo: str, digest: str, size: int,
              sources: list[str], progress: Progress | None = None) -> str:
    """``exists`` | ``mounted`` | ``uploaded``."""
    if client.has_blob(repo, digest):
        if progress:
            progress(digest, "layer already exists", size, size)
        return "exists"
    location: str | None = None
    for source in sources:
        if source == repo:
            continue
        try:
            location = client.mount_blob(repo, digest, source)
        except (RegistryError, NotFoundError) as e:
            log.info("mount of %s from %s failed: %s", digest, source, e)
            continue
        if location is None:
            if progress:
                progress(digest, f"mounted from {source}", size, size)
            return "mounted"
        break  # the registry opened an upload session instead: use it
    if location is None:
        location = client.start_upload(repo)
    client.finish_upload(repo, location, digest, _chunks(store, digest, size, progress), size)
    if progress:
        progress(digest, "pushed", size, size)
    return "uploaded"


def push_image(store: ImageStore, source: str, destination: str | None = None, *,
               options: RegistryOptions | None = None,
               progress: Progress | None = None,
               credentials: tuple[str, str] | None = None) -> PushResult:
    """``credentials`` (user, password) replace the stored ones (the API's X-Registry-Auth)."""
    options = options or RegistryOptions()
    rec = store.resolve(source)
    try:
        ref = parse_reference(destination or source, what="push reference")
    except ConfigError:
        raise ConfigError("push", f"{source!r} is not a name to push to; give a destination "
                                  f"like registry.example/repo:tag") from None
    if ref.digest:
        raise ConfigError("push", f"cannot push to a digest reference: {ref}")
    tag = ref.tag or "latest"
    rec = ensure_layer_blobs(store, rec)
    data = store.blobs.read(rec.manifest_digest, oci.MAX_DOCUMENT_BYTES)
    blobs: dict[str, int] = {la.blob_digest: la.blob_size for la in rec.layers}
    for d, s in blobs.items():
        if store.blobs.size(d) != s:
            raise VerificationError(f"blob {d}: stored size {store.blobs.size(d)} does not "
                                    f"match the manifest's {s}")
    known = {d: sources_of(store, d, ref.registry) for d in [*blobs, rec.manifest.config.digest]}
    counts = {"exists": 0, "mounted": 0, "uploaded": 0}
    repo = ref.repository
    cfg = rec.manifest.config
    with RegistryClient(ref.registry, options, credentials) as client:
        # the layers and the config together (as Docker does); the manifest once all are in
        outcomes = run_all([functools.partial(push_blob, store, client, repo, d, s, known[d],
                                              progress)
                            for d, s in {**blobs, cfg.digest: cfg.size}.items()],
                           options.parallel, "isobox-push")
        for outcome in outcomes:
            counts[outcome] += 1
        answered = client.put_manifest(repo, tag, data, rec.manifest_media_type)
    digest = sha256_of(data)
    if answered and answered != digest:
        raise VerificationError(f"manifest {ref.name}:{tag}: the registry stored digest "
                                f"{answered}, expected {digest}")
    record_sources(store, ref.registry, repo, [*blobs, rec.manifest.config.digest])
    return PushResult(ref.with_tag(tag), digest, len(data), counts["uploaded"],
                      counts["mounted"], counts["exists"])
