"""Container endpoints answered with one JSON body (or none): create, the lifecycle verbs,
list, inspect, top, changes, resize, rename, update, prune. Streams are in
:mod:`.routes_container_io`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isobox.api.docker_json import (
    container_summary,
    create_options,
    docker_inspect,
    parse_filters,
)
from isobox.api.errors import ApiError
from isobox.api.routing import route
from isobox.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState

LIVE = ("running", "paused", "restarting")


@route("POST", "/containers/create")
def create(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.api.policy import admit, audit
    from isobox.engine.create import create_container

    opts = create_options(ex.json_body(), ex.arg("name"))
    lifted = admit(opts, state.allow_privileged)
    with state.engine() as engine:
        try:
            image = engine.store.resolve(opts.image)
        except NotFoundError:
            raise NotFoundError(f"No such image: {opts.image}") from None
        warnings: list[str] = []
        row = create_container(engine, opts, image=image, warn=warnings.append)
    if lifted:
        audit(row.id, lifted)
    ex.send_json(201, {"Id": row.id, "Warnings": warnings})


@route("POST", "/containers/{id}/start")
def start(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.api.attach import start_with_attaches

    with state.engine() as engine:
        row = engine.get(params["id"])
        if engine.effective_status(row) == "running":
            ex.send(304)
            return
        start_with_attaches(state, engine, row.id)
    ex.send(204)


@route("POST", "/containers/{id}/stop")
def stop(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.stop import stop_container

    timeout = ex.int_arg("t")
    with state.engine() as engine:
        row = engine.get(params["id"])
        if engine.effective_status(row) not in LIVE:
            ex.send(304)
            return
        stop_container(engine, row.id, timeout, ex.arg("signal"))
    ex.send(204)


@route("POST", "/containers/{id}/restart")
def restart(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.stop import restart_container

    with state.engine() as engine:
        restart_container(engine, params["id"], ex.int_arg("t"))
    ex.send(204)


@route("POST", "/containers/{id}/kill")
def kill(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.stop import kill_container, settle_exit, signal_number

    sig = ex.arg("signal") or "KILL"
    with state.engine() as engine:
        row = kill_container(engine, params["id"], sig)
        if signal_number(sig) == 9:
            settle_exit(engine, row.id)
    ex.send(204)


@route("POST", "/containers/{id}/pause")
def pause(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.stop import pause_container

    with state.engine() as engine:
        pause_container(engine, params["id"])
    ex.send(204)


@route("POST", "/containers/{id}/unpause")
def unpause(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.stop import unpause_container

    with state.engine() as engine:
        unpause_container(engine, params["id"])
    ex.send(204)


@route("DELETE", "/containers/{id}")
def remove(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.remove import remove_container

    if ex.flag("link"):
        raise ApiError(400, "link: container links are not supported")
    with state.engine() as engine:
        remove_container(engine, params["id"], force=ex.flag("force"), volumes=ex.flag("v"))
    ex.send(204)


@route("GET", "/containers/json")
def list_(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.listing import list_containers

    filters = parse_filters(ex.arg("filters"))
    pairs = [(k, v) for k, values in filters.items() for v in values]
    limit = ex.int_arg("limit", -1)
    with state.engine() as engine:
        try:
            rows = list_containers(engine, all_=ex.flag("all"),
                                   last=limit if limit and limit > 0 else -1, filters=pairs)
        except ConfigError as e:
            raise ApiError(400, e.message) from None
        out = [container_summary(engine, r, size=ex.flag("size")) for r in rows]
    ex.send_json(200, out)


@route("GET", "/containers/{id}/json")
def inspect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    with state.engine() as engine:
        row = engine.get(params["id"])
        data = docker_inspect(engine, row, size=ex.flag("size"))
    data["ExecIDs"] = state.execs.ids_of(row.id) or None
    ex.send_json(200, data)


@route("GET", "/containers/{id}/top")
def top(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    import shlex

    from isobox.engine.top import top_rows

    with state.engine() as engine:
        titles, rows = top_rows(engine, params["id"], shlex.split(ex.arg("ps_args")))
    ex.send_json(200, {"Titles": titles, "Processes": rows})


@route("GET", "/containers/{id}/changes")
def changes(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.changes import container_changes

    kinds = {"C": 0, "A": 1, "D": 2}
    with state.engine() as engine:
        found = container_changes(engine, engine.get(params["id"]))
    ex.send_json(200, [{"Path": p, "Kind": kinds[k]} for k, p in found] or None)


@route("POST", "/containers/{id}/resize")
def resize(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.attach import resize_container_terminal

    h, w = ex.int_arg("h", 0) or 0, ex.int_arg("w", 0) or 0
    if not 0 <= h <= 0xFFFF or not 0 <= w <= 0xFFFF:
        raise ApiError(400, "h, w: out of range")
    with state.engine() as engine:
        row = engine.get(params["id"])
        if engine.effective_status(row) not in LIVE:
            raise ApiError(409, f"Container {row.id} is not running")
        resize_container_terminal(engine, row, h, w)
    ex.send(200)


@route("POST", "/containers/{id}/rename")
def rename(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.update import rename_container

    with state.engine() as engine:
        rename_container(engine, params["id"], ex.arg("name"))
    ex.send(204)


@route("POST", "/containers/{id}/update")
def update(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.update import update_container

    change = _resource_update(ex.json_body())
    with state.engine() as engine:
        update_container(engine, params["id"], change)
    ex.send_json(200, {"Warnings": []})


def _resource_update(body: Any) -> Any:
    from isobox.engine.options import RestartPolicy
    from isobox.engine.parse import parse_restart
    from isobox.engine.update import ResourceUpdate

    if not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")

    def num(key: str) -> int | None:
        v = body.get(key)
        if v is None or (v == 0 and key not in ("PidsLimit",)):
            return None  # Docker: 0 leaves the value as it is
        if isinstance(v, bool) or not isinstance(v, int):
            raise ApiError(400, f"{key}: expected an integer")
        return v

    restart: RestartPolicy | None = None
    rp = body.get("RestartPolicy")
    if isinstance(rp, dict) and rp.get("Name"):
        name, count = str(rp["Name"]), rp.get("MaximumRetryCount") or 0
        try:
            restart = parse_restart(f"{name}:{count}" if name == "on-failure" and count
                                    else name)
        except ConfigError as e:
            raise ApiError(400, f"RestartPolicy: {e.message}") from None
    cpuset = body.get("CpusetCpus")
    if cpuset is not None and not isinstance(cpuset, str):
        raise ApiError(400, "CpusetCpus: expected a string")
    return ResourceUpdate(memory=num("Memory"), memory_swap=num("MemorySwap"),
                          nano_cpus=num("NanoCpus"), cpu_shares=num("CpuShares"),
                          cpuset_cpus=cpuset or None, pids_limit=num("PidsLimit"),
                          restart=restart)


@route("POST", "/containers/prune")
def prune(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.prune import (
        CONTAINER_PRUNE_FILTERS,
        PruneReport,
        prune_containers,
        prune_filters,
    )

    filters = prune_filters(parse_filters(ex.arg("filters")), CONTAINER_PRUNE_FILTERS)
    report = PruneReport()
    with state.engine() as engine:
        prune_containers(engine, report, filters)
    ex.send_json(200, {"ContainersDeleted": report.containers or None,
                       "SpaceReclaimed": report.space_reclaimed})
