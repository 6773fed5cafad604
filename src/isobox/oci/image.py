"""OCI image-spec and Docker v2 documents: media types, descriptors, manifests, indexes and
image configs, validated with errors that name the document and JSON path.

Catalogue case 39 (media-type confusion): a manifest must not carry ``manifests`` and an index
must not carry ``layers``; schema 1 is refused; the caller always parses the exact bytes whose
digest it verified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from isobox.errors import ConfigError
from isobox.oci.digest import validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_NONDIST_GZIP,
               DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER,
               "application/vnd.oci.image.layer.v1.tar+xz")

MAX_DOCUMENT_BYTES = 4 << 20  # manifests, indexes and configs: containerd caps at 4 MiB
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class Platform:
    """An OCI platform: os, architecture and variant."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm64/v8``, ``amd64``."""
        parts = text.split("/")
        if len(parts) == 1 and parts[0]:
            return cls("linux", normalize_arch(parts[0]))
        if 2 <= len(parts) <= 3 and all(parts):
            return cls(parts[0], normalize_arch(parts[1]), parts[2] if len(parts) == 3 else "")
        raise ConfigError("--platform", f"invalid platform {text!r}: expected os/arch[/variant]")

    def matches(self, other: dict[str, Any]) -> bool:
        if other.get("os") != self.os:
            return False
        if normalize_arch(str(other.get("architecture", ""))) != self.architecture:
            return False
        return not self.variant or other.get("variant", "") == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def normalize_arch(arch: str) -> str:
    return {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}.get(arch, arch)


def host_platform() -> Platform:
    import os

    return Platform("linux", normalize_arch(os.uname().machine))


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                             "size": self.size}
        if self.platform:
            d["platform"] = self.platform
        if self.annotations:
            d["annotations"] = self.annotations
        return d


@dataclass(frozen=True)
class Manifest:
    """A validated image manifest (OCI or Docker v2.2)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]


@dataclass(frozen=True)
class Index:
    """A validated image index or Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def load_document(data: bytes, where: str) -> dict[str, Any]:
    """Parse a JSON object with bounded size and nesting."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ConfigError(where, f"document is {len(data)} bytes, over the "
                                 f"{MAX_DOCUMENT_BYTES}-byte limit")
    _check_depth(data, where)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(where, f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(where, "expected a JSON object")
    return doc


def _check_depth(data: bytes, where: str) -> None:
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ConfigError(where, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif byte in (0x5D, 0x7D):
            depth -= 1


def parse_descriptor(obj: object, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ConfigError(where, "descriptor must be an object")
    mt = obj.get("mediaType")
    if not isinstance(mt, str) or not mt:
        raise ConfigError(f"{where}.mediaType", "missing media type")
    digest = validate_digest(obj.get("digest"), f"{where}.digest")
    size = obj.get("size")
    if type(size) is not int or size < 0:
        raise ConfigError(f"{where}.size", f"invalid size {size!r}")
    platform = obj.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise ConfigError(f"{where}.platform", "must be an object")
    ann = obj.get("annotations") or {}
    if not isinstance(ann, dict):
        raise ConfigError(f"{where}.annotations", "must be an object")
    # ``urls`` (foreign layers) are ignored: content only ever comes from the registry in use.
    return Descriptor(mt, digest, size, platform, {str(k): str(v) for k, v in ann.items()})


def document_kind(doc: dict[str, Any], declared: str | None, where: str) -> str:
    """``"index"`` or ``"manifest"``: decided from the declared media type (Content-Type or the
    parent descriptor) and the document's own ``mediaType``, which must agree with its shape."""
    own = doc.get("mediaType")
    if doc.get("schemaVersion") == 1 or own in DOCKER_SCHEMA1 or declared in DOCKER_SCHEMA1:
        raise ConfigError(where, "media-type: schema 1 not supported")
    mt = own or declared
    if own and declared and declared not in ("application/json", "application/octet-stream") \
            and own != declared:
        raise ConfigError(where, f"media-type: document says {own} but was served as {declared}")
    if mt in INDEX_TYPES:
        if "layers" in doc or "config" in doc:
            raise ConfigError(where, f"media-type: expected index but found manifest ({mt})")
        return "index"
    if mt in MANIFEST_TYPES:
        if "manifests" in doc:
            raise ConfigError(where, f"media-type: expected manifest but found index ({mt})")
        return "manifest"
    if mt is None:
        if "manifests" in doc and "layers" not in doc and "config" not in doc:
            return "index"
        if "layers" in doc and "config" in doc and "manifests" not in doc:
            return "manifest"
        raise ConfigError(where, "media-type: cannot tell a manifest from an index")
    raise ConfigError(where, f"media-type: unsupported document type {mt!r}")


def parse_manifest(data: bytes, where: str = "manifest",
                   declared: str | None = None) -> Manifest:
    doc = load_document(data, where)
    if document_kind(doc, declared, where) != "manifest":
        raise ConfigError(where, "media-type: expected manifest but found index")
    if doc.get("schemaVersion") != 2:
        raise ConfigError(f"{where}.schemaVersion", "must be 2")
    config = parse_descriptor(doc.get("config"), f"{where}.config")
    if config.media_type not in CONFIG_TYPES:
        raise ConfigError(f"{where}.config.mediaType",
                          f"unsupported config media type {config.media_type!r}")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise ConfigError(f"{where}.layers", "must be a list")
    layers = tuple(parse_descriptor(d, f"{where}.layers[{i}]") for i, d in enumerate(layers_raw))
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_TYPES:
            raise ConfigError(f"{where}.layers[{i}].mediaType",
                              f"unsupported layer media type {layer.media_type!r}")
    mt = doc.get("mediaType") or declared or OCI_MANIFEST
    ann = doc.get("annotations") or {}
    return Manifest(mt, config, layers, {str(k): str(v) for k, v in dict(ann).items()})


def parse_index(data: bytes, where: str = "index", declared: str | None = None) -> Index:
    doc = load_document(data, where)
    if document_kind(doc, declared, where) != "index":
        raise ConfigError(where, "media-type: expected index but found manifest")
    raw = doc.get("manifests")
    if not isinstance(raw, list):
        raise ConfigError(f"{where}.manifests", "must be a list")
    mans = tuple(parse_descriptor(d, f"{where}.manifests[{i}]") for i, d in enumerate(raw))
    return Index(doc.get("mediaType") or declared or OCI_INDEX, mans)


def select_platform(index: Index, platform: Platform, where: str = "index") -> Descriptor:
    for d in index.manifests:
        if d.media_type in MANIFEST_TYPES and d.platform and platform.matches(d.platform):
            return d
    have = ", ".join(str(Platform(str(d.platform.get("os")), str(d.platform.get("architecture")),
                                  str(d.platform.get("variant", ""))))
                     for d in index.manifests if d.platform) or "none"
    raise ConfigError(where, f"no image for platform {platform} (available: {have})")


@dataclass(frozen=True)
class ImageConfig:
    """An image's config document and the layers' diff IDs it lists."""

    raw: dict[str, Any]
    diff_ids: tuple[str, ...]

    @property
    def config(self) -> dict[str, Any]:
        c = self.raw.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def platform(self) -> Platform:
        return Platform(str(self.raw.get("os", "linux")),
                        normalize_arch(str(self.raw.get("architecture", "amd64"))),
                        str(self.raw.get("variant", "")))


def parse_image_config(data: bytes, where: str = "config") -> ImageConfig:
    doc = load_document(data, where)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ConfigError(f"{where}.rootfs", 'must be {"type": "layers", "diff_ids": [...]}')
    raw_ids = rootfs.get("diff_ids")
    if not isinstance(raw_ids, list):
        raise ConfigError(f"{where}.rootfs.diff_ids", "must be a list")
    ids = tuple(validate_digest(d, f"{where}.rootfs.diff_ids[{i}]") for i, d in enumerate(raw_ids))
    cfg = doc.get("config")
    if cfg is not None and not isinstance(cfg, dict):
        raise ConfigError(f"{where}.config", "must be an object")
    return ImageConfig(doc, ids)


def dumps(doc: dict[str, Any]) -> bytes:
    """Canonical bytes for documents isobox writes (stable digests)."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()
