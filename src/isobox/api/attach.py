"""``POST /containers/{id}/attach`` over a hijacked connection.

The docker CLI attaches *before* it starts the container (``run``, ``start -a``), but the
container's monitor, whose attach socket carries the streams, exists only from the start on.
So an attach to a container that is not running waits in :class:`PendingAttaches`; the
start route (``POST /containers/{id}/start``) then starts the container with a session
connected before the process runs (the engine's ``start_container(attach=True)``, as
``isobox run`` does), so no output is lost. A container started elsewhere (the isobox CLI)
is noticed by polling and joined late."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from isobox.api.streams import (
    DEFAULT_DETACH_KEYS,
    STDERR,
    STDOUT,
    frame,
    parse_detach_keys,
    shut,
    start_stdin_pump,
    stream_content_type,
)
from isobox.errors import ConflictError, IsoboxError, NotFoundError

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState
    from isobox.engine.attach import AttachSession
    from isobox.engine.engine import Engine

MONITOR_STDERR = 3  # conmon's packet tag for stderr (2 is stdout)
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
    attach (the engine starts it plainly when none waits)."""
    from isobox.engine.attach import AttachSession
    from isobox.engine.start import start_container

    waiters = state.attaches.take(cid)
    if not waiters:
        start_container(engine, cid)
        return
    try:
        session = start_container(engine, cid, attach=True)
    except BaseException:
        for w in waiters:
            w.deliver(None)
        raise
    waiters[0].deliver(session)
    for w in waiters[1:]:
        try:
            w.deliver(AttachSession.connect(engine.layout.container_dir(cid)))
        except IsoboxError:
            w.deliver(None)


def attach_route(state: ApiState, ex: Exchange, ref: str) -> None:
    from isobox.engine.attach import AttachSession

    want_in, want_out, want_err = ex.flag("stdin"), ex.flag("stdout"), ex.flag("stderr")
    keys = parse_detach_keys(ex.arg("detachKeys") or DEFAULT_DETACH_KEYS)
    with state.engine() as engine:
        row = engine.get(ref)
        status = engine.effective_status(row)
        if status == "paused":
            raise ConflictError("You cannot attach to a paused container, unpause it first")
        if status not in ("running", "created", "exited", "creating"):
            raise ConflictError(f"You cannot attach to a container that is {status}")
        tty = bool(row.options.get("tty"))
        stdin = want_in and bool(row.options.get("open_stdin"))
        bundle = engine.layout.container_dir(row.id)
        sock = ex.hijack(stream_content_type(tty))
        if status == "running":
            session: AttachSession | None = AttachSession.connect(bundle)
        else:
            session = _wait_for_start(state, ex, engine, row.id, bundle)
    if session is None:
        shut(sock)
        return
    pump(ex, session, sock, tty=tty, stdin=stdin, stdout=want_out, stderr=want_err,
         detach_keys=keys)


def _wait_for_start(state: ApiState, ex: Exchange, engine: Engine, cid: str,
                    bundle: str) -> AttachSession | None:
    from isobox.engine.attach import AttachSession

    waiter = state.attaches.register(cid)
    while not waiter.ready.wait(POLL):
        gone = ex.client_gone(eof_is_gone=False) or state.stopping.is_set()
        try:
            running = engine.get(cid).status == "running"
        except NotFoundError:
            gone = True
            running = False
        if (gone or running) and state.attaches.withdraw(cid, waiter):
            if gone:
                return None
            try:  # started by someone else (the isobox CLI): join late
                return AttachSession.connect(bundle)
            except IsoboxError:
                return None
    return waiter.session


def pump(ex: Exchange, session: AttachSession, sock: socket.socket, *, tty: bool, stdin: bool,
         stdout: bool, stderr: bool, detach_keys: bytes) -> None:
    """Monitor packets → the client (framed unless TTY); the client's bytes → stdin."""
    msock = session.sock

    def half_close() -> None:
        try:
            msock.shutdown(socket.SHUT_WR)  # the monitor closes the process's stdin
        except OSError:
            pass

    def detach() -> None:
        shut(msock)
        shut(sock)

    if stdin:
        start_stdin_pump(ex.read_raw, msock.sendall, half_close, detach, detach_keys)
    try:
        while True:
            try:
                data = msock.recv(8193)
            except OSError:
                break
            if not data:
                break
            is_err = data[0] == MONITOR_STDERR
            if (is_err and not stderr) or (not is_err and not stdout):
                continue
            payload = data[1:]
            sock.sendall(payload if tty else frame(STDERR if is_err else STDOUT, payload))
    except OSError:
        pass  # the client went away; the container runs on
    finally:
        session.close()
        shut(sock)

