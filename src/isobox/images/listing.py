"""Image list filters as ``docker images --filter`` reads them: ``reference`` (a ``path.Match``
pattern over the familiar ``name:tag`` or the name alone), ``dangling``, ``label`` (``key`` or
``key=value``), ``before`` and ``since`` (another image, by creation time)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

from isobox.errors import ConfigError
from isobox.images.reference import parse_reference
from isobox.images.store import ImageRecord, ImageStore

FILTER_KEYS = ("reference", "dangling", "label", "before", "since")


def created_unix(text: str) -> float:
    """An image's RFC 3339 ``created`` (nanoseconds allowed) as seconds; 0 when unset."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?",
                     text.strip())
    if not m:
        return 0.0
    zone = m.group(3) or "Z"
    when = datetime.datetime.fromisoformat(m.group(1) + ("+00:00" if zone == "Z" else zone))
    return when.timestamp() + float("0." + (m.group(2) or "0"))


def path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never cross a ``/``; ``[…]`` classes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise ConfigError("reference", f"malformed pattern {pattern!r}")
            body = pattern[i + 1:end]
            body = "^" + body[1:] if body.startswith("^") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), name) is not None


def reference_matches(ref: str, patterns: list[str]) -> bool:
    """``ref`` (stored form) matches a pattern as ``name:tag``/``name@digest`` or ``name``."""
    familiar = parse_reference(ref).familiar
    name = familiar.partition("@")[0]
    if ":" in name.rpartition("/")[2]:
        name = name.rpartition(":")[0]
    return any(path_match(p, familiar) or path_match(p, name) for p in patterns)


def shown_refs(rec: ImageRecord, filters: dict[str, list[str]]) -> list[str]:
    """The references a list entry shows: with a ``reference`` filter, only the matching
    ones (as dockerd)."""
    patterns = filters.get("reference")
    return [r for r in rec.refs if not patterns or reference_matches(r, patterns)]


def _labels_match(rec: ImageRecord, wanted: list[str]) -> bool:
    labels = (rec.config.raw.get("config") or {}).get("Labels") or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _bool(key: str, values: list[str]) -> bool:
    if len(values) != 1 or values[0].lower() not in ("true", "false", "1", "0"):
        raise ConfigError(key, f"invalid filter '{key}={','.join(values)}'")
    return values[0].lower() in ("true", "1")


def filter_images(store: ImageStore, images: Iterable[ImageRecord],
                  filters: dict[str, list[str]]) -> list[ImageRecord]:
    """The images that pass every filter; ConfigError for an unknown key or bad value."""
    for key in filters:
        if key not in FILTER_KEYS:
            raise ConfigError("filters", f"invalid filter '{key}'")
    dangling = _bool("dangling", filters["dangling"]) if filters.get("dangling") else None
    before = [created_unix(store.resolve(v).created) for v in filters.get("before") or []]
    since = [created_unix(store.resolve(v).created) for v in filters.get("since") or []]
    out = []
    for rec in images:
        if dangling is not None and bool(rec.tags) == dangling:
            continue
        if filters.get("reference") and not shown_refs(rec, filters):
            continue
        if filters.get("label") and not _labels_match(rec, filters["label"]):
            continue
        created = created_unix(rec.created)
        if any(created >= b for b in before) or any(created <= s for s in since):
            continue
        out.append(rec)
    return out
