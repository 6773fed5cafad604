"""Exec instances: ``POST /containers/{id}/exec`` (create), ``POST /exec/{id}/start``
(hijacked, or detached), ``POST /exec/{id}/resize``, ``GET /exec/{id}/json``.

An exec instance lives in the server's memory (Docker's do too: they are gone after a
daemon restart). Its process is the engine's ``spawn_exec`` — the runtime's ``exec``, the same
as ``isobox exec`` — with pipes (framed as Docker's multiplexed stream) or, with a TTY, the
pty master the runtime sends over a console socket."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import struct
import subprocess
import termios
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from isobox.api.errors import ApiError
from isobox.api.pump import Pump, Sink, Source
from isobox.api.routing import route
from isobox.api.streams import (
    DEFAULT_DETACH_KEYS,
    STDERR,
    STDOUT,
    frame,
    parse_detach_keys,
    shut,
    stream_content_type,
)
from isobox.engine.execute import ExecProcess, ExecRequest
from isobox.errors import IsoboxError, NotFoundError

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState

EXIT_CANNOT_RUN = 126  # Docker's code for an exec that could not start
MAX_EXECS = 4096  # finished instances beyond this are forgotten, oldest first


@dataclass(eq=False)
class ExecInstance:
    id: str
    container_id: str
    request: ExecRequest
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    detach_keys: str
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    master_fd: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inspect(self) -> dict[str, Any]:
        req = self.request
        return {"ID": self.id, "Running": self.running, "ExitCode": self.exit_code,
                "ProcessConfig": {"tty": req.tty, "entrypoint": req.args[0] if req.args
                                  else "", "arguments": req.args[1:],
                                  "privileged": req.privileged, "user": req.user},
                "OpenStdin": self.attach_stdin, "OpenStderr": self.attach_stderr,
                "OpenStdout": self.attach_stdout, "CanRemove": False,
                "ContainerID": self.container_id, "DetachKeys": self.detach_keys,
                "Pid": self.pid}


class ExecRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, ExecInstance] = {}

    def add(self, inst: ExecInstance) -> None:
        with self._lock:
            if len(self._items) >= MAX_EXECS:
                done = [k for k, v in self._items.items() if v.exit_code is not None]
                for key in done[:len(self._items) - MAX_EXECS + 1]:
                    del self._items[key]
            self._items[inst.id] = inst

    def get(self, eid: str) -> ExecInstance:
        with self._lock:
            inst = self._items.get(eid)
        if inst is None:
            raise NotFoundError(f"No such exec instance: {eid}")
        return inst

    def ids_of(self, cid: str) -> list[str]:
        """The running exec instances of container ``cid`` (inspect's ExecIDs)."""
        with self._lock:
            return [i.id for i in self._items.values() if i.container_id == cid and i.running]

    def close_all(self) -> None:
        with self._lock:
            for inst in self._items.values():
                if inst.master_fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(inst.master_fd)
                    inst.master_fd = -1


def _bool(body: dict[str, Any], key: str) -> bool:
    v = body.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ApiError(400, f"{key}: expected true or false")
    return v


def _strs(body: dict[str, Any], key: str) -> list[str]:
    v = body.get(key)
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ApiError(400, f"{key}: expected a list of strings")
    return list(v)


def _str(body: dict[str, Any], key: str) -> str:
    v = body.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ApiError(400, f"{key}: expected a string")
    return v


@route("POST", "/containers/{id}/exec")
def exec_create(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.execute import check_exec

    body = ex.json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")
    cmd = _strs(body, "Cmd")
    if not cmd:
        raise ApiError(400, "Cmd: no exec command specified")
    req = ExecRequest(args=cmd, tty=_bool(body, "Tty"),
                      interactive=_bool(body, "AttachStdin"),
                      env=[e for e in _strs(body, "Env") if "=" in e],
                      user=_str(body, "User"), workdir=_str(body, "WorkingDir"),
                      privileged=_bool(body, "Privileged"))
    keys = _str(body, "DetachKeys")
    if keys:
        parse_detach_keys(keys)
    with state.engine() as engine:
        row = check_exec(engine, params["id"], req)
    inst = ExecInstance(id=secrets.token_hex(32), container_id=row.id, request=req,
                        attach_stdin=req.interactive, attach_stdout=_bool(body, "AttachStdout"),
                        attach_stderr=_bool(body, "AttachStderr"), detach_keys=keys)
    state.execs.add(inst)
    ex.send_json(201, {"Id": inst.id})


@route("GET", "/exec/{id}/json")
def exec_inspect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    ex.send_json(200, state.execs.get(params["id"]).inspect())


@route("POST", "/exec/{id}/resize")
def exec_resize(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    inst = state.execs.get(params["id"])
    h, w = ex.int_arg("h", 0) or 0, ex.int_arg("w", 0) or 0
    if not 0 <= h <= 0xFFFF or not 0 <= w <= 0xFFFF:
        raise ApiError(400, "h, w: out of range")
    if inst.master_fd < 0:
        if not inst.request.tty:
            raise ApiError(400, "the exec has no terminal to resize")
        raise ApiError(409, "the exec is not running")
    with contextlib.suppress(OSError):
        fcntl.ioctl(inst.master_fd, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
    ex.send(200)


@route("POST", "/exec/{id}/start")
def exec_start(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    inst = state.execs.get(params["id"])
    body = ex.json_body(optional=True) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")
    detach = _bool(body, "Detach")
    with inst.lock:
        if inst.started:
            raise ApiError(409, f"exec {inst.id[:12]} has already been started")
        inst.started = True
    if detach:
        _start_detached(state, inst)
        ex.send(200)
        return
    from isobox.engine.execute import check_exec

    with state.engine() as engine:  # refusals are HTTP errors; later ones go in-band
        check_exec(engine, inst.container_id, inst.request)
    # as dockerd: the answer first, then the process (a client still reading the 101's
    # headers through a buffered reader could otherwise swallow the first output)
    sock = ex.hijack(stream_content_type(inst.request.tty))
    try:
        if inst.request.tty:
            _run_tty(state, ex, inst, sock)
        else:
            _run_pipes(state, ex, inst, sock)
    except IsoboxError as e:
        inst.exit_code, inst.running = EXIT_CANNOT_RUN, False
        msg = f"isobox: exec failed: {e}\r\n".encode()
        with contextlib.suppress(OSError):
            sock.sendall(msg if inst.request.tty else frame(STDERR, msg))
        shut(sock)


def _finish(inst: ExecInstance, proc: ExecProcess) -> None:
    code = proc.finish()
    inst.exit_code = code
    inst.running = False


def _start_detached(state: ApiState, inst: ExecInstance) -> None:
    with state.engine() as engine:
        proc = spawn(engine, inst, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    inst.running = True
    threading.Thread(target=_finish, args=(inst, proc), daemon=True).start()


def spawn(engine: Any, inst: ExecInstance, **kw: Any) -> ExecProcess:
    from isobox.engine.execute import spawn_exec

    proc = spawn_exec(engine, inst.container_id, inst.request, want_pid=True, new_session=True,
                      **kw)
    inst.running = True
    return proc


def _pid_later(inst: ExecInstance, proc: ExecProcess) -> None:
    """The pid file appears once the runtime has started the process."""
    def watch() -> None:
        for _ in range(200):
            pid = proc.pid()
            if pid or proc.proc.poll() is not None:
                inst.pid = pid
                return
            time.sleep(0.01)
    threading.Thread(target=watch, daemon=True).start()


def _run_pipes(state: ApiState, ex: Exchange, inst: ExecInstance, sock: socket.socket
               ) -> None:
    with state.engine() as engine:
        proc = spawn(engine, inst, stdin=subprocess.PIPE if inst.attach_stdin else
                     subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _pid_later(inst, proc)
    p = proc.proc
    assert p.stdout is not None and p.stderr is not None

    def source(pipe: IO[bytes], stream: int, wanted: bool) -> Source:
        def read() -> bytes | None:
            data = os.read(pipe.fileno(), 65536)
            if not data:
                return None
            return frame(stream, data) if wanted else b""
        return Source(pipe, read)

    sink = None
    if inst.attach_stdin and p.stdin is not None:
        stdin = p.stdin
        os.set_blocking(stdin.fileno(), False)
        sink = Sink(stdin, lambda view: os.write(stdin.fileno(), view[:65536]), stdin.close)
    try:
        Pump(sock, [source(p.stdout, STDOUT, inst.attach_stdout),
                    source(p.stderr, STDERR, inst.attach_stderr)], sink,
             pending=ex.buffered_input(), detach_keys=_detach_keys(inst), drain=True,
             close=False).run()
    finally:
        p.stdout.close()
        p.stderr.close()
        if p.stdin is not None:
            with contextlib.suppress(OSError):
                p.stdin.close()
        _finish(inst, proc)
        shut(sock)


def _run_tty(state: ApiState, ex: Exchange, inst: ExecInstance, sock: socket.socket
             ) -> None:
    from isobox.engine.console import ConsoleSocket

    with ConsoleSocket() as console:
        with state.engine() as engine:
            proc = spawn(engine, inst, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, console_socket=console.path)
        try:
            master = console.receive(proc)
        except BaseException:
            _finish(inst, proc)
            raise
    inst.master_fd = master
    _pid_later(inst, proc)
    os.set_blocking(master, False)

    def read() -> bytes | None:
        try:
            return os.read(master, 65536) or None
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:  # EIO: every holder of the pty's other end has gone
            return None

    sink = Sink(master, lambda view: os.write(master, view[:65536]), lambda: None) \
        if inst.attach_stdin else None
    try:
        Pump(sock, [Source(master, read)], sink, pending=ex.buffered_input(),
             detach_keys=_detach_keys(inst), drain=True, close=False).run()
    finally:
        inst.master_fd = -1
        os.close(master)
        if proc.proc.stderr is not None:
            proc.proc.stderr.close()
        _finish(inst, proc)
        shut(sock)


def _detach_keys(inst: ExecInstance) -> bytes:
    return parse_detach_keys(inst.detach_keys or DEFAULT_DETACH_KEYS)
