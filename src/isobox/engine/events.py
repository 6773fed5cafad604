"""``events``: the engine's event journal (the ``events`` table) filtered and shaped as
Docker's ``GET /events`` messages, read as a list or followed."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from isobox.engine.state import Event
from isobox.errors import ConfigError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

FILTER_KEYS = ("type", "event", "container", "image", "label", "network", "volume")


def parse_filters(texts: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep:
            raise ConfigError("--filter", f"bad format of filter (expected name=value): {text}")
        if key not in FILTER_KEYS:
            raise ConfigError("--filter", f"invalid filter '{key}'")
        out.setdefault(key, []).append(value)
    return out


def parse_time(text: str, now: float) -> float:
    """Docker's ``--since``/``--until``: unix seconds, RFC3339, or a duration ago (``10m``)."""
    from isobox.engine.parse import parse_duration

    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return now - parse_duration(text, "--since") / 1e9
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def matches(ev: Event, filters: dict[str, list[str]]) -> bool:
    attrs = ev.attributes
    checks: dict[str, Callable[[str], bool]] = {
        "type": lambda v: ev.type == v,
        "event": lambda v: ev.action == v or ev.action.split(":", 1)[0] == v,
        "container": lambda v: ev.type == "container" and (
            ev.actor.startswith(v) or attrs.get("name") == v),
        "image": lambda v: _image(ev, v),
        "label": lambda v: _label(attrs, v),
        "network": lambda v: ev.type == "network" and v in (ev.actor, attrs.get("name")),
        "volume": lambda v: ev.type == "volume" and ev.actor == v,
    }
    return all(any(checks[k](v) for v in vals) for k, vals in filters.items())


def _image(ev: Event, wanted: str) -> bool:
    """dockerd's matchImage: the image's id or name (``image`` attribute of a container's
    event, ``name`` of an image's), exactly or without its tag (``busybox`` matches
    ``busybox:latest``)."""
    name = ev.attributes.get("name" if ev.type == "image" else "image", "")
    candidates = {ev.actor, name, _strip_tag(ev.actor), _strip_tag(name)}
    return wanted in candidates - {""}


def _strip_tag(ref: str) -> str:
    if "@" in ref:
        return ref.split("@", 1)[0]
    repo, sep, tag = ref.rpartition(":")
    return repo if sep and "/" not in tag else ref


def _label(attrs: dict[str, str], text: str) -> bool:
    key, sep, value = text.partition("=")
    return key in attrs and (not sep or attrs[key] == value)


def event_message(ev: Event) -> dict[str, Any]:
    """Docker's events JSON (with the legacy ``status``/``id``/``from`` keys the CLI reads)."""
    nano = int(ev.time * 1e9)
    msg: dict[str, Any] = {"Type": ev.type, "Action": ev.action,
                           "Actor": {"ID": ev.actor, "Attributes": dict(ev.attributes)},
                           "scope": "local", "time": int(ev.time), "timeNano": nano}
    if ev.type == "container":
        msg.update(status=ev.action, id=ev.actor, **{"from": ev.attributes.get("image", "")})
    return msg


def event_line(ev: Event) -> str:
    """``docker events``' text line."""
    from isobox.engine.inspect import rfc3339nano

    attrs = ", ".join(f"{k}={v}" for k, v in sorted(ev.attributes.items()))
    return f"{rfc3339nano(ev.time)} {ev.type} {ev.action} {ev.actor} ({attrs})"


def stream_events(engine: Engine, *, since: float | None = None, until: float | None = None,
                  filters: dict[str, list[str]] | None = None, poll: float = 0.2,
                  follow: bool = True, stop: Callable[[], bool] | None = None
                  ) -> Iterator[Event]:
    """Events from ``since`` (default: only new ones) to ``until`` (default: forever when
    ``follow``). Ends when ``until`` has passed, or ``stop()`` says so."""
    filters = filters or {}
    seq = 0 if since is not None else engine.db.last_event_seq()
    start = since or 0.0
    while True:
        for ev in engine.db.events_after(seq, start):
            seq = ev.seq
            if until is not None and ev.time > until:
                return
            if matches(ev, filters):
                yield ev
        now = time.time()
        if not follow or (until is not None and now > until) or (stop and stop()):
            return
        time.sleep(poll if until is None else max(0.0, min(poll, until - now + 0.01)))
