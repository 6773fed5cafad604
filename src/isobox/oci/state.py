"""The runtime-spec State document, in the shape runc's ``state`` command prints."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The runtime-spec version isobox implements.
OCI_VERSION = "1.2.0"
STATUSES = frozenset(("creating", "created", "running", "paused", "stopped"))
# Go's zero time.Time, which runc prints for a container without a creation time.
ZERO_TIME = "0001-01-01T00:00:00Z"


def make_state(
    container_id: str,
    status: str,
    pid: int,
    bundle: str,
    annotations: dict[str, str] | None,
    created: str | None,
    owner: str = "",
    *,
    rootfs: str | None = None,
) -> dict[str, Any]:
    """State JSON: ``ociVersion, id, pid, status, bundle, rootfs, created, [annotations,] owner``.

    Keys are in runc's order (its ``containerState`` struct); ``annotations`` is left out when
    empty, as runc's ``omitempty`` does. ``pid`` should be 0 once the container has stopped.
    ``created`` is an RFC 3339 timestamp; ``rootfs`` defaults to ``<bundle>/rootfs``.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown container status {status!r}")
    state: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "id": container_id,
        "pid": pid,
        "status": status,
        "bundle": bundle,
        "rootfs": rootfs if rootfs is not None else bundle.rstrip("/") + "/rootfs",
        "created": created or ZERO_TIME,
    }
    if annotations:
        state["annotations"] = dict(annotations)
    state["owner"] = owner
    return state
