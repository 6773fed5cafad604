"""``POST /containers/{id}/attach`` over a hijacked connection (and the websocket's, which
shares all but the client's framing).

The docker CLI attaches *before* it starts the container (``run``, ``start -a``), but the
container's monitor, whose attach socket carries the streams, exists only from the start on.
So an attach to a container that is not running waits in :class:`PendingAttaches`; the
start route (``POST /containers/{id}/start``) then starts the container with a session
connected before the process runs (the engine's ``start_container(attach=True)``, as
``isobox run`` does), so no output is lost. A container started elsewhere (the isobox CLI)
is noticed by polling and joined late."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from isobox.api.pump import Codec, Pump, RawCodec, Sink, Source
from isobox.api.streams import (
    DEFAULT_DETACH_KEYS,
    STDERR,
    STDOUT,
    frame,
    parse_detach_keys,
    shut,
    stream_content_type,
)
from isobox.errors import ConflictError, IsoboxError, NotFoundError

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState
    from isobox.engine.attach import AttachSession
    from isobox.engine.engine import Engine

MONITOR_STDERR = 3  # conmon's packet tag for stderr (2 is stdout)
BUFSIZE = 8192 + 1  # conmon's packets: a tag byte and up to 8 KiB
POLL = 0.25


@dataclass(eq=False)
class AttachWaiter:
    ready: threading.Event = field(default_factory=threading.Event)
    session: AttachSession | None = None

    def deliver(self, session: AttachSession | None) -> None:
        self.session = session
        self.ready.set()


class PendingAttaches:
    """Attaches waiting for their container to start, by container id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[AttachWaiter]] = {}

    def register(self, cid: str) -> AttachWaiter:
        w = AttachWaiter()
        with self._lock:
            self._waiting.setdefault(cid, []).append(w)
        return w

    def take(self, cid: str) -> list[AttachWaiter]:
        with self._lock:
            return self._waiting.pop(cid, [])

    def withdraw(self, cid: str, w: AttachWaiter) -> bool:
        """Remove ``w``; False when a start took it already (a session is on its way)."""
        with self._lock:
            waiters = self._waiting.get(cid) or []
            if w not in waiters:
                return False
            waiters.remove(w)
            if not waiters:
                self._waiting.pop(cid, None)
            return True


def start_with_attaches(state: ApiState, engine: Engine, cid: str) -> None:
    """Start ``cid``, handing sessions connected before the process runs to every waiting
    attach (the engine starts it plainly when none waits); its exit is the server's to
    handle."""
    from isobox.engine.attach import AttachSession
    from isobox.engine.start import start_container

    waiters = state.attaches.take(cid)
    me = os.getpid()  # the server handles the exit itself (api/exit_watch.py)
    if not waiters:
        start_container(engine, cid, attached_pid=me)
        state.exits.watch(engine, cid)
        return
    try:
        session = start_container(engine, cid, attach=True, attached_pid=me)
    except BaseException:
        for w in waiters:
            w.deliver(None)
        raise
    state.exits.watch(engine, cid)
    waiters[0].deliver(session)
    for w in waiters[1:]:
        try:
            w.deliver(AttachSession.connect(engine.layout.container_dir(cid)))
        except IsoboxError:
            w.deliver(None)


@dataclass(frozen=True)
class AttachParams:
    """What an attach asks for (dockerd's parameters; ``stream`` and ``logs`` default off)."""

    stdin: bool
    stdout: bool
    stderr: bool
    logs: bool
    stream: bool
    detach_keys: bytes

    @classmethod
    def of(cls, ex: Exchange, *, all_streams: bool = False) -> AttachParams:
        """``all_streams``: attach stdin, stdout and stderr when none is named."""
        named = any(ex.arg(k) for k in ("stdin", "stdout", "stderr"))
        every = all_streams and not named
        return cls(stdin=every or ex.flag("stdin"), stdout=every or ex.flag("stdout"),
                   stderr=every or ex.flag("stderr"), logs=ex.flag("logs"),
                   stream=ex.flag("stream"),
                   detach_keys=parse_detach_keys(ex.arg("detachKeys") or DEFAULT_DETACH_KEYS))


# opens the client's side once the request is accepted: (socket, codec, bytes already read)
OpenClient = Callable[[bool], tuple[socket.socket, Codec, bytes]]


def attach_route(state: ApiState, ex: Exchange, ref: str) -> None:
    """``POST /containers/{id}/attach``: Docker's hijacked connection, multiplexed unless
    the container has a TTY."""
    def hijacked(tty: bool) -> tuple[socket.socket, Codec, bytes]:
        sock = ex.hijack(stream_content_type(tty))
        return sock, RawCodec(), ex.buffered_input()

    run_attach(state, ex, ref, AttachParams.of(ex), hijacked, mux=True)


def run_attach(state: ApiState, ex: Exchange, ref: str, p: AttachParams,
               open_client: OpenClient, *, mux: bool) -> None:
    """Replay the logs (``logs``), then stream the container's output to the client and the
    client's bytes to its stdin (``stream``) until it exits, the client leaves or detaches.
    ``mux``: Docker's 8-byte frames unless the container has a TTY."""
    from isobox.engine.attach import AttachSession

    with state.engine() as engine:
        row = engine.get(ref)
        status = engine.effective_status(row)
        if status == "paused":
            raise ConflictError("You cannot attach to a paused container, unpause it first")
        if status not in ("running", "created", "exited", "creating"):
            raise ConflictError(f"You cannot attach to a container that is {status}")
        tty = bool(row.options.get("tty"))
        framed = mux and not tty
        stdin = p.stdin and bool(row.options.get("open_stdin"))
        replay = _replay(engine, row.id, p, framed) if p.logs else b""
        # waiting before the client hears its 101: the docker CLI starts the container as
        # soon as it does, and a start that finds no waiter starts it without a session
        waiter = state.attaches.register(row.id) if p.stream and status != "running" \
            else None
        try:
            sock, codec, pending = open_client(tty)
        except BaseException:
            if waiter is not None:
                state.attaches.withdraw(row.id, waiter)
            raise
        session: AttachSession | None = None
        if p.stream:
            bundle = engine.layout.container_dir(row.id)
            session = AttachSession.connect(bundle) if waiter is None else \
                _wait_for_start(state, ex, engine, row.id, bundle, waiter, row.started_at)
    if session is None:  # logs only, or the client left before the start
        Pump(sock, [], None, codec=codec, pending=pending, initial=codec.encode(replay)
             if replay else b"").run()
        return
    pump(session, sock, codec=codec, pending=pending, initial=replay, framed=framed,
         stdin=stdin, stdout=p.stdout, stderr=p.stderr, detach_keys=p.detach_keys)


def _replay(engine: Engine, cid: str, p: AttachParams, framed: bool) -> bytes:
    """The container's logged output (``logs=1``), framed as the live stream is."""
    from isobox.engine.logs import container_logs

    out = bytearray()
    for rec in container_logs(engine, cid, stdout=p.stdout, stderr=p.stderr):
        out += frame(STDERR if rec.stream == "stderr" else STDOUT, rec.data) if framed \
            else rec.data
    return bytes(out)


def _wait_for_start(state: ApiState, ex: Exchange, engine: Engine, cid: str, bundle: str,
                    waiter: AttachWaiter, started_at: float) -> AttachSession | None:
    """The session a start hands over; else, for a container started elsewhere (its
    ``started_at`` moved: it may have ended between two polls already), one joined late;
    None when the client left or there is nothing left to join."""
    from isobox.engine.attach import AttachSession

    while not waiter.ready.wait(POLL):
        gone = ex.client_gone(eof_is_gone=False) or state.stopping.is_set()
        try:
            started = engine.get(cid).started_at != started_at
        except NotFoundError:
            gone, started = True, False
        if (gone or started) and state.attaches.withdraw(cid, waiter):
            if gone:
                return None
            try:  # started by someone else (the isobox CLI): join late
                return AttachSession.connect(bundle)
            except IsoboxError:
                return None
    return waiter.session


def pump(session: AttachSession, sock: socket.socket, *, codec: Codec, pending: bytes,
         initial: bytes, framed: bool, stdin: bool, stdout: bool, stderr: bool,
         detach_keys: bytes) -> None:
    """Monitor packets → the client; the client's bytes → stdin, its end → a half-close
    (the monitor then closes the process's input)."""
    msock = session.sock

    def read() -> bytes | None:
        try:
            data = msock.recv(BUFSIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return None
        if not data:
            return None
        is_err = data[0] == MONITOR_STDERR
        if (is_err and not stderr) or (not is_err and not stdout):
            return b""
        payload = data[1:]
        return frame(STDERR if is_err else STDOUT, payload) if framed else payload

    sink = None
    if stdin:
        msock.setblocking(False)
        sink = Sink(msock, lambda view: msock.send(view[:BUFSIZE - 1]),
                    lambda: msock.shutdown(socket.SHUT_WR))
    try:
        Pump(sock, [Source(msock, read)], sink, codec=codec, pending=pending,
             detach_keys=detach_keys, initial=codec.encode(initial) if initial else b"").run()
    finally:
        session.close()
        shut(sock)
