"""``isobox load``: read an image archive, verify it, and commit its images.

The outer tar is read by :mod:`tarfile` headers in streaming mode and never extracted: each
regular member is streamed straight into the content store's ingest area (hashed on the way, so
content becomes a blob named by its digest), small top-level documents (``manifest.json``,
``index.json``, ``oci-layout``, ``repositories``) are kept in memory (≤ 4 MiB each), and
symlink or hardlink members are only recorded as aliases between member names. Catalogue case
40: every path named by ``manifest.json`` or ``index.json`` is validated as a plain relative name
and looked up among the archive's own members (a link may only alias another member of the
archive; one pointing outside is refused) — no path is ever opened on the host.

Nothing becomes visible unless every image in the archive verified: layers are checked
(diffIDs, sizes, digests) and unpacked first, then each image is committed through
:meth:`ImageStore.commit_image`. On failure the blobs this load added and no image uses are
deleted again.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from isobox.errors import ConfigError, InvalidArchiveError, VerificationError
from isobox.images.reference import Reference, parse_reference
from isobox.images.store import ImageRecord, ImageStore, adds_content
from isobox.images.unpack import PrefixedStream, UnpackLimits, decompressed_chunks, read_exact
from isobox.oci import image as oci
from isobox.oci.digest import validate_digest

CHUNK = 1 << 20
DOCUMENTS = ("manifest.json", "index.json", "oci-layout", "repositories")
_LEGACY_JUNK = ("VERSION", "json")  # docker's v1 per-layer metadata, never needed
_MAX_LINK_HOPS = 16
MAX_HEADER_BYTES = 1 << 20  # a pax or GNU long-name header (tarfile reads it into memory)
_BIG_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 64 << 30
    max_entries: int = 100_000
    max_document_bytes: int = oci.MAX_DOCUMENT_BYTES


@dataclass(frozen=True)
class LoadedImage:
    record: ImageRecord
    refs: tuple[Reference, ...]

    @property
    def names(self) -> list[str]:
        return [r.familiar for r in self.refs]


@dataclass(frozen=True)
class Member:
    name: str
    digest: str
    size: int


@dataclass
class PreparedLayer:
    diff_id: str
    blob_digest: str
    media_type: str


@dataclass
class PreparedImage:
    """An image whose blobs are all in the store, ready for ``commit_image``."""

    manifest_digest: str
    media_type: str
    layers: list[PreparedLayer]
    refs: list[Reference] = field(default_factory=list)


# compression ---------------------------------------------------------------------------------
def compression_of(head: bytes) -> str:
    """``gzip``, ``zstd``, ``xz``, ``bzip2`` or ``none`` from a stream's first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"BZh"):
        return "bzip2"
    return "none"


class _ChunkStream(io.RawIOBase):
    """A raw read-only stream over an iterator of byte chunks (each at most 1 MiB)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def open_decompressed(stream: BinaryIO, max_bytes: int = UnpackLimits.max_bytes
                      ) -> tuple[BinaryIO, str]:
    """Wrap ``stream`` so that it reads uncompressed bytes; returns (stream, compression).

    Decompression is the layer unpacker's (in-process, case 36): bounded memory per read
    (a bomb never inflates more than 1 MiB at a time), at most ``max_bytes`` uncompressed
    bytes, truncated or corrupt input raises InvalidArchiveError (case 35)."""
    head = read_exact(stream, 8)
    kind = compression_of(head)
    chunks = decompressed_chunks(cast(BinaryIO, PrefixedStream(head, stream)),
                                 UnpackLimits(max_bytes=max_bytes))
    return cast(BinaryIO, io.BufferedReader(_ChunkStream(chunks), CHUNK)), kind


def digest_uncompressed(stream: BinaryIO, max_bytes: int = UnpackLimits.max_bytes
                        ) -> tuple[str, int]:
    """sha256 and size of ``stream`` after decompression (at most ``max_bytes``)."""
    plain, _ = open_decompressed(stream, max_bytes)
    h = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: plain.read(CHUNK), b""):
        h.update(chunk)
        size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


# member names --------------------------------------------------------------------------------
def clean_member_name(name: str) -> str | None:
    """The normalized relative name of a tar member, or None if it is absolute or escapes."""
    if "\x00" in name:
        return None
    if name.startswith("/"):
        return None
    norm = posixpath.normpath(name)
    if norm in (".", "") or norm == ".." or norm.startswith("../"):
        return None
    return norm


def safe_path(value: object, where: str) -> str:
    """A path from ``manifest.json``: a plain relative name inside the archive (case 40)."""
    if not isinstance(value, str) or not value:
        raise InvalidArchiveError(f"{where}: expected a path string, got {value!r:.80}")
    norm = clean_member_name(value)
    if norm is None or value.startswith("/"):
        raise InvalidArchiveError(f"{where}: path {value[:200]!r} is not inside the archive")
    return norm


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses a pax or GNU long-name header over ``MAX_HEADER_BYTES`` before tarfile reads
    the whole of it into memory (case 35: "PAX records of several MiB")."""

    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _BIG_HEADERS and self.size > MAX_HEADER_BYTES:
            raise InvalidArchiveError(f"archive header of {self.size} bytes is over the "
                                      f"{MAX_HEADER_BYTES}-byte limit")
        return cast(tarfile.TarInfo, super()._proc_member(tf))  # type: ignore[misc]


# the spool -----------------------------------------------------------------------------------
class Spool:
    """The archive's members: regular files as store blobs, documents in memory, links as
    aliases. Tracks the blobs it created so that a failed load can remove them."""

    def __init__(self, store: ImageStore, limits: ArchiveLimits) -> None:
        self.store = store
        self.limits = limits
        self.files: dict[str, Member] = {}
        self.docs: dict[str, bytes] = {}
        self.links: dict[str, tuple[str, str]] = {}  # name → ("sym"|"hard", target)
        self.new_blobs: set[str] = set()
        self.total = 0

    # reading ------------------------------------------------------------------------------
    def read(self, stream: BinaryIO) -> None:
        # content is bounded by max_total_bytes; headers (and the data of member types that
        # are skipped) by a generous allowance per entry
        bound = self.limits.max_total_bytes + (self.limits.max_entries + 2) * 8192
        plain, _ = open_decompressed(stream, bound)
        entries = 0
        try:
            tf = tarfile.open(fileobj=plain, mode="r|",  # noqa: SIM115
                              tarinfo=_BoundedTarInfo)
        except tarfile.TarError as e:
            raise InvalidArchiveError(f"not a tar archive: {e}") from None
        except EOFError:
            raise InvalidArchiveError("not a tar archive: truncated") from None
        with tf:
            try:
                while (info := tf.next()) is not None:
                    vars(tf)["members"].clear()  # tarfile keeps every header otherwise
                    entries += 1
                    if entries > self.limits.max_entries:
                        raise InvalidArchiveError(
                            f"archive has more than {self.limits.max_entries} entries")
                    self._member(tf, info)
            except tarfile.TarError as e:
                raise InvalidArchiveError(f"archive is corrupt after {entries} entries: "
                                          f"{e}") from None
            except EOFError:
                raise InvalidArchiveError("archive is truncated") from None
        while plain.read(CHUNK):  # to the end: a compressed stream's trailer (CRC) is checked
            pass

    def _member(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = clean_member_name(info.name)
        if info.isdir():
            return
        if name is None:
            raise InvalidArchiveError(f"archive entry {info.name[:200]!r}: path is not inside "
                                      f"the archive")
        if info.issym() or info.islnk():
            self.links[name] = ("sym" if info.issym() else "hard", info.linkname)
            self.files.pop(name, None)  # a later member of the same name replaces it
            return
        if not info.isreg():
            return  # devices, fifos: no meaning in an image archive
        if posixpath.basename(name) in _LEGACY_JUNK and "/" in name:
            return
        self.total += info.size
        if self.total > self.limits.max_total_bytes:
            raise InvalidArchiveError(f"archive entry {name!r}: archive content is larger "
                                      f"than {self.limits.max_total_bytes} bytes")
        src = tf.extractfile(info)
        if src is None:
            return
        if name in DOCUMENTS:
            if info.size > self.limits.max_document_bytes:
                raise InvalidArchiveError(f"archive entry {name!r}: {info.size} bytes, over "
                                          f"the {self.limits.max_document_bytes}-byte limit")
            self.docs[name] = src.read(info.size)
            return
        self.files[name] = self._spool(name, cast(BinaryIO, src), info.size)
        self.links.pop(name, None)

    def _spool(self, name: str, src: BinaryIO, size: int) -> Member:
        expected = _blob_name_digest(name)
        blobs = self.store.blobs
        if expected is not None and blobs.has(expected):
            return Member(name, expected, blobs.size(expected))  # content already verified
        writer = blobs.writer(expected, size)
        h = hashlib.sha256()
        try:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                h.update(chunk)
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        digest = f"sha256:{h.hexdigest()}"
        if expected is None and blobs.has(digest):
            writer.abort()
            return Member(name, digest, size)
        try:
            committed = writer.commit()
        except VerificationError as e:
            raise VerificationError(f"archive entry {name!r}: {e}") from None
        self.new_blobs.add(committed)
        return Member(name, committed, size)

    # lookups -------------------------------------------------------------------------------
    def lookup(self, path: object, where: str) -> Member:
        """The member a manifest path names, following in-archive link aliases only."""
        name = safe_path(path, where)
        for _ in range(_MAX_LINK_HOPS):
            if name in self.files:
                return self.files[name]
            link = self.links.get(name)
            if link is None:
                raise InvalidArchiveError(f"{where}: {path!r:.200}: no such file in the archive")
            kind, target = link
            joined = target if kind == "hard" else posixpath.join(posixpath.dirname(name),
                                                                   target)
            resolved = clean_member_name(joined) if not target.startswith("/") else None
            if resolved is None:
                raise InvalidArchiveError(f"{where}: archive entry {name!r} is a link to "
                                          f"{target[:200]!r}, outside the archive")
            name = resolved
        raise InvalidArchiveError(f"{where}: {path!r:.200}: too many levels of links")

    def blob(self, digest: str, size: int | None, where: str) -> Member:
        """``blobs/<alg>/<hex>`` of an OCI layout, checked against its descriptor."""
        validate_digest(digest, where)
        alg, _, hexpart = digest.partition(":")
        member = self.lookup(f"blobs/{alg}/{hexpart}", where)
        if member.digest != digest:
            raise VerificationError(f"{where}: blob {digest}: content digest is "
                                    f"{member.digest}")
        if size is not None and member.size != size:
            raise VerificationError(f"{where}: blob {digest}: size {member.size} does not "
                                    f"match the descriptor's {size}")
        return member

    def doc(self, name: str) -> bytes | None:
        return self.docs.get(name)

    # cleanup -------------------------------------------------------------------------------
    def discard_unused(self) -> None:
        """Delete the blobs this load created that no image references."""
        db = self.store.db
        for digest in sorted(self.new_blobs):
            with self.store.blobs.lock(digest):
                used = db.conn.execute(
                    "SELECT 1 FROM images WHERE id = ? OR manifest_digest = ? UNION ALL "
                    "SELECT 1 FROM image_layers WHERE blob_digest = ? LIMIT 1",
                    (digest, digest, digest)).fetchone()
                if not used:
                    self.store.blobs.delete(digest)
        self.new_blobs.clear()

    def put_new(self, data: bytes) -> str:
        existed_digest = hashlib.sha256(data).hexdigest()
        existed = self.store.blobs.has(f"sha256:{existed_digest}")
        digest = self.store.blobs.put(data)
        if not existed:
            self.new_blobs.add(digest)
        return digest


def _blob_name_digest(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256":
        digest = f"sha256:{parts[2]}"
        try:
            return validate_digest(digest)
        except ConfigError:
            return None
    return None


def load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InvalidArchiveError(f"{where}: invalid JSON: {e}") from None


def parse_ref(text: object, where: str) -> Reference:
    if not isinstance(text, str):
        raise InvalidArchiveError(f"{where}: expected a reference string, got {text!r:.80}")
    try:
        ref = parse_reference(text, what=where)
    except ConfigError as e:
        raise InvalidArchiveError(str(e)) from None
    if ref.digest:
        raise InvalidArchiveError(f"{where}: {text!r}: a tag, not a digest, is expected")
    return ref


# the load ------------------------------------------------------------------------------------
@adds_content
def load_archive(store: ImageStore, stream: BinaryIO, *, limits: ArchiveLimits | None = None,
                 platform: oci.Platform | None = None) -> list[LoadedImage]:
    """Load every image of a docker-archive or OCI archive read from ``stream``."""
    from isobox.images.archive import docker_archive, oci_layout

    spool = Spool(store, limits or ArchiveLimits())
    try:
        spool.read(stream)
        if "manifest.json" in spool.docs:
            prepared = docker_archive.prepare(spool)
        elif "index.json" in spool.docs:
            prepared = oci_layout.prepare(spool, platform or oci.host_platform())
        else:
            raise InvalidArchiveError("not an image archive: it has neither manifest.json "
                                      "(docker-archive) nor index.json (OCI layout)")
        if not prepared:
            raise InvalidArchiveError("the archive contains no image")
        for image in prepared:  # unpack and verify every layer before anything is visible
            for i, layer in enumerate(image.layers):
                try:
                    store.ensure_layer(layer.diff_id, layer.blob_digest, layer.media_type)
                except VerificationError as e:
                    raise VerificationError(f"invalid diffID for layer {i}: {e}") from None
        loaded = [LoadedImage(store.commit_image(p.manifest_digest, p.refs,
                                                 declared_media_type=p.media_type),
                              tuple(p.refs)) for p in prepared]
    finally:
        spool.discard_unused()
    return loaded

