"""``/isobox/v1``: snapshots of any instance (container, micro-VM or system VM — what
``isobox snapshot`` does, :mod:`isobox.engine.instance_snapshots`), host information (what
``isobox system info`` prints) and the OpenAPI document of the native endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isobox.api.errors import ApiError
from isobox.api.native_json import Body, snapshot_json
from isobox.api.routing import route

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState

PREFIX = "/isobox/v1"
SNAPSHOTS = PREFIX + "/instances/{id}/snapshots"


@route("GET", SNAPSHOTS)
def snapshot_list(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.instance_snapshots import list_snapshots

    with state.engine() as engine:
        snaps = list_snapshots(engine, params["id"])
    ex.send_json(200, [snapshot_json(s) for s in snaps])


@route("POST", SNAPSHOTS)
def snapshot_create(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """A memory snapshot this host cannot take (a container without a usable CRIU) is a 501:
    the request was fine, the engine cannot do it here (the CLI exits 125 for it)."""
    from isobox.engine.instance_snapshots import MemorySnapshotUnavailable, create_snapshot

    body = Body(ex.json_body())
    name = body.text("Name")
    if not name:
        raise ApiError(400, "Name: a snapshot needs a name")
    memory = body.flag("Memory")
    with state.engine() as engine:
        try:
            snap = create_snapshot(engine, params["id"], name, memory=memory)
        except MemorySnapshotUnavailable as e:
            raise ApiError(501, str(e)) from None
    ex.send_json(201, snapshot_json(snap))


@route("POST", SNAPSHOTS + "/{name}/restore")
def snapshot_restore(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.instance_snapshots import restore_snapshot

    with state.engine() as engine:
        snap = restore_snapshot(engine, params["id"], params["name"])
    ex.send_json(200, snapshot_json(snap))


@route("DELETE", SNAPSHOTS + "/{name}")
def snapshot_remove(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.instance_snapshots import remove_snapshot

    with state.engine() as engine:
        remove_snapshot(engine, params["id"], params["name"])
    ex.send(204)


@route("GET", PREFIX + "/instances/{id}")
def instance_inspect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """``isobox inspect`` of a container, micro-VM or system VM: the engine's own document
    (``GET /containers/{id}/json`` is Docker's, which names the log driver for docker-py)."""
    from isobox.engine.inspect import inspect_container

    with state.engine() as engine:
        ex.send_json(200, inspect_container(engine, engine.get(params["id"]),
                                            size=ex.flag("size")))


@route("GET", PREFIX + "/images/{name:path}")
def image_inspect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """``isobox image inspect``: the store's document, without Docker's legacy fields."""
    from isobox.images.inspect import inspect_image

    with state.engine() as engine:
        ex.send_json(200, inspect_image(engine.store.resolve(params["name"])))


@route("GET", PREFIX + "/info")
def host_info(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """``isobox system info --format json``: Docker's ``/info`` keys and the ``Isobox``
    section (cgroup layout and controllers, KVM, VM accelerator, CRIU, conmon, runtimes)."""
    from isobox.engine.info import system_info

    with state.engine() as engine:
        ex.send_json(200, system_info(engine))


@route("GET", PREFIX + "/openapi.json")
def openapi(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.api.openapi import document

    ex.send_json(200, document())
