"""Content digests (``sha256:<64 hex>``), parsed strictly before any path or network use.

Catalogue case 38: a digest becomes a file name under ``blobs/``, so only the two algorithms of
the image spec are accepted, with lower-case hex of the exact length.
"""

from __future__ import annotations

import hashlib

from isobox.errors import ConfigError

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
    return hashlib.new(algorithm_of(digest))


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
