"""``/volumes``: list, create, inspect, remove, prune — the ``local`` driver as
:mod:`isobox.engine.volume_admin` runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isobox.api.docker_json import _str, _str_map, parse_filters
from isobox.api.errors import ApiError
from isobox.api.routing import route

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState


@route("GET", "/volumes")
def list_(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.volume_admin import list_volumes
    from isobox.engine.volumes import volume_doc

    filters = parse_filters(ex.arg("filters"))
    with state.engine() as engine:
        vols = list_volumes(engine, filters)
    ex.send_json(200, {"Volumes": [volume_doc(v) for v in vols], "Warnings": []})


@route("POST", "/volumes/create")
def create(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.volume_admin import create_volume
    from isobox.engine.volumes import volume_doc

    body = ex.json_body(optional=True) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")
    if body.get("ClusterVolumeSpec"):
        raise ApiError(400, "ClusterVolumeSpec: cluster volumes need a swarm")
    name = _str(body, "Name", "")
    driver = _str(body, "Driver", "") or "local"
    options = _str_map(body, "DriverOpts", "")
    labels = _str_map(body, "Labels", "")
    with state.engine() as engine:
        info = create_volume(engine, name, driver=driver, labels=labels, options=options)
    ex.send_json(201, volume_doc(info))


@route("GET", "/volumes/{name}")
def inspect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    with state.engine() as engine:
        doc = engine.volumes.inspect(params["name"])
    ex.send_json(200, doc)


@route("DELETE", "/volumes/{name}")
def remove(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.volume_admin import remove_volume

    with state.engine() as engine:
        remove_volume(engine, params["name"], force=ex.flag("force"))
    ex.send(204)


@route("POST", "/volumes/prune")
def prune(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """Unused anonymous volumes; named ones too with ``all=true``, and always below API
    1.42 (what dockerd does for old clients: they pruned every unused volume)."""
    from isobox.engine.prune import (
        VOLUME_PRUNE_FILTERS,
        PruneReport,
        prune_filters,
        prune_volumes,
    )

    filters = parse_filters(ex.arg("filters"))
    if _older_than(ex.api_version, (1, 42)):
        filters["all"] = ["true"]
    report = PruneReport()
    with state.engine() as engine:
        prune_volumes(engine, report, prune_filters(filters, VOLUME_PRUNE_FILTERS))
    ex.send_json(200, {"VolumesDeleted": report.volumes or None,
                       "SpaceReclaimed": report.space_reclaimed})


def _older_than(version: str, than: tuple[int, int]) -> bool:
    major, _, minor = version.partition(".")
    return (int(major), int(minor)) < than
