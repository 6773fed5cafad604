"""``isobox pull``: registry → content store → committed image.

1. ``GET /v2/<name>/manifests/<tag|digest>``; the digest is computed over the exact bytes
   received and checked against the reference's digest and the ``Docker-Content-Digest``
   header; an index selects the manifest of the wanted platform, fetched and verified by the
   index's descriptor (digest and size). Media types must agree (catalogue case 39).
2. The config and the layer blobs not yet in the store are downloaded in parallel (a small
   pool), each under the store's per-digest lock (concurrent pulls download once), into a
   resumable writer: an interrupted download continues with ``Range: bytes=N-`` (a server
   that answers 200 instead of 206 is read from the start). ``Content-Length`` must match the
   descriptor; size and digest are verified before the blob becomes visible (case 37).
   Descriptor ``urls`` (foreign layers) are never followed (case 38).
3. Each layer is unpacked as soon as its blob is committed, while others still download.
4. ``store.commit_image`` verifies everything against everything and makes the image visible.
"""

from __future__ import annotations

import functools
import hashlib
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from isobox.errors import ConfigError, RegistryError, VerificationError
from isobox.images.reference import Reference, parse_reference
from isobox.images.registry.client import RegistryClient, RegistryOptions, read_bounded
from isobox.images.registry.parallel import run_all
from isobox.images.registry.sources import record_sources
from isobox.images.registry.transport import TransportError
from isobox.images.store import ImageRecord, ImageStore, adds_content, remove_tree
from isobox.lazylog import get_logger
from isobox.oci import image as oci
from isobox.oci.digest import hex_of

if TYPE_CHECKING:
    from isobox.images.unpack import UnpackResult

log = get_logger(__name__)

Progress = Callable[[str, str, int, int], None]  # (digest, status, bytes done, total)
MAX_ATTEMPTS = 4
GENERIC_TYPES = ("", "application/json", "application/octet-stream", "text/plain")


def digest_of(data: bytes, like: str = "sha256:") -> str:
    """``sha256:…`` of ``data`` (``sha512`` when ``like`` is a sha512 digest)."""
    algo = "sha512" if like.startswith("sha512:") else "sha256"
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


@dataclass(frozen=True)
class ResolvedManifest:
    digest: str            # of the platform manifest
    data: bytes
    media_type: str
    manifest: oci.Manifest
    top_digest: str        # what the tag points at (an index or the manifest itself)


def _verified_digest(data: bytes, expected: str | None, header: str | None, what: str) -> str:
    actual = digest_of(data, expected or "sha256:")
    if expected and actual != expected:
        raise VerificationError(f"{what}: unexpected manifest digest {actual}, expected "
                                f"{expected}")
    sha = digest_of(data)
    if header and header.startswith("sha256:") and header != sha:
        raise VerificationError(f"{what}: Docker-Content-Digest {header} does not match the "
                                f"content's digest {sha}")
    return actual


def resolve_manifest(client: RegistryClient, ref: Reference,
                     platform: oci.Platform | None = None) -> ResolvedManifest:
    repo = ref.repository
    where = f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.tag}"
    data, ctype, header = client.get_manifest(repo, ref.digest or ref.tag or "latest")
    top = _verified_digest(data, ref.digest, header, f"manifest {where}")
    declared = ctype if ctype not in GENERIC_TYPES else None
    kind = oci.document_kind(oci.load_document(data, f"manifest {where}"), declared,
                             f"manifest {where}")
    if kind == "index":
        index = oci.parse_index(data, f"index {where}", declared)
        want = platform or oci.host_platform()
        desc = oci.select_platform(index, want, f"index {where}")
        mdata, mtype, mheader = client.get_manifest(repo, desc.digest)
        mwhere = f"manifest {ref.name}@{desc.digest}"
        if len(mdata) != desc.size:
            raise VerificationError(f"{mwhere}: size {len(mdata)} does not match the index's "
                                    f"descriptor size {desc.size}")
        digest = _verified_digest(mdata, desc.digest, mheader, mwhere)
        if mtype not in GENERIC_TYPES and mtype != desc.media_type:
            raise ConfigError(mwhere, f"media-type: served as {mtype} but the index says "
                                      f"{desc.media_type}")
        manifest = oci.parse_manifest(mdata, mwhere, desc.media_type)
        return ResolvedManifest(digest, mdata, manifest.media_type, manifest, top)
    manifest = oci.parse_manifest(data, f"manifest {where}", declared)
    if platform is not None:
        log.debug("%s is a single-platform image; --platform %s checked after the config",
                  where, platform)
    return ResolvedManifest(top, data, manifest.media_type, manifest, top)


class _ChunkFeed:
    """The download's chunks handed to the unpack thread as a file object: a bounded queue
    (no copy through a pipe); ``put`` gives up once the reader has stopped."""

    def __init__(self, depth: int = 16) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(depth)
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.stopped = threading.Event()

    def put(self, chunk: bytes | None) -> bool:
        while not self.stopped.is_set():
            try:
                self._q.put(chunk, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(self, n: int = -1) -> bytes:
        while self._pos >= len(self._buf) and not self._eof:
            item = self._q.get()
            if item is None:
                self._eof = True
            else:
                self._buf, self._pos = item, 0
        start = self._pos
        if start == 0 and (n < 0 or n >= len(self._buf)):
            self._pos = len(self._buf)
            return self._buf
        self._pos = len(self._buf) if n < 0 else min(len(self._buf), start + n)
        return self._buf[start:self._pos]  # copies only what is returned


class _StreamUnpack:
    """Unpacks a layer from the bytes of its download as they arrive (a thread reading a
    :class:`_ChunkFeed`), into ``layers/tmp``, holding the store's lock on the diffID until
    it is published or removed. The blob's digest is verified before the layer is published."""

    def __init__(self, store: ImageStore, diff_id: str) -> None:
        self.store = store
        self.diff_id = diff_id
        self._lock = store.blobs.lock(diff_id)
        self._lock.__enter__()
        self.tmp = ""
        self.result: UnpackResult | None = None
        self.error: BaseException | None = None
        self._feed: _ChunkFeed | None = None
        self._open = False
        self.thread: threading.Thread | None = None

    def _begin(self) -> None:
        """Started by the first bytes (an empty stream is left to ``ensure_layer``)."""
        self.tmp = tempfile.mkdtemp(prefix=f"unpack-{hex_of(self.diff_id)}-",
                                    dir=self.store.layer_tmp)
        self._feed = _ChunkFeed()
        self._open = True
        self.thread = threading.Thread(target=self._run, name="isobox-unpack", daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, store: ImageStore, diff_id: str, db_lock: threading.Lock
              ) -> _StreamUnpack | None:
        with db_lock:
            if store.has_layer(diff_id):
                return None
        su = cls(store, diff_id)
        with db_lock:
            present = store.has_layer(diff_id)
        if present:  # unpacked by someone else while we waited for the lock
            su.abort()
            return None
        return su

    def _run(self) -> None:
        from isobox.images.unpack import unpack_layer

        assert self._feed is not None
        try:
            self.result = unpack_layer(cast(BinaryIO, self._feed), self.tmp,
                                       expected_diff_id=self.diff_id)
        except BaseException as e:
            self.error = e
        finally:
            self._feed.stopped.set()

    def feed(self, chunk: bytes) -> None:
        if self.thread is None:
            if not chunk:
                return
            self._begin()
        if self._open and self._feed is not None and not self._feed.put(chunk):
            self._open = False  # the unpack stopped early; its error is reported by finish

    def _close(self) -> None:
        if self._open and self._feed is not None:
            self._open = False
            self._feed.put(None)

    def finish(self, db_lock: threading.Lock) -> int:
        """Wait for the unpack; publish the layer; returns its size (0: nothing was fed,
        the caller's ``ensure_layer`` unpacks the blob)."""
        if self.thread is None:
            self.abort()
            return 0
        self._close()
        self.thread.join()
        try:
            if self.error is not None:
                raise self.error
            assert self.result is not None
            with db_lock:
                if self.store.has_layer(self.diff_id):
                    remove_tree(self.tmp)
                else:
                    self.store._publish_layer_dir(self.tmp, self.diff_id)
                    self.store.db.add_layer(self.diff_id, self.result.size)
            return self.result.size
        except BaseException:
            remove_tree(self.tmp)
            raise
        finally:
            self._lock.__exit__(None, None, None)

    def abort(self) -> None:
        self._close()
        if self.thread is not None:
            self.thread.join()
        if self.tmp:
            remove_tree(self.tmp)
        self._lock.__exit__(None, None, None)


def fetch_blob(store: ImageStore, client: RegistryClient, repo: str, desc: oci.Descriptor,
               progress: Progress | None = None, *, diff_id: str | None = None,
               db_lock: threading.Lock | None = None) -> bool:
    """Download ``desc`` into the store unless it is there; True if bytes were fetched.

    With ``diff_id`` (and ``db_lock``, serializing the store's SQLite connection) a download
    from byte 0 is unpacked while it streams in."""
    what = f"blob {client.registry}/{repo}@{desc.digest}"
    with store.blobs.lock(desc.digest):
        if store.blobs.has(desc.digest):
            if store.blobs.size(desc.digest) != desc.size:
                raise VerificationError(f"{what}: the stored blob's size "
                                        f"{store.blobs.size(desc.digest)} does not match the "
                                        f"descriptor's {desc.size}")
            if progress:
                progress(desc.digest, "exists", desc.size, desc.size)
            return False
        attempt = 0
        while True:
            attempt += 1
            writer = store.blobs.writer(desc.digest, desc.size, resumable=True)
            resumed = writer.offset
            streamer: _StreamUnpack | None = None
            try:
                if diff_id and db_lock and attempt == 1 and writer.offset == 0:
                    streamer = _StreamUnpack.start(store, diff_id, db_lock)
                if writer.offset < desc.size:
                    _download(client, repo, desc, writer, what, progress,
                              streamer.feed if streamer else None)
                writer.commit()
                if progress:
                    progress(desc.digest, "done", desc.size, desc.size)
                if streamer is not None and db_lock is not None:
                    s, streamer = streamer, None
                    if progress:
                        progress(desc.digest, "extracting", desc.size, desc.size)
                    s.finish(db_lock)
                return True
            except TransportError as e:
                writer.close_keep_partial()
                if streamer is not None:
                    streamer.abort()
                if attempt >= MAX_ATTEMPTS:
                    raise RegistryError(f"{what}: download failed after {attempt} attempts: "
                                        f"{e or type(e).__name__}") from None
                log.info("%s: %s; resuming at byte %d", what, e or type(e).__name__,
                         writer.offset)
                time.sleep(0.2 * attempt)
            except VerificationError:
                writer.abort()  # commit() removed it already; a stale partial is gone too
                if streamer is not None:
                    streamer.abort()
                if resumed and attempt < MAX_ATTEMPTS:
                    log.info("%s: resumed content did not verify; downloading again", what)
                    continue
                raise
            except BaseException:
                writer.close_keep_partial()
                if streamer is not None:
                    streamer.abort()
                raise


def _download(client: RegistryClient, repo: str, desc: oci.Descriptor, writer: object,
              what: str, progress: Progress | None,
              feed: Callable[[bytes], None] | None = None) -> None:
    from isobox.images.blobs import BlobWriter

    assert isinstance(writer, BlobWriter)
    resp = client.open_blob(repo, desc.digest, writer.offset)
    try:
        if writer.offset:
            start = _range_start(resp.headers.get("content-range", ""))
            if resp.status_code != 206 or start != writer.offset:
                log.info("%s: server ignored the Range request; starting over", what)
                writer.discard_partial()
        expected = desc.size - writer.offset
        length = resp.headers.get("content-length")
        encoded = resp.headers.get("content-encoding", "identity") not in ("", "identity")
        if length is not None and not encoded and (not length.isdigit()
                                                   or int(length) != expected):
            raise VerificationError(f"{what}: Content-Length {length} does not match the "
                                    f"expected {expected} bytes (descriptor size {desc.size})")
        chunks = resp.iter_bytes() if encoded else resp.iter_raw()
        done = writer.offset
        last = 0.0
        for chunk in chunks:
            writer.write(chunk)  # raises VerificationError past the descriptor's size
            if feed is not None:
                feed(chunk)
            done += len(chunk)
            if progress:
                now = time.monotonic()
                if now - last > 0.1:
                    last = now
                    progress(desc.digest, "downloading", done, desc.size)
    finally:
        resp.close()


def _range_start(content_range: str) -> int:
    # "bytes 100-199/200"
    unit, _, spec = content_range.partition(" ")
    if unit != "bytes":
        return -1
    start = spec.partition("-")[0]
    return int(start) if start.isdigit() else -1


def fetch_document(store: ImageStore, client: RegistryClient, repo: str,
                   desc: oci.Descriptor) -> bytes:
    """A small blob (the config), bounded and verified, kept in the store."""
    what = f"config {client.registry}/{repo}@{desc.digest}"
    if desc.size > oci.MAX_DOCUMENT_BYTES:
        raise ConfigError(what, f"size {desc.size} is over the {oci.MAX_DOCUMENT_BYTES}-byte "
                                f"limit")
    with store.blobs.lock(desc.digest):
        if store.blobs.has(desc.digest):
            return store.blobs.read(desc.digest, oci.MAX_DOCUMENT_BYTES)
        resp = client.open_blob(repo, desc.digest)
        try:
            data = read_bounded(resp, oci.MAX_DOCUMENT_BYTES, what)
        finally:
            resp.close()
        if len(data) != desc.size:
            raise VerificationError(f"{what}: size {len(data)} does not match the descriptor's "
                                    f"{desc.size}")
        store.blobs.put(data, expected=desc.digest)
        return data


@adds_content
def pull_image(store: ImageStore, reference: str | Reference, *,
               options: RegistryOptions | None = None, platform: oci.Platform | None = None,
               progress: Progress | None = None,
               credentials: tuple[str, str] | None = None) -> ImageRecord:
    """``credentials`` (user, password) replace the stored ones (the API's X-Registry-Auth)."""
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    options = options or RegistryOptions()
    with RegistryClient(ref.registry, options, credentials) as client:
        resolved = resolve_manifest(client, ref, platform)
        manifest = resolved.manifest
        repo = ref.repository
        config = oci.parse_image_config(fetch_document(store, client, repo, manifest.config),
                                        f"config {manifest.config.digest}")
        if platform is not None and not platform.matches(
                {"os": config.platform.os, "architecture": config.platform.architecture,
                 "variant": config.platform.variant}):
            raise ConfigError(str(ref), f"image is for {config.platform}, not {platform}")
        if len(manifest.layers) != len(config.diff_ids):
            raise VerificationError(f"invalid manifest, layers length mismatch: expected "
                                    f"{len(config.diff_ids)}, got {len(manifest.layers)}")
        unpack_lock = threading.Lock()  # the store's SQLite connection is shared

        def one(desc: oci.Descriptor, diff_id: str) -> None:
            fetch_blob(store, client, repo, desc, progress, diff_id=diff_id,
                       db_lock=unpack_lock)
            with unpack_lock:
                if progress:
                    progress(desc.digest, "extracting", desc.size, desc.size)
                store.ensure_layer(diff_id, desc.digest, desc.media_type)
                if progress:
                    progress(desc.digest, "pull complete", desc.size, desc.size)

        jobs: dict[str, tuple[oci.Descriptor, str]] = {}
        for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
            jobs.setdefault(desc.digest, (desc, diff_id))
        run_all([functools.partial(one, d, i) for d, i in jobs.values()], options.parallel,
                "isobox-pull")
        store.blobs.put(resolved.data, expected=resolved.digest)
        record_sources(store, ref.registry, repo,
                       [manifest.config.digest, *(d.digest for d in manifest.layers)])
        refs: list[Reference] = []
        if ref.tag and not ref.digest:
            refs.append(ref)
        refs.append(ref.with_digest(resolved.top_digest))
        return store.commit_image(resolved.digest, refs,
                                  declared_media_type=resolved.media_type)
