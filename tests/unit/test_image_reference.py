"""Image references and digests: Docker's normalization, strict parsing (catalogue case 38)."""

from __future__ import annotations

import pytest

from isobox.errors import ConfigError
from isobox.images.reference import parse_reference
from isobox.oci.digest import short_sha256_hex, small_digest_of, validate_digest

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "full", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("me/app", "docker.io/me/app:latest", "me/app:latest"),
    ("localhost/app:v1", "localhost/app:v1", "localhost/app:v1"),
    ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
    (f"quay.io/x/y@{D}", f"quay.io/x/y@{D}", f"quay.io/x/y@{D}"),
    (f"reg:5000/y:t@{D}", f"reg:5000/y:t@{D}", f"reg:5000/y:t@{D}"),
    ("index.docker.io/library/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
])
def test_normalizes_like_docker(text: str, full: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.familiar == familiar


@pytest.mark.parametrize("text", [
    "", "Upper", "lib/Case", "a/../b", "../etc", "/abs", "name:", "name:-bad", "a//b", "a b",
    "name@sha256:abc", "name@foo:" + "a" * 64, "x" * 300, "name:" + "t" * 129, " busybox",
])
def test_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_reference(text)


@pytest.mark.parametrize("digest", [
    "sha256:../../../var/tmp/canary/x", "sha256:" + "a" * 63, "sha256:" + "a" * 65,
    "sha256:" + "A" * 64, "foo:abc", "sha256", "", "sha512:" + "a" * 64, "md5:" + "a" * 32,
])
def test_digest_parser_is_strict(digest: str) -> None:
    with pytest.raises(ConfigError):
        validate_digest(digest)


def test_digest_parser_accepts_sha256_and_sha512() -> None:
    assert validate_digest(D) == D
    assert validate_digest("sha512:" + "0" * 128)


@pytest.mark.parametrize("data", [b"", b"/var/lib/isobox", bytes(range(256)) * 300])
def test_small_digests_match_hashlib(data: bytes) -> None:
    """The interpreter's built-in SHA-2 (no OpenSSL load) gives hashlib's digests."""
    import hashlib

    assert small_digest_of("sha256", data) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert small_digest_of("sha512", data) == "sha512:" + hashlib.sha512(data).hexdigest()
    text = data.decode("latin-1")
    assert short_sha256_hex(text) == hashlib.sha256(text.encode()).hexdigest()
