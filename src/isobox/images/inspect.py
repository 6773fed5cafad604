"""Docker-shaped views of stored images: ``image inspect``, ``image history``, ``image ls``."""

from __future__ import annotations

from typing import Any

from isobox.images.reference import parse_reference
from isobox.images.store import ImageRecord


def familiar(ref: str) -> str:
    return parse_reference(ref).familiar


def inspect_image(rec: ImageRecord) -> dict[str, Any]:
    raw = rec.config.raw
    return {
        "Id": rec.id,
        "RepoTags": [familiar(r) for r in rec.tags],
        "RepoDigests": [familiar(r) for r in rec.repo_digests],
        "Parent": "",
        "Comment": raw.get("comment", ""),
        "Created": raw.get("created", ""),
        "Author": raw.get("author", ""),
        "Config": _docker_config(raw.get("config") or {}),
        "Architecture": raw.get("architecture", ""),
        "Variant": raw.get("variant") or None,
        "Os": raw.get("os", ""),
        "Size": rec.size,
        "RootFS": {"Type": "layers", "Layers": list(rec.config.diff_ids)},
        "Descriptor": {"mediaType": rec.manifest_media_type, "digest": rec.manifest_digest,
                       "size": rec.manifest_size},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }


def _docker_config(cfg: dict[str, Any]) -> dict[str, Any]:
    keys = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr",
            "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck",
            "Image", "Volumes", "WorkingDir", "Entrypoint", "OnBuild", "Labels", "StopSignal",
            "Shell")
    defaults: dict[str, Any] = {"Hostname": "", "Domainname": "", "User": "",
                                "AttachStdin": False, "AttachStdout": False,
                                "AttachStderr": False, "Tty": False, "OpenStdin": False,
                                "StdinOnce": False, "Env": None, "Cmd": None, "Image": "",
                                "Volumes": None, "WorkingDir": "", "Entrypoint": None,
                                "OnBuild": None, "Labels": None}
    return {k: cfg.get(k, defaults.get(k)) for k in keys if k in cfg or k in defaults}


def history(rec: ImageRecord, layer_sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Newest first, as ``docker history``: one row per history entry, each non-empty entry
    matched to the next layer (and its unpacked size), the top row carrying the image ID."""
    entries = rec.config.raw.get("history") or []
    rows: list[dict[str, Any]] = []
    next_layer = 0
    for h in entries:
        size = 0
        if not h.get("empty_layer") and next_layer < len(rec.layers):
            size = layer_sizes.get(rec.layers[next_layer].diff_id, 0)
            next_layer += 1
        rows.append({"Id": "<missing>", "Created": h.get("created", ""),
                     "CreatedBy": h.get("created_by", ""), "Size": size,
                     "Comment": h.get("comment", ""), "Tags": None})
    if not rows:
        rows = [{"Id": "<missing>", "Created": rec.created, "CreatedBy": "", "Size": rec.size,
                 "Comment": "", "Tags": None}]
    rows.reverse()
    rows[0]["Id"] = rec.id
    rows[0]["Tags"] = [familiar(r) for r in rec.tags] or None
    return rows
