"""``/_ping``, ``/version``, ``/info``, ``/events`` and the swarm stub docker-py needs."""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING

from isobox import __version__
from isobox.api.errors import ApiError
from isobox.api.routing import API_VERSION, MIN_API_VERSION, route

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState

PING_HEADERS = {"Builder-Version": "1", "Swarm": "inactive",
                "Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}


@route("GET", "/_ping")
@route("HEAD", "/_ping")
def ping(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    ex.send(200, b"OK", headers=PING_HEADERS)


def version_info() -> dict[str, object]:
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
               "Arch": _arch(), "KernelVersion": platform.release(), "Experimental": "false",
               "GitCommit": "", "GoVersion": f"python{platform.python_version()}",
               "BuildTime": ""}
    return {"Platform": {"Name": "isobox"},
            "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
            "Version": __version__, "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION, "GitCommit": "",
            "GoVersion": f"python{platform.python_version()}", "Os": "linux", "Arch": _arch(),
            "KernelVersion": platform.release(), "Experimental": False, "BuildTime": ""}


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@route("GET", "/version")
def version(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    ex.send_json(200, version_info())


@route("GET", "/info")
def info(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.info import system_info

    with state.engine() as engine:
        data = system_info(engine)
    data["Architecture"] = platform.machine()
    data["ID"] = data.get("ID") or platform.node()
    ex.send_json(200, data)


@route("GET", "/events")
def events(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """The engine's journal as JSON lines, followed until ``until`` or the client leaves."""
    from isobox.api.docker_json import parse_filters
    from isobox.engine import events as ev

    now = time.time()
    filters = parse_filters(ex.arg("filters"), "filters")
    unknown = set(filters) - set(ev.FILTER_KEYS)
    if unknown:
        raise ApiError(400, f"invalid filter '{sorted(unknown)[0]}'")
    since = ev.parse_time(ex.arg("since"), now) if ex.arg("since") else None
    until = ev.parse_time(ex.arg("until"), now) if ex.arg("until") else None
    with state.engine() as engine:
        out = ex.stream()
        for e in ev.stream_events(engine, since=since, until=until, filters=filters,
                                  stop=lambda: ex.client_gone() or state.stopping.is_set()):
            out.json_line(ev.event_message(e))
            out.flush()
        out.close()


@route("POST", "/swarm/leave")
def swarm_leave(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    raise ApiError(503, "This node is not part of a swarm")


@route("GET", "/system/df")
def system_df(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """Per-object disk usage; ``type=`` (repeatable) limits what is measured."""
    from isobox.api.docker_json import container_summary
    from isobox.engine.disk_usage import TYPES, disk_usage
    from isobox.engine.volumes import volume_doc

    types = tuple(ex.args("type")) or TYPES
    for t in types:
        if t not in TYPES:
            raise ApiError(400, f"type: unknown disk usage type {t!r} (expected one of "
                           f"{', '.join(TYPES)})")
    out: dict[str, object] = {}
    with state.engine() as engine:
        du = disk_usage(engine, types)
        if "images" in types:
            out["LayersSize"] = du.layers_size
            out["Images"] = [{"Id": i.id, "ParentId": "", "RepoTags": list(i.tags),
                              "RepoDigests": list(i.digests), "Created": i.created,
                              "Size": i.size, "SharedSize": i.shared_size,
                              "VirtualSize": i.size, "Labels": i.labels,
                              "Containers": i.containers} for i in du.images]
        if "containers" in types:
            out["Containers"] = [{**container_summary(engine, c.row), "SizeRw": c.size_rw,
                                  "SizeRootFs": c.size_rootfs} for c in du.containers]
    if "volumes" in types:
        out["Volumes"] = [{**volume_doc(v.info), "UsageData": {"Size": v.size,
                                                               "RefCount": v.ref_count}}
                          for v in du.volumes]
    if "build-cache" in types:
        out["BuildCache"] = []  # the classic builder's step cache has no per-entry sizes
    ex.send_json(200, out)
