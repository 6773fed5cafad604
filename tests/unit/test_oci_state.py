"""isobox.oci.state: the State document runc's ``state`` prints."""

from __future__ import annotations

import pytest

from isobox.oci.state import OCI_VERSION, make_state


def test_shape_and_order() -> None:
    st = make_state("c1", "running", 42, "/b", {"k": "v"}, "2026-11-26T15:00:00.5Z", "root")
    assert list(st) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created",
                        "annotations", "owner"]
    assert st == {
        "ociVersion": OCI_VERSION, "id": "c1", "pid": 42, "status": "running", "bundle": "/b",
        "rootfs": "/b/rootfs", "created": "2026-11-26T15:00:00.5Z", "annotations": {"k": "v"},
        "owner": "root",
    }


def test_defaults() -> None:
    st = make_state("c1", "stopped", 0, "/b/", None, None, rootfs="/elsewhere")
    assert "annotations" not in st  # omitempty, as runc
    assert st["created"] == "0001-01-01T00:00:00Z"
    assert st["owner"] == ""
    assert st["rootfs"] == "/elsewhere"
    assert make_state("c1", "created", 1, "/b/", {}, None)["rootfs"] == "/b/rootfs"


def test_annotations_are_copied() -> None:
    ann = {"a": "b"}
    st = make_state("c1", "created", 1, "/b", ann, None)
    st["annotations"]["x"] = "y"
    assert ann == {"a": "b"}


def test_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown container status 'exited'"):
        make_state("c1", "exited", 0, "/b", None, None)
