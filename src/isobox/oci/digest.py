"""Content digests (``sha256:<64 hex>``), parsed strictly before any path or network use.

Catalogue case 38: a digest becomes a file name under ``blobs/``, so only the two algorithms of
the image spec are accepted, with lower-case hex of the exact length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from isobox.errors import ConfigError

if TYPE_CHECKING:
    import hashlib

# The interpreter's built-in SHA-2 hashes names, paths and small documents (manifests and
# configs, re-verified on every `run`). Importing hashlib loads its OpenSSL binding, ~4 ms a
# process here, which every CLI command paid; blobs and layers (megabytes, where OpenSSL is
# faster) still use hashlib.
def _small_hashers() -> dict[str, Callable[[bytes], hashlib._Hash]]:
    for sha256_module, sha512_module in (("_sha256", "_sha512"), ("_sha2", "_sha2")):  # 3.11, 3.12+
        try:
            sha256, sha512 = __import__(sha256_module).sha256, __import__(sha512_module).sha512
        except (ImportError, AttributeError):
            continue
        return {"sha256": sha256, "sha512": sha512}
    import hashlib

    return {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


_SMALL_HASHERS = _small_hashers()

_HEX = frozenset("0123456789abcdef")
_LENGTHS = {"sha256": 64, "sha512": 128}


def validate_digest(digest: object, where: str = "digest") -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>``, else raise."""
    if not isinstance(digest, str):
        raise ConfigError(where, f"digest must be a string, not {type(digest).__name__}")
    algo, sep, hexpart = digest.partition(":")
    if not sep or algo not in _LENGTHS:
        raise ConfigError(where, f"unsupported digest algorithm in {digest[:80]!r}")
    if len(hexpart) != _LENGTHS[algo] or not _HEX.issuperset(hexpart):
        raise ConfigError(where, f"invalid digest {digest[:160]!r}: expected {algo}:"
                                 f"{_LENGTHS[algo]} lower-case hex digits")
    return digest


def is_digest(text: str) -> bool:
    try:
        validate_digest(text)
    except ConfigError:
        return False
    return True


def hex_of(digest: str) -> str:
    return validate_digest(digest).partition(":")[2]


def algorithm_of(digest: str) -> str:
    return validate_digest(digest).partition(":")[0]


def hasher(digest: str) -> hashlib._Hash:
    """A fresh hash object of the algorithm ``digest`` uses."""
    import hashlib

    return hashlib.new(algorithm_of(digest))


def new_sha256() -> hashlib._Hash:
    import hashlib

    return hashlib.sha256()


def sha256_of(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def small_digest_of(algorithm: str, data: bytes) -> str:
    """``<algorithm>:<hex>`` of a small document (a few MiB at most) without hashlib."""
    return f"{algorithm}:{_SMALL_HASHERS[algorithm](data).hexdigest()}"


def short_sha256_hex(text: str) -> str:
    """The SHA-256 hex digest of a short text (a name, a path) without hashlib."""
    return _SMALL_HASHERS["sha256"](text.encode()).hexdigest()
