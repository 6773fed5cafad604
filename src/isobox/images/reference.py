"""Image references as Docker reads them: ``[registry/]path[:tag][@digest]``.

``busybox`` means ``docker.io/library/busybox:latest``; the first component is a registry only
when it has a ``.`` or ``:`` or is ``localhost``. References become database keys and URL paths,
never file names, but they are still checked strictly (catalogue case 38).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from isobox.errors import ConfigError
from isobox.oci.digest import validate_digest

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
                     r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
                     r"|\[[0-9a-fA-F:]+\](?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: registry, repository, and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` (no tag or digest)."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def familiar(self) -> str:
        """What ``docker images`` shows: ``busybox:latest`` for ``docker.io/library/…``."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository.removeprefix("library/")
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, digest)


def parse_reference(text: str, *, default_tag: bool = True, what: str = "image reference"
                    ) -> Reference:
    """Parse and normalize; ``default_tag`` adds ``:latest`` if there is no tag or digest."""
    if not text or len(text) > 4096 or text != text.strip():
        raise ConfigError(what, f"invalid reference format: {text[:200]!r}")
    rest, _, digest = text.partition("@")
    if digest:
        validate_digest(digest, f"{what} {text!r}")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ConfigError(what, f"invalid tag {tag!r} in {text!r}")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        if not _DOMAIN.fullmatch(first):
            raise ConfigError(what, f"invalid registry {first!r} in {text!r}")
        registry, path = first, remainder
    else:
        registry, path = DEFAULT_REGISTRY, rest
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not path or len(registry) + 1 + len(path) > MAX_NAME or not all(
            _COMPONENT.fullmatch(c) for c in path.split("/")):
        raise ConfigError(what, f"invalid reference format: repository name must be lowercase "
                                f"and made of [a-z0-9._-] components: {text!r}")
    if tag is None and not digest and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest or None)


def is_reference(text: str) -> bool:
    try:
        parse_reference(text)
    except ConfigError:
        return False
    return True
