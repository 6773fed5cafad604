"""The content store: blobs named by their digest, verified while written and before use.

Layout under the store root (every directory 0700, catalogue case 33)::

    blobs/sha256/<hex>     committed, verified content
    ingest/<hex>.partial   a download in progress (resumable: re-hashed on reopen)
    ingest/<hex>.lock      flock held by whoever writes that digest (concurrent pulls wait)
    ingest/tmp-*           content whose digest is not known in advance

A blob becomes visible only by ``rename`` after its size and digest matched.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from isobox.errors import NotFoundError, VerificationError
from isobox.filelock import locked_file
from isobox.oci.digest import (
    algorithm_of,
    hasher,
    hex_of,
    new_sha256,
    small_digest_of,
    validate_digest,
)

CHUNK = 1 << 20


def makedirs_private(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


class BlobWriter:
    """Streams content into the ingest area; :meth:`commit` verifies and publishes it."""

    def __init__(self, store: BlobStore, expected: str | None, size: int | None,
                 resumable: bool) -> None:
        self._store = store
        self.expected = expected
        self.expected_size = size
        self._hash = hasher(expected) if expected else new_sha256()
        if expected and resumable:
            self.path = os.path.join(store.ingest_dir, f"{hex_of(expected)}.partial")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        else:
            import tempfile  # here: reading blobs (`run`, `push`) does without it

            fd, self.path = tempfile.mkstemp(prefix="tmp-", dir=store.ingest_dir)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while writing: clean_ingest skips it
        self._file: BinaryIO = os.fdopen(fd, "r+b")
        self.offset = 0
        for chunk in iter(lambda: self._file.read(CHUNK), b""):  # resume: hash what is there
            self._hash.update(chunk)
            self.offset += len(chunk)
        if size is not None and self.offset > size:
            self.discard_partial()

    def discard_partial(self) -> None:
        """Start over (the server ignored our Range request, or the partial is too long)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hasher(self.expected) if self.expected else new_sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        self.offset += len(data)
        if self.expected_size is not None and self.offset > self.expected_size:
            raise VerificationError(f"blob {self.expected}: more data than the descriptor's "
                                    f"size {self.expected_size}")
        self._hash.update(data)
        self._file.write(data)

    def copy_from(self, stream: BinaryIO) -> None:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            self.write(chunk)

    def commit(self) -> str:
        """Verify size and digest, publish, and return the digest."""
        self._file.flush()
        self._file.close()
        algo = self.expected.partition(":")[0] if self.expected else "sha256"
        actual = f"{algo}:{self._hash.hexdigest()}"
        try:
            if self.expected_size is not None and self.offset != self.expected_size:
                raise VerificationError(f"blob {self.expected or actual}: size {self.offset} does "
                                        f"not match the expected size {self.expected_size}")
            if self.expected and actual != self.expected:
                raise VerificationError(f"unexpected commit digest {actual}, expected "
                                        f"{self.expected}")
        except VerificationError:
            self.abort()
            raise
        os.rename(self.path, self._store.path(actual))
        return actual

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close_keep_partial(self) -> None:
        """Stop without committing; a resumable partial stays for the next attempt."""
        if not self._file.closed:
            self._file.close()
        if not self.path.endswith(".partial"):
            self.abort()


class BlobStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.blob_dir = os.path.join(root, "blobs", "sha256")
        self.ingest_dir = os.path.join(root, "ingest")
        for d in (root, os.path.join(root, "blobs"), self.blob_dir, self.ingest_dir):
            makedirs_private(d)

    def path(self, digest: str) -> str:
        validate_digest(digest)
        if not digest.startswith("sha256:"):
            raise VerificationError(f"only sha256 content is stored locally, not {digest}")
        return os.path.join(self.blob_dir, digest[7:])

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the store") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the store") from None
        return os.fdopen(fd, "rb")

    def read(self, digest: str, max_size: int = 4 << 20) -> bytes:
        """The whole blob, re-verified (small documents: manifests, configs)."""
        with self.open(digest) as f:
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise VerificationError(f"blob {digest} is larger than {max_size} bytes")
        if small_digest_of(algorithm_of(digest), data) != digest:
            raise VerificationError(f"blob {digest} is corrupt in the store")
        return data

    def writer(self, expected: str | None = None, size: int | None = None, *,
               resumable: bool = False) -> BlobWriter:
        return BlobWriter(self, expected, size, resumable)

    def put(self, data: bytes, expected: str | None = None) -> str:
        if expected and self.has(expected):
            return expected
        w = self.writer(expected, len(data) if expected else None)
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        return w.commit()

    def put_stream(self, stream: BinaryIO, expected: str | None = None,
                   size: int | None = None) -> str:
        w = self.writer(expected, size)
        try:
            w.copy_from(stream)
        except BaseException:
            w.abort()
            raise
        return w.commit()

    @contextmanager
    def lock(self, digest: str) -> Iterator[None]:
        """Exclusive per-digest lock: concurrent pulls of one blob do the work once."""
        with locked_file(os.path.join(self.ingest_dir, f"{hex_of(digest)}.lock")):
            yield

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def digests(self) -> Iterator[str]:
        for name in os.listdir(self.blob_dir):
            yield f"sha256:{name}"

    def clean_ingest(self) -> int:
        """Remove abandoned ingest files (no writer holds their flock); returns bytes freed."""
        freed = 0
        for name in os.listdir(self.ingest_dir):
            if name.endswith(".lock"):
                continue
            path = os.path.join(self.ingest_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being written now
            else:
                freed += _unlink_size(path)
            finally:
                os.close(fd)
        return freed


def _unlink_size(path: str) -> int:
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return size
