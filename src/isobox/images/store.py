"""The image store: content store + index + unpacked layers, behind one object.

Layout under the root (``/var/lib/isobox``, or ``ISOBOX_ROOT``), all private (0700)::

    blobs/sha256/<hex>        content (manifests, configs, compressed layers)
    ingest/                   content being written
    layers/sha256/<hex>/      one unpacked layer per diffID, overlay-format whiteouts
    layers/tmp/               layers being unpacked (renamed into place when verified)
    snapshots/<id>/           a container's or build step's rootfs (see snapshots.py)
    isobox.db                 the index (db.py)

Visibility rule: an image row and its references are inserted in one transaction after every
blob is committed and every layer is unpacked and verified.
"""

from __future__ import annotations

import datetime
import fcntl
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from isobox.errors import ConfigError, ConflictError, NotFoundError, VerificationError
from isobox.images.blobs import BlobStore, makedirs_private
from isobox.images.db import ImageDB, ImageRow, LayerRow
from isobox.images.reference import Reference, parse_reference
from isobox.oci import image as oci
from isobox.oci.digest import hex_of, is_digest, sha256_of

DEFAULT_ROOT = "/var/lib/isobox"


def default_root() -> str:
    return os.environ.get("ISOBOX_ROOT") or DEFAULT_ROOT


@dataclass(frozen=True)
class ImageRecord:
    """An image of the store with its manifest, config, layers and references."""

    id: str
    manifest_digest: str
    manifest_media_type: str
    manifest: oci.Manifest
    config: oci.ImageConfig
    layers: tuple[LayerRow, ...]
    refs: tuple[str, ...]
    size: int
    created: str
    manifest_size: int

    @property
    def short_id(self) -> str:
        return self.id[7:19]

    @property
    def tags(self) -> list[str]:
        return [r for r in self.refs if "@" not in r]

    @property
    def repo_digests(self) -> list[str]:
        return [r for r in self.refs if "@" in r]

    @property
    def diff_ids(self) -> list[str]:
        return [la.diff_id for la in self.layers]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ImageStore:
    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.abspath(root or default_root())
        makedirs_private(self.root)
        self.blobs = BlobStore(self.root)
        self.layer_root = os.path.join(self.root, "layers", "sha256")
        self.layer_tmp = os.path.join(self.root, "layers", "tmp")
        self.snapshot_root = os.path.join(self.root, "snapshots")
        for d in (os.path.join(self.root, "layers"), self.layer_root, self.layer_tmp,
                  self.snapshot_root):
            makedirs_private(d)
        self.db = ImageDB(os.path.join(self.root, "isobox.db"))
        self._adding = 0

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def adding_content(self) -> Iterator[None]:
        """Held (shared) from the first blob a pull, load, import or build writes until its
        image is committed: garbage collection (exclusive) would see those blobs as orphans."""
        fd = os.open(os.path.join(self.root, "gc.lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._adding += 1
            try:
                yield
            finally:
                self._adding -= 1
        finally:
            os.close(fd)

    # layers -----------------------------------------------------------------------------
    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.layer_root, hex_of(diff_id))

    def has_layer(self, diff_id: str) -> bool:
        return self.db.has_layer(diff_id) and os.path.isdir(self.layer_dir(diff_id))

    def ensure_layer(self, diff_id: str, blob_digest: str, media_type: str = "") -> int:
        """Unpack ``blob_digest`` as layer ``diff_id`` unless it is there; returns its size.

        Shared by every image with that layer; concurrent callers unpack it once."""
        from isobox.images.unpack import unpack_layer

        with self.blobs.lock(diff_id):
            if self.has_layer(diff_id):
                return int(self.db.layer_sizes()[diff_id])
            import tempfile  # here: `run` and `push` never unpack

            tmp = tempfile.mkdtemp(prefix=f"unpack-{hex_of(diff_id)}-", dir=self.layer_tmp)
            try:
                with self.blobs.open(blob_digest) as f:
                    result = unpack_layer(f, tmp, expected_diff_id=diff_id)
                self._publish_layer_dir(tmp, diff_id)
            except BaseException:
                remove_tree(tmp)
                raise
            self.db.add_layer(diff_id, result.size)
            return result.size

    def add_layer_dir(self, staged: str, diff_id: str, size: int) -> None:
        """Publish an already unpacked layer directory (a build step's upper dir)."""
        with self.blobs.lock(diff_id):
            if self.has_layer(diff_id):
                remove_tree(staged)
                return
            self._publish_layer_dir(staged, diff_id)
            self.db.add_layer(diff_id, size)

    def _publish_layer_dir(self, staged: str, diff_id: str) -> None:
        final = self.layer_dir(diff_id)
        if os.path.lexists(final):  # left by a crash before the index row was written
            remove_tree(final)
        os.chmod(staged, 0o755)  # the layer's root dir; the store root above stays 0700
        os.rename(staged, final)

    # images -----------------------------------------------------------------------------
    def commit_image(self, manifest_digest: str, refs: list[Reference] | tuple[()] = (),
                     *, declared_media_type: str | None = None,
                     intermediate: bool = False) -> ImageRecord:
        """Register an image whose manifest, config and layer blobs are in the content store:
        verify them against each other, unpack missing layers, then make it visible."""
        where = f"manifest {manifest_digest}"
        manifest = oci.parse_manifest(self.blobs.read(manifest_digest), where, declared_media_type)
        config = oci.parse_image_config(
            self.blobs.read(manifest.config.digest, oci.MAX_DOCUMENT_BYTES),
            f"config {manifest.config.digest}")
        if self.blobs.size(manifest.config.digest) != manifest.config.size:
            raise VerificationError(f"{where}: config size does not match its descriptor")
        if len(manifest.layers) != len(config.diff_ids):
            raise VerificationError(f"invalid manifest, layers length mismatch: expected "
                                    f"{len(config.diff_ids)}, got {len(manifest.layers)}")
        layers: list[LayerRow] = []
        total = 0
        for i, (desc, diff_id) in enumerate(zip(manifest.layers, config.diff_ids, strict=True)):
            if not self.blobs.has(desc.digest) and self.has_layer(diff_id):
                pass  # layer known locally by diffID (e.g. a build); blob made on push/save
            elif self.blobs.size(desc.digest) != desc.size:
                raise VerificationError(f"{where}: layers[{i}] {desc.digest}: size "
                                        f"{self.blobs.size(desc.digest)} does not match the "
                                        f"descriptor's {desc.size}")
            try:
                total += self.ensure_layer(diff_id, desc.digest, desc.media_type)
            except VerificationError as e:
                raise VerificationError(f"invalid diffID for layer {i}: {e}") from None
            layers.append(LayerRow(diff_id, desc.digest, desc.size, desc.media_type))
        row = ImageRow(manifest.config.digest, manifest_digest, manifest.media_type,
                       str(config.raw.get("created", "")), str(config.platform), total,
                       intermediate, time.time())
        self.db.add_image(row, layers, [str(ref) for ref in refs])
        return self.get(row.id)

    def create_image(self, config_raw: dict[str, Any], layers: list[LayerRow],
                     refs: list[Reference] | tuple[()] = (), *, intermediate: bool = False
                     ) -> ImageRecord:
        """Write config and an OCI manifest for layers already in the store, and register."""
        config_raw = dict(config_raw)
        config_raw["rootfs"] = {"type": "layers", "diff_ids": [la.diff_id for la in layers]}
        config_bytes = oci.dumps(config_raw)
        config_digest = self.blobs.put(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": {"mediaType": oci.OCI_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": [{"mediaType": la.media_type, "digest": la.blob_digest,
                        "size": la.blob_size} for la in layers],
        }
        manifest_digest = self.blobs.put(oci.dumps(manifest))
        return self.commit_image(manifest_digest, refs, intermediate=intermediate)

    def get(self, image_id: str) -> ImageRecord:
        row = self.db.image(image_id)
        if row is None:
            raise NotFoundError(f"no such image: {image_id}")
        manifest_bytes = self.blobs.read(row.manifest_digest)
        manifest = oci.parse_manifest(manifest_bytes, f"manifest {row.manifest_digest}",
                                      row.manifest_media_type)
        config = oci.parse_image_config(self.blobs.read(row.id, oci.MAX_DOCUMENT_BYTES),
                                        f"config {row.id}")
        return ImageRecord(row.id, row.manifest_digest, row.manifest_media_type, manifest,
                           config, tuple(self.db.layers_of(row.id)),
                           tuple(self.db.refs_of(row.id)), row.size, row.created,
                           len(manifest_bytes))

    def resolve_id(self, text: str) -> str:
        """Image ID for a reference, a full or short ID, or ``name@digest``."""
        if is_digest(text):
            if self.db.image(text):
                return text
            raise NotFoundError(f"no such image: {text}")
        if 4 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text):
            ids = self.db.image_ids_with_prefix(text)
            if len(ids) == 1:
                return ids[0]
            if len(ids) > 1:
                raise ConflictError(f"image ID prefix {text!r} is ambiguous")
        try:
            ref = parse_reference(text)
        except ConfigError:
            raise NotFoundError(f"no such image: {text}") from None
        image_id = self.db.ref(str(ref))
        if image_id is None and ref.digest:
            for row in self.db.images(include_intermediate=True):
                if row.manifest_digest == ref.digest and any(
                        r.startswith(ref.name + "@") or r.startswith(ref.name + ":")
                        for r in self.db.refs_of(row.id)):
                    image_id = row.id
        if image_id is None:
            raise NotFoundError(f"no such image: {text}")
        return image_id

    def resolve(self, text: str) -> ImageRecord:
        return self.get(self.resolve_id(text))

    def images(self, *, include_intermediate: bool = False) -> list[ImageRecord]:
        return [self.get(r.id) for r in self.db.images(include_intermediate=include_intermediate)]

    def tag(self, source: str, target: str) -> Reference:
        image_id = self.resolve_id(source)
        ref = parse_reference(target, what="target reference")
        if ref.digest:
            raise ConfigError("target reference", f"cannot tag with a digest: {target!r}")
        self.db.set_ref(str(ref), image_id)
        return ref

    def remove(self, text: str, *, force: bool = False) -> list[str]:
        """``rmi``: untag, and delete the image when no reference is left.

        Returns Docker's report lines: ``Untagged: …`` and ``Deleted: …``."""
        image_id = self.resolve_id(text)
        refs = self.db.refs_of(image_id)
        out: list[str] = []
        by_ref = not text.startswith("sha256:") and not all(
            c in "0123456789abcdef" for c in text)
        if by_ref:
            ref = str(parse_reference(text))
            if ref in refs and len([r for r in refs if "@" not in r]) > 1:
                self.db.delete_ref(ref)
                return [f"Untagged: {parse_reference(ref).familiar}"]
        elif len([r for r in refs if "@" not in r]) > 1 and not force:
            raise ConflictError(f"unable to delete {image_id[7:19]} (must be forced) - image is "
                                f"referenced in multiple repositories")
        users = self.db.snapshots_of_image(image_id)
        if users and not force:
            raise ConflictError(f"unable to remove image {text}: image is in use by container "
                                f"{users[0]} (use -f to force)")
        for r in refs:
            self.db.delete_ref(r)
            out.append(f"Untagged: {parse_reference(r).familiar}")
        self.db.delete_image(image_id)
        out.append(f"Deleted: {image_id}")
        self.collect_garbage()
        return out

    # garbage collection -----------------------------------------------------------------
    def prune(self, *, all_images: bool = False) -> tuple[list[str], int]:
        """Remove dangling images (with ``all_images``: every image no snapshot uses, and the
        build cache), then garbage; returns (deleted image IDs, bytes reclaimed)."""
        deleted = []
        if all_images:
            self.db.cache_clear()
        cached = {r[0] for r in self.db.conn.execute("SELECT image_id FROM build_cache")}
        for row in self.db.images(include_intermediate=True):
            if self.db.snapshots_of_image(row.id) or row.id in cached:
                continue
            if all_images or not self.db.refs_of(row.id):
                self.db.delete_image(row.id)
                deleted.append(row.id)
        return deleted, self.collect_garbage()

    def collect_garbage(self) -> int:
        """Delete blobs and layers no image or snapshot references, and abandoned temporaries.

        Waits for content being added by other processes; skipped (returns 0) while this
        store object is itself adding content."""
        if self._adding:
            return 0
        fd = os.open(os.path.join(self.root, "gc.lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return self._collect_garbage()
        finally:
            os.close(fd)

    def _collect_garbage(self) -> int:
        freed = self.blobs.clean_ingest()
        keep_blobs: set[str] = set()
        keep_layers: set[str] = set()
        for row in self.db.images(include_intermediate=True):
            keep_blobs.update((row.id, row.manifest_digest))
            for la in self.db.layers_of(row.id):
                keep_blobs.add(la.blob_digest)
                keep_layers.add(la.diff_id)
        for snap in self.db.snapshots():
            keep_layers.update(snap["layers"])
        for digest in list(self.blobs.digests()):
            if digest not in keep_blobs and is_digest(digest):
                with self.blobs.lock(digest):
                    freed += self.blobs.size(digest) if self.blobs.has(digest) else 0
                    self.blobs.delete(digest)
        sizes = self.db.layer_sizes()
        for name in os.listdir(self.layer_root):
            diff_id = f"sha256:{name}"
            if diff_id in keep_layers:
                continue
            with self.blobs.lock(diff_id):
                if diff_id in keep_layers:
                    continue
                self.db.delete_layer(diff_id)
                freed += sizes.get(diff_id, 0)
                remove_tree(os.path.join(self.layer_root, name))
        for name in os.listdir(self.layer_tmp):  # interrupted unpacks: unpack-<diffhex>-*
            parts = name.split("-")
            if len(parts) == 3 and is_digest(f"sha256:{parts[1]}"):
                with self.blobs.lock(f"sha256:{parts[1]}"):  # an unpack in progress holds it
                    remove_tree(os.path.join(self.layer_tmp, name))
        return freed

    def disk_usage(self) -> dict[str, Any]:
        """``system df`` figures for images and build cache (containers: snapshots.py)."""
        images = self.db.images()
        layer_sizes = self.db.layer_sizes()
        shared: dict[str, int] = {}
        for row in images:
            for la in self.db.layers_of(row.id):
                shared[la.diff_id] = shared.get(la.diff_id, 0) + 1
        used = {str(s["image_id"]) for s in self.db.snapshots() if s["image_id"]}
        total = sum(layer_sizes.get(d, 0) for d in shared)
        reclaim = sum(layer_sizes.get(la.diff_id, 0) for row in images if row.id not in used
                      for la in self.db.layers_of(row.id) if shared[la.diff_id] == 1)
        cache_rows = list(self.db.conn.execute("SELECT image_id FROM build_cache"))
        return {"images": len(images), "active": len(used), "size": total,
                "reclaimable": reclaim, "build_cache": len(cache_rows)}


P = ParamSpec("P")
R = TypeVar("R")


def adds_content(fn: Callable[Concatenate[ImageStore, P], R]
                 ) -> Callable[Concatenate[ImageStore, P], R]:
    """Run ``fn(store, …)`` inside ``store.adding_content()``."""
    @functools.wraps(fn)
    def wrapper(store: ImageStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with store.adding_content():
            return fn(store, *args, **kwargs)
    return wrapper


def remove_tree(path: str) -> None:
    """Remove a directory tree without following symlinks (``shutil.rmtree`` uses fds)."""
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, ignore_errors=True)


def config_digest_of(data: bytes) -> str:
    return sha256_of(data)
