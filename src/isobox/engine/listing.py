"""What ``ps`` and ``GET /containers/json`` show of a container: Docker's status text
(``Up 2 seconds``, ``Exited (0) 3 minutes ago``), its command line and the ``--filter`` /
``filters=`` matching; shared by the CLI and the API."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from isobox.engine.engine import ACTIVE
from isobox.engine.state import ContainerRow
from isobox.errors import ConfigError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine


def human_duration(secs: float) -> str:
    """Docker's go-units HumanDuration: ``Less than a second``, ``5 seconds``, ``3 minutes``."""
    s = int(secs)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def status_text(engine: Engine, row: ContainerRow, now: float | None = None) -> str:
    now = time.time() if now is None else now
    status = engine.effective_status(row)
    if status == "running":
        from isobox.engine.health import status_suffix  # "(healthy)", "(health: starting)"

        return f"Up {human_duration(now - row.started_at)}{status_suffix(row)}"
    if status == "paused":
        return f"Up {human_duration(now - row.started_at)} (Paused)"
    if status == "restarting":
        return f"Restarting ({row.exit_code}) {human_duration(now - row.finished_at)} ago"
    if status == "exited":
        return f"Exited ({row.exit_code}) {human_duration(now - row.finished_at)} ago"
    if status == "removing":
        return "Removal In Progress"
    return status.capitalize()


def command_args(engine: Engine, row: ContainerRow) -> list[str]:
    """The argv the container runs (from its bundle; the request's command as a fallback)."""
    try:
        with open(os.path.join(engine.layout.container_dir(row.id), "config.json")) as f:
            return [str(a) for a in json.load(f)["process"]["args"]]
    except (OSError, ValueError, KeyError, TypeError):
        return [str(a) for a in row.options.get("command") or []]


def _label_match(row: ContainerRow, text: str) -> bool:
    labels = row.options.get("labels") or {}
    key, sep, value = text.partition("=")
    return key in labels and (not sep or labels[key] == value)


STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def check_filters(engine: Engine, filters: Iterable[tuple[str, str]]
                  ) -> dict[str, list[str]]:
    """Docker's ``ps`` filters grouped by key, every key and value checked before any
    container is looked at (so a bad filter fails even when nothing would be listed);
    ``since``/``before`` become the creation time of the container they name."""
    from isobox.engine.health import STATUSES as HEALTH

    by: dict[str, list[str]] = {}
    for k, v in filters:
        if k not in FILTERS:
            raise ConfigError("--filter", f"invalid filter '{k}'")
        if k == "status" and v not in STATUSES:
            raise ConfigError("--filter", f"Unrecognised filter value for status: {v}")
        if k == "health" and v not in HEALTH:
            raise ConfigError("--filter", f"Unrecognised filter value for health: {v}")
        if k == "exited" and not v.lstrip("-").isdigit():
            raise ConfigError("--filter", f"invalid filter 'exited={v}': not an exit code")
        if k in ("since", "before"):
            v = repr(engine.get(v).created)  # NotFoundError names it
        if k == "ancestor":
            v = _image_id(engine, v)
        by.setdefault(k, []).append(v)
    return by


def _networks_of(row: ContainerRow) -> set[str]:
    """The mode (bridge, host, none, a network) and every network the container joins."""
    from isobox.engine.networking import endpoint_configs

    return {str(row.options.get("network") or "bridge"), *endpoint_configs(row.options)}


def _image_id(engine: Engine, ref: str) -> str:
    """``ancestor=busybox:latest`` (or an id, with or without ``sha256:``) as the image id;
    an image not in the store is matched by the reference its containers were run with."""
    from isobox.errors import IsoboxError

    try:
        return engine.store.resolve(ref).id
    except IsoboxError:
        return ref


FILTERS = ("id", "name", "status", "ancestor", "exited", "label", "network", "health",
           "isolation", "since", "before")


def matches(engine: Engine, row: ContainerRow, by: dict[str, list[str]]) -> bool:
    """Every key must match one of its values (filters from :func:`check_filters`)."""
    from isobox.engine.filters import text_matches
    from isobox.engine.health import health_state

    checks: dict[str, Callable[[str], bool]] = {  # name and id: Docker's regular expressions
        "id": lambda v: text_matches(v, row.id),
        "name": lambda v: text_matches(v, row.name) or text_matches(v, "/" + row.name),
        "status": lambda v: engine.effective_status(row) == v,
        "ancestor": lambda v: v in (row.image_ref, row.image_id),
        "exited": lambda v: engine.effective_status(row) == "exited" and str(row.exit_code) == v,
        "label": lambda v: _label_match(row, v),
        "network": lambda v: v in _networks_of(row),
        "health": lambda v: health_state(row) == v,
        "isolation": lambda v: (row.options.get("isolation") or "container") == v,
        "since": lambda v: row.created > float(v),
        "before": lambda v: row.created < float(v),
    }
    return all(any(checks[key](v) for v in values) for key, values in by.items())


def list_containers(engine: Engine, *, all_: bool = False, last: int = -1,
                    filters: Iterable[tuple[str, str]] = ()) -> list[ContainerRow]:
    """``ps [-a] [-n N] [--filter …]``: newest first (the state store's order)."""
    by = check_filters(engine, filters)
    rows = engine.list()
    if last > 0:  # -n 0 (or less): no limit, as Docker's
        rows = rows[:last]
        all_ = True
    if "status" in by or "exited" in by:  # they ask about stopped containers: Docker's all
        all_ = True
    if not all_:
        rows = [r for r in rows if engine.effective_status(r) in ACTIVE]
    return [r for r in rows if matches(engine, r, by)]
