"""``isobox serve``: the API on a unix socket (0660, group ``isobox``) and, with ``--tcp``, on
TCP with mutual TLS (:mod:`isobox.api.tls`); one thread per connection (engine calls block:
subprocesses, SQLite, flocks), each request with an :class:`~isobox.engine.engine.Engine` of
its own (its SQLite connection is not shared).

SIGTERM/SIGINT stop accepting, let the serve loop end and remove the socket; containers keep
running (their monitors never depended on the server)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from isobox import __version__
from isobox.api.coalesce import Coalescer
from isobox.api.errors import ApiError, message_of, status_of
from isobox.api.http import Exchange
from isobox.api.limits import DEFAULT_IDLE_TIMEOUT, IdleTimeouts
from isobox.api.routing import API_VERSION, Router, load_routes, split_version
from isobox.api.routing import Handler as RouteHandler
from isobox.api.unix_socket import bind_unix
from isobox.errors import IsoboxError, SystemSetupError

if TYPE_CHECKING:
    from isobox.api.attach import PendingAttaches
    from isobox.api.exec import ExecRegistry
    from isobox.api.exit_watch import ExitWatcher
    from isobox.api.tls import TlsListen
    from isobox.engine.engine import Engine

log = logging.getLogger("isobox.api")

DEFAULT_SOCKET = "/run/isobox/isobox.sock"
SOCKET_GROUP = "isobox"
# read-only lists that many clients poll at once: identical requests share a computation
COALESCED = frozenset({"/containers/json"})
BASE_HEADERS = {"Api-Version": API_VERSION, "Docker-Experimental": "false",
                "Ostype": "linux"}


@dataclass
class ApiState:
    """What every request shares: the engine root, the in-memory registries (exec
    instances and attaches waiting for their container to start) and the exit watcher."""

    root: str
    router: Router
    attaches: PendingAttaches
    execs: ExecRegistry
    exits: ExitWatcher
    stopping: threading.Event = field(default_factory=threading.Event)
    allow_privileged: bool = False   # --allow-privileged (catalogue case 47)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT   # --idle-timeout (api/limits.py)
    coalesced: Coalescer[tuple[int, str, bytes]] = field(default_factory=Coalescer)

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        from isobox.engine.engine import Engine

        engine = Engine(self.root)
        try:
            yield engine
        finally:
            engine.close()


class Handler(IdleTimeouts, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer | TlsApiServer

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def version_string(self) -> str:  # the Server header (one, not BaseHTTP's and ours)
        return f"isobox/{__version__} (linux)"

    def address_string(self) -> str:
        return "unix" if isinstance(self.client_address, str | bytes) else \
            str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        state = self.server.state
        ex = Exchange(self, BASE_HEADERS)
        try:
            version, path = split_version(urlsplit(self.path).path)
            ex.route(path, version)
            handler, params = state.router.find(self.command, path)
            if self.command == "GET" and path in COALESCED:
                key = (path, version, urlsplit(self.path).query)
                status, ctype, body = state.coalesced.run(
                    key, lambda: _captured(handler, state, self, path, version, params))
                ex.send(status, body, ctype)
            else:
                handler(state, ex, params)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            status = status_of(e)
            if status == 500 and not isinstance(e, IsoboxError | ApiError):
                log.exception("%s %s failed", self.command, self.path)
            elif status == 500:
                log.warning("%s %s: %s", self.command, self.path, e)
            if ex.responded:
                self.close_connection = True  # mid-stream: the client sees the body end
            else:
                try:
                    ex.send_error(status, message_of(e))
                except OSError:
                    self.close_connection = True
        finally:
            if not ex.hijacked:
                try:
                    if not ex.body.drain():
                        self.close_connection = True
                except (ApiError, OSError, ValueError):
                    self.close_connection = True


class _Capture(Exchange):
    """An exchange whose whole-body answer is kept (for requests sharing it), not sent."""

    answer: tuple[int, str, bytes] = (500, "", b"")

    def send(self, status: int, body: bytes = b"", content_type: str = "text/plain; "
             "charset=utf-8", headers: dict[str, str] | None = None) -> None:
        self.responded = True
        self.answer = (status, content_type, body)


def _captured(handler: RouteHandler, state: ApiState, request: Handler, path: str,
              version: str, params: dict[str, str]) -> tuple[int, str, bytes]:
    ex = _Capture(request, {})
    ex.route(path, version)
    handler(state, ex, params)
    return ex.answer


class ApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog is 5: a burst of clients then gets EAGAIN from
    # connect() on a unix socket (a client with a timeout has a non-blocking socket)
    request_queue_size = socket.SOMAXCONN

    def __init__(self, sock: socket.socket, state: ApiState) -> None:
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.state = state
        self.server_activate()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("connection failed")


class TcpHandler(Handler):
    disable_nagle_algorithm = True  # small header + body writes must not wait for an ACK


class TlsApiServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The API on TCP with mutual TLS (:mod:`isobox.api.tls`); the handshake runs in the
    connection's thread."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN

    def __init__(self, opts: TlsListen, state: ApiState) -> None:
        from isobox.api.tls import server_context

        self.address_family = opts.family
        self.context = server_context(opts)
        self.state = state
        try:
            super().__init__((opts.host, opts.port), TcpHandler)
        except OSError as e:
            raise SystemSetupError(f"cannot listen on {opts.host}:{opts.port}: "
                                   f"{e.strerror}") from None

    def finish_request(self, request: Any, client_address: Any) -> None:
        from isobox.api.tls import accept_tls

        conn = accept_tls(request, self.context, client_address)
        if conn is None:
            return
        try:
            TcpHandler(conn, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("connection from %s failed", client_address)


def make_state(root: str, *, allow_privileged: bool = False,
               idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> ApiState:
    from isobox.api.attach import PendingAttaches
    from isobox.api.exec import ExecRegistry
    from isobox.api.exit_watch import ExitWatcher

    return ApiState(root=root, router=load_routes(), attaches=PendingAttaches(),
                    execs=ExecRegistry(), exits=ExitWatcher(root),
                    allow_privileged=allow_privileged, idle_timeout=idle_timeout)


def serve(root: str, socket_path: str = DEFAULT_SOCKET, group: str = SOCKET_GROUP,
          ready: Any = None, tcp: TlsListen | None = None, allow_privileged: bool = False,
          idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
    """Serve until SIGTERM or SIGINT, on the unix socket and (``tcp``) on TCP with mutual
    TLS; ``ready(path)`` is called once accepting."""
    from isobox.engine.engine import Engine

    Engine(root).close()  # the state directories exist before the first request
    state = make_state(root, allow_privileged=allow_privileged, idle_timeout=idle_timeout)
    tls_server = TlsApiServer(tcp, state) if tcp is not None else None
    try:
        sock = bind_unix(socket_path, group)
    except BaseException:
        if tls_server is not None:
            tls_server.server_close()
        raise
    server = ApiServer(sock, state)
    servers: list[socketserver.BaseServer] = [server]
    if tls_server is not None:
        servers.append(tls_server)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down (containers keep running)", signum)
        state.stopping.set()
        for s in servers:
            threading.Thread(target=s.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    tcp_thread = None
    try:
        log.info("listening on %s", socket_path)
        if tls_server is not None:
            host, port = str(tls_server.server_address[0]), int(tls_server.server_address[1])
            log.info("listening on tcp://%s (mutual TLS)",
                     f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            tcp_thread = threading.Thread(target=tls_server.serve_forever, args=(0.2,),
                                          name="tcp-accept", daemon=True)
            tcp_thread.start()
        if ready is not None:
            ready(socket_path)
        server.serve_forever(poll_interval=0.2)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if tls_server is not None:
            if tcp_thread is not None and tcp_thread.is_alive():
                tls_server.shutdown()
            tls_server.server_close()
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        state.execs.close_all()
