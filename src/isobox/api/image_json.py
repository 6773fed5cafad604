"""Docker's JSON shapes for images: ``GET /images/json`` entries, ``/images/{name}/json``,
``/history``, ``rmi`` reports, and the ``X-Registry-Auth`` header.

Below API 1.44 dockerd lists an untagged image with ``<none>:<none>`` / ``<none>@<none>``
(and the CLI prints ``<none>``); ``Created`` is an integer there, RFC 3339 in inspect."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from isobox.api.errors import ApiError
from isobox.images.inspect import familiar, history, inspect_image
from isobox.images.listing import created_unix
from isobox.images.store import ImageRecord


def _labels(rec: ImageRecord) -> dict[str, str]:
    return dict((rec.config.raw.get("config") or {}).get("Labels") or {})


def image_summary(rec: ImageRecord, refs: list[str] | None = None,
                  containers: int = -1) -> dict[str, Any]:
    """One entry of ``GET /images/json`` (API 1.41: ``VirtualSize`` still there); ``refs``:
    the references to show (default: all)."""
    refs = list(rec.refs) if refs is None else refs
    return {
        "Id": rec.id,
        "ParentId": "",
        "RepoTags": [familiar(r) for r in refs if "@" not in r] or ["<none>:<none>"],
        "RepoDigests": [familiar(r) for r in refs if "@" in r] or ["<none>@<none>"],
        "Created": int(created_unix(rec.created)),
        "Size": rec.size,
        "SharedSize": -1,
        "VirtualSize": rec.size,
        "Labels": _labels(rec) or None,
        "Containers": containers,
    }


def image_inspect(rec: ImageRecord) -> dict[str, Any]:
    """``GET /images/{name}/json``: the store's inspect plus the fields of API 1.41."""
    out = inspect_image(rec)
    out.update({"Container": "", "ContainerConfig": None, "DockerVersion": "",
                "VirtualSize": rec.size,
                "GraphDriver": {"Name": "overlay2", "Data": None}})
    return out


def image_history(rec: ImageRecord, layer_sizes: dict[str, int]) -> list[dict[str, Any]]:
    return [{**row, "Created": int(created_unix(str(row["Created"])))}
            for row in history(rec, layer_sizes)]


def removal_report(lines: list[str]) -> list[dict[str, str]]:
    """``Untagged: x`` / ``Deleted: sha256:…`` lines → Docker's ``DELETE /images`` list."""
    out = []
    for line in lines:
        kind, _, what = line.partition(": ")
        out.append({kind: what})
    return out


def registry_credentials(header: str | None) -> tuple[str, str] | None:
    """``X-Registry-Auth``: base64url JSON ``{username, password, serveraddress, …}``;
    None when absent or empty (``e30=``: the stored credentials apply)."""
    if not header or not header.strip():
        return None
    text = header.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ApiError(400, "X-Registry-Auth: invalid base64-encoded JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "X-Registry-Auth: expected a JSON object")
    user, password = doc.get("username") or "", doc.get("password") or ""
    if doc.get("identitytoken") and not password:
        user, password = user or "<token>", str(doc["identitytoken"])
    if not isinstance(user, str) or not isinstance(password, str):
        raise ApiError(400, "X-Registry-Auth: username and password must be strings")
    if not user and not password:
        return None
    return user, password
