"""Manifests, indexes and configs: shape checks and media-type confusion (catalogue case 39)."""

from __future__ import annotations

import json

import pytest

from isobox.errors import ConfigError
from isobox.oci import image as oci

D = "sha256:" + "b" * 64


def _manifest(**extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": D, "size": 2},
        "layers": [{"mediaType": oci.OCI_LAYER_GZIP, "digest": D, "size": 3}]}
    doc.update(extra)
    return doc


def _b(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_parses_manifest_and_index() -> None:
    m = oci.parse_manifest(_b(_manifest()))
    assert m.config.digest == D and m.layers[0].size == 3
    idx = oci.parse_index(_b({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        {"mediaType": oci.OCI_MANIFEST, "digest": D, "size": 5,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "c" * 64, "size": 5,
         "platform": {"os": "linux", "architecture": "amd64"}}]}))
    assert oci.select_platform(idx, oci.Platform.parse("linux/amd64")).digest.endswith("c" * 64)
    assert oci.select_platform(idx, oci.Platform.parse("linux/arm64")).digest == D
    with pytest.raises(ConfigError, match="no image for platform linux/s390x"):
        oci.select_platform(idx, oci.Platform.parse("linux/s390x"))


@pytest.mark.parametrize(("doc", "declared", "message"), [
    (_manifest(manifests=[]), None, "expected manifest but found index"),
    ({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [], "layers": []}, None,
     "expected index but found manifest"),
    ({"schemaVersion": 1, "fsLayers": []}, None, "schema 1 not supported"),
    (_manifest(), oci.OCI_INDEX, "document says"),
    ({"schemaVersion": 2, "config": {}, "layers": [], "manifests": []}, None, "cannot tell"),
])
def test_media_type_confusion_is_refused(doc: dict[str, object], declared: str | None,
                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        oci.parse_manifest(_b(doc), "m", declared)


def test_index_served_where_a_manifest_is_expected() -> None:
    doc = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}
    with pytest.raises(ConfigError, match="expected manifest but found index"):
        oci.parse_manifest(_b(doc))


def test_layer_with_config_media_type_is_refused() -> None:
    doc = _manifest(layers=[{"mediaType": oci.OCI_CONFIG, "digest": D, "size": 1}])
    with pytest.raises(ConfigError, match=r"layers\[0\]\.mediaType"):
        oci.parse_manifest(_b(doc))


@pytest.mark.parametrize(("field", "value"), [
    ("digest", "sha256:../../etc/passwd"), ("size", -1), ("size", "3"), ("mediaType", ""),
])
def test_bad_descriptor_fields_are_named(field: str, value: object) -> None:
    layer = {"mediaType": oci.OCI_LAYER_GZIP, "digest": D, "size": 3, field: value}
    with pytest.raises(ConfigError, match=rf"layers\[0\]\.{field}"):
        oci.parse_manifest(_b(_manifest(layers=[layer])))


def test_documents_are_bounded() -> None:
    with pytest.raises(ConfigError, match="over the"):
        oci.load_document(b" " * (oci.MAX_DOCUMENT_BYTES + 1), "big")
    with pytest.raises(ConfigError, match="nested deeper"):
        oci.load_document(b"[" * 100 + b"]" * 100, "deep")


def test_config_diff_ids_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"diff_ids\[0\]"):
        oci.parse_image_config(_b({"rootfs": {"type": "layers", "diff_ids": ["sha256:xyz"]}}))
    cfg = oci.parse_image_config(_b({"architecture": "amd64", "os": "linux",
                                     "rootfs": {"type": "layers", "diff_ids": [D]}}))
    assert cfg.diff_ids == (D,) and str(cfg.platform) == "linux/amd64"
