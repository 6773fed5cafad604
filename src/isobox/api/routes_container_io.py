"""Container endpoints that stream: attach (hijacked or websocket), wait, logs, stats, and
the archive (``docker cp``) and export endpoints."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from isobox.api.docker_json import path_stat_header
from isobox.api.errors import ApiError
from isobox.api.routing import route
from isobox.api.streams import STDERR, STDOUT, frame, stream_content_type
from isobox.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from isobox.api.http import ChunkedWriter, Exchange
    from isobox.api.server import ApiState
    from isobox.engine.copy import PathStat

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


@route("POST", "/containers/{id}/attach")
def attach(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.api.attach import attach_route

    attach_route(state, ex, params["id"])


@route("GET", "/containers/{id}/attach/ws")
def attach_ws(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.api.websocket import attach_websocket

    attach_websocket(state, ex, params["id"])


@route("POST", "/containers/{id}/wait")
def wait(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """Headers at once (the docker CLI waits for them before it starts the container), the
    body ``{"StatusCode": N}`` when the condition is met."""
    from isobox.engine.stop import WaitCancelled, wait_container

    condition = ex.arg("condition") or "not-running"
    if condition not in WAIT_CONDITIONS:
        raise ApiError(400, f"condition: invalid value {condition!r} (not-running, "
                       "next-exit or removed)")
    with state.engine() as engine:
        row = engine.get(params["id"])
        out = ex.stream()
        try:
            code = wait_container(engine, row.id, condition,
                                  cancelled=lambda: ex.client_gone() or state.stopping.is_set())
        except WaitCancelled:
            return
        out.json_line({"StatusCode": code, "Error": None})
        out.close()


def _time_arg(ex: Exchange, name: str) -> float | None:
    from isobox.engine.logs import parse_since

    text = ex.arg(name)
    if not text or text == "0":
        return None
    try:
        return parse_since(text, time.time())
    except ConfigError:
        raise ApiError(400, f"{name}: invalid time {text!r}") from None


@route("GET", "/containers/{id}/logs")
def logs(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.logs import container_logs, format_record, parse_tail

    want_out, want_err = ex.flag("stdout"), ex.flag("stderr")
    if not (want_out or want_err):
        raise ApiError(400, "Bad parameters: you must choose at least one stream")
    follow, stamps = ex.flag("follow"), ex.flag("timestamps")
    try:
        tail = parse_tail(ex.arg("tail", "all"), "tail")
    except ConfigError as e:
        raise ApiError(400, str(e)) from None
    since, until = _time_arg(ex, "since"), _time_arg(ex, "until")
    with state.engine() as engine:
        row = engine.get(params["id"])
        tty = bool(row.options.get("tty"))
        records = container_logs(
            engine, row.id, follow=follow, stdout=want_out, stderr=want_err, since=since,
            until=until, tail=tail,
            cancelled=lambda: ex.client_gone() or state.stopping.is_set())
        out = ex.stream(content_type=stream_content_type(tty))
        for rec in records:
            data = format_record(rec, stamps)
            out.write(data if tty else frame(STDERR if rec.stream == "stderr" else STDOUT,
                                             data))
            if follow:
                out.flush()
        out.close()


@route("GET", "/containers/{id}/stats")
def stats(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine import stats as st

    stream = ex.flag("stream", True)
    one_shot = ex.flag("one-shot")
    if one_shot and stream:
        raise ApiError(400, "one-shot: cannot be used with stream=1")
    with state.engine() as engine:
        row = engine.get(params["id"])
        if not stream:
            data = st.container_stats(engine, row, interval=0 if one_shot else 0.5)
            ex.send_json(200, data)
            return
        out = ex.stream()
        previous: dict[str, Any] | None = None
        while not (ex.client_gone() or state.stopping.is_set()):
            try:
                row = engine.get(row.id)
            except NotFoundError:
                break
            data = st.container_stats(engine, row, previous=previous, interval=0)
            previous = data
            out.json_line(data)
            out.flush()
            time.sleep(1.0)
        out.close()


def _archive_path(ex: Exchange) -> str:
    path = ex.arg("path")
    if not path:
        raise ApiError(400, "path: required")
    if "\0" in path:
        raise ApiError(400, "path: contains a NUL byte")
    return path


@route("HEAD", "/containers/{id}/archive")
def archive_head(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.copy import stat_path

    with state.engine() as engine:
        st = stat_path(engine, params["id"], _archive_path(ex))
    ex.send(200, headers={"X-Docker-Container-Path-Stat": path_stat_header(st)},
            content_type="application/json")


class _LateStream:
    """The response body of ``GET /archive``, opened once the path is pinned (its stat goes
    in a header)."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.out: ChunkedWriter | None = None

    def open(self, st: PathStat) -> None:
        self.out = self.ex.stream(content_type="application/x-tar", headers={
            "X-Docker-Container-Path-Stat": path_stat_header(st)})

    def write(self, data: bytes) -> int:
        assert self.out is not None
        return self.out.write(data)

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()


@route("GET", "/containers/{id}/archive")
def archive_get(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.copy import copy_from_container

    path = _archive_path(ex)
    body = _LateStream(ex)
    with state.engine() as engine:
        copy_from_container(engine, params["id"], path, cast(BinaryIO, body), follow=False,
                            before=body.open)
    assert body.out is not None
    body.out.close()


@route("GET", "/containers/{id}/export")
def export(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """``docker export``: the container's merged root filesystem as an uncompressed tar (an
    unknown container is a 404 before any byte of the body)."""
    from isobox.api.routes_image_io import TarBody
    from isobox.engine.copy import export_snapshot_id
    from isobox.images.rootfs_import import export_snapshot

    body = TarBody(ex)
    with state.engine() as engine:
        snapshot = export_snapshot_id(engine, params["id"])
        export_snapshot(engine.store, snapshot, cast(BinaryIO, body))
    body.close()


@route("PUT", "/containers/{id}/archive")
def archive_put(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.copy import copy_to_container

    path = _archive_path(ex)
    with state.engine() as engine:
        copy_to_container(engine, params["id"], path, cast(BinaryIO, ex.body))
    ex.send(200)

