"""``isobox serve``: the API on a unix socket (0660, group ``isobox``), one thread per
connection (engine calls block: subprocesses, SQLite, flocks), each request with an
:class:`~isobox.engine.engine.Engine` of its own (its SQLite connection is not shared).

SIGTERM/SIGINT stop accepting, let the serve loop end and remove the socket; containers keep
running (their monitors never depended on the server)."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import signal
import socket
import socketserver
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from isobox import __version__
from isobox.api.errors import ApiError, message_of, status_of
from isobox.api.http import Exchange
from isobox.api.routing import API_VERSION, Router, load_routes, split_version
from isobox.errors import IsoboxError, SystemSetupError

if TYPE_CHECKING:
    from isobox.api.attach import PendingAttaches
    from isobox.api.exec import ExecRegistry
    from isobox.engine.engine import Engine

log = logging.getLogger("isobox.api")

DEFAULT_SOCKET = "/run/isobox/isobox.sock"
SOCKET_GROUP = "isobox"
BASE_HEADERS = {"Api-Version": API_VERSION, "Docker-Experimental": "false",
                "Ostype": "linux", "Server": f"isobox/{__version__} (linux)"}


@dataclass
class ApiState:
    """What every request shares: the engine root and the in-memory registries (exec
    instances and attaches waiting for their container to start)."""

    root: str
    router: Router
    attaches: PendingAttaches
    execs: ExecRegistry
    stopping: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        from isobox.engine.engine import Engine

        engine = Engine(self.root)
        try:
            yield engine
        finally:
            engine.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

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


class ApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, state: ApiState) -> None:
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.state = state
        self.server_activate()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("connection failed")


def socket_group(name: str) -> int:
    """The gid of ``name``, creating it as a system group when missing."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    proc = subprocess.run(["groupadd", "--system", name], capture_output=True, text=True,
                          check=False)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SystemSetupError(f"cannot create the group {name!r} for the API socket: "
                               f"{proc.stderr.strip() or 'groupadd failed'}") from None


def bind_unix(path: str, group: str) -> socket.socket:
    """A listening socket at ``path``, mode 0660, owned by root:``group``. A stale socket
    (nobody listening) is replaced; a live one is an error."""
    gid = socket_group(group)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o710, exist_ok=True)
    pst = os.stat(parent)
    if not pst.st_mode & stat.S_IXGRP and pst.st_uid == os.getuid():
        # the group must be able to reach the socket (the run directory is 0700)
        os.chown(parent, -1, gid)
        os.chmod(parent, stat.S_IMODE(pst.st_mode) | stat.S_IXGRP)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SystemSetupError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: left by a server that was killed
        else:
            raise SystemSetupError(f"another server is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # no window in which the socket is more open than 0660
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise SystemSetupError(f"cannot listen on {path}: {e.strerror}") from None
    finally:
        os.umask(old)
    os.chown(path, 0, gid)
    os.chmod(path, 0o660)
    return sock


def make_state(root: str) -> ApiState:
    from isobox.api.attach import PendingAttaches
    from isobox.api.exec import ExecRegistry

    return ApiState(root=root, router=load_routes(), attaches=PendingAttaches(),
                    execs=ExecRegistry())


def serve(root: str, socket_path: str = DEFAULT_SOCKET, group: str = SOCKET_GROUP,
          ready: Any = None) -> None:
    """Serve until SIGTERM or SIGINT; ``ready(path)`` is called once accepting."""
    from isobox.engine.engine import Engine

    Engine(root).close()  # the state directories exist before the first request
    state = make_state(root)
    sock = bind_unix(socket_path, group)
    server = ApiServer(sock, state)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down (containers keep running)", signum)
        state.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info("listening on %s", socket_path)
        if ready is not None:
            ready(socket_path)
        server.serve_forever(poll_interval=0.2)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        state.execs.close_all()
