"""Host side of the guest agent protocol: one connection per control port (the unix socket of
QEMU's chardev, or the agent's own socket in test mode), several exec sessions on it.

Synchronous: a selector loop runs whenever a caller waits (``exec``, ``wait``, ``pump_session``),
reading frames and writing queued ones, so a large stdin never blocks the output the agent
sends back."""

from __future__ import annotations

import errno
import itertools
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NoReturn

from isobox.vm.agent_protocol import (
    MAIN_SESSION,
    MAX_PAYLOAD,
    AgentError,
    ExecSpec,
    Frame,
    FrameDecoder,
    FrameType,
    encode_frame,
    encode_json,
)

OutputSink = Callable[[bytes], None]
_PING_INTERVAL = 0.5
_STDIN_HIGH = 1 << 20  # queued outbound bytes above which stdin is not read any further
_CHUNK = 1 << 16
CAPTURE_LIMIT = 1 << 20  # output kept by a session without sinks: its last MiB
_MAX_PID = (1 << 31) - 1


class OutputTail(bytearray):
    """Output captured without a sink: only the last ``limit`` bytes are kept (a guest can
    print without end); ``dropped`` counts the bytes cut before them."""

    def __init__(self, limit: int = CAPTURE_LIMIT) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self.extend(data)
        over = len(self) - self.limit
        if over > 0:
            del self[:over]
            self.dropped += over

    def text(self, limit: int = 4096) -> str:
        """The last ``limit`` bytes decoded for a message, saying when earlier ones were cut."""
        cut = self.dropped + max(len(self) - limit, 0)
        text = bytes(self[-limit:]).decode(errors="replace").strip()
        return f"[{cut} earlier bytes truncated] {text}" if cut else text


class ExecError(AgentError):
    """The guest could not start the command; ``exit_code`` is Docker's (127 not found,
    126 not runnable or refused)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ExecSession:
    """A process started by the agent. Output goes to the sinks given to ``exec`` or, without
    them, to ``stdout`` / ``stderr`` (OutputTail: the last CAPTURE_LIMIT bytes of each)."""

    def __init__(self, conn: AgentConnection, sid: int, on_stdout: OutputSink | None,
                 on_stderr: OutputSink | None) -> None:
        self.conn = conn
        self.id = sid
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.error: str | None = None
        self.error_code: int | None = None
        self.stdout = OutputTail()
        self.stderr = OutputTail()
        self._on_stdout = on_stdout or self.stdout.add
        self._on_stderr = on_stderr or self.stderr.add

    def stdin_write(self, data: bytes) -> None:
        for i in range(0, len(data), MAX_PAYLOAD):
            self.conn.send(encode_frame(FrameType.STDIN, self.id, data[i:i + MAX_PAYLOAD]))

    def close_stdin(self) -> None:
        self.conn.send(encode_frame(FrameType.STDIN_EOF, self.id))

    def signal(self, signum: int) -> None:
        self.conn.send(encode_json(FrameType.SIGNAL, self.id, {"signal": int(signum)}))

    def resize(self, rows: int, cols: int) -> None:
        self.conn.send(encode_json(FrameType.RESIZE, self.id, {"rows": rows, "cols": cols}))

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (128+signal when killed), once the process ended and its output
        was delivered."""
        self.conn.run_until(lambda: self.exit_code is not None, timeout,
                            f"exec session {self.id} did not exit")
        assert self.exit_code is not None
        return self.exit_code

    def _frame(self, frame: Frame) -> None:
        t = frame.type
        if t is FrameType.STDOUT:
            self._on_stdout(frame.payload)
        elif t is FrameType.STDERR:
            self._on_stderr(frame.payload)
        elif t is FrameType.STARTED:
            self.pid = frame.int_field("pid", 0, _MAX_PID)
        elif t is FrameType.EXIT:
            self.exit_code = frame.int_field("code", 0, 255)
        elif t is FrameType.ERROR:
            obj = frame.json()
            self.error = str(obj.get("message", "unknown error"))
            if obj.get("code") is None:  # refused: no process, no EXIT will follow
                self.error_code = self.exit_code = 126
            else:
                self.error_code = frame.int_field("code", 0, 255, obj)


class AgentConnection:
    """A connection to one agent control port."""

    def __init__(self, sock_path: Path, timeout: float,
                 alive: Callable[[], bool] | None = None) -> None:
        """``alive``: whether the VM is still there, so a dead QEMU ends the wait for its
        socket at once instead of at ``timeout``."""
        self.path = sock_path
        self.timeout = timeout
        self._alive = alive
        self.version: int | None = None
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._sessions: dict[int, ExecSession] = {}
        self._ids = itertools.count(1)
        self._pongs: set[int] = set()
        self._closed = False
        self._sel = selectors.DefaultSelector()
        deadline = time.monotonic() + timeout
        self._sock = self._connect(deadline)
        try:
            self._sel.register(self._sock, selectors.EVENT_READ)
            self._handshake(deadline)
        except BaseException:
            self.close()
            raise

    def _connect(self, deadline: float) -> socket.socket:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(str(self.path))
                sock.setblocking(False)
                return sock
            except OSError as e:
                sock.close()
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                    raise AgentError(f"agent socket {self.path}: {e.strerror}") from None
                if self._alive is not None and not self._alive():
                    raise AgentError("QEMU has exited") from None
                if time.monotonic() >= deadline:
                    raise AgentError(f"agent socket {self.path}: {e.strerror} "
                                     f"after {self.timeout:g}s") from None
            time.sleep(0.02)

    def _handshake(self, deadline: float) -> None:
        """PING until a PONG: the guest may still be booting (QEMU holds our bytes meanwhile)."""
        nonce = 0xFFFF0000 + os.getpid() % 0xFFFF
        while True:
            self.send(encode_frame(FrameType.PING, nonce))
            step_end = min(deadline, time.monotonic() + _PING_INTERVAL)
            while nonce not in self._pongs and time.monotonic() < step_end:
                self.step(step_end - time.monotonic())
            if nonce in self._pongs:
                return
            if time.monotonic() >= deadline:
                raise AgentError(f"guest agent on {self.path} did not answer PING within "
                                 f"{self.timeout:g}s")

    # -- I/O -------------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes) -> None:
        """Queue ``data`` and write what the socket takes now (the rest on later steps)."""
        if self._closed:
            raise AgentError(f"agent connection {self.path} is closed")
        self._out += data
        self._flush()

    @property
    def queued(self) -> int:
        return len(self._out)

    def _flush(self) -> None:
        while self._out:
            try:
                n = self._sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._lost(e.strerror or str(e))
            del self._out[:n]
        self._sel.modify(self._sock, selectors.EVENT_READ
                         | (selectors.EVENT_WRITE if self._out else 0))

    def _lost(self, why: str) -> NoReturn:
        self._closed = True
        raise AgentError(f"agent connection {self.path} lost: {why}")

    def step(self, timeout: float | None,
             extra: dict[int, Callable[[], None]] | None = None) -> None:
        """Wait up to ``timeout`` for I/O on the connection (and the ``extra`` fds, whose
        callbacks run when readable) and handle it."""
        for fd in extra or ():
            self._sel.register(fd, selectors.EVENT_READ)
        try:
            ready = self._sel.select(None if timeout is None else max(timeout, 0))
        finally:
            for fd in extra or ():
                self._sel.unregister(fd)
        for key, events in ready:
            if key.fileobj is self._sock:
                if events & selectors.EVENT_WRITE:
                    self._flush()
                if events & selectors.EVENT_READ:
                    self._read()
            elif extra:
                extra[int(key.fd)]()

    def _read(self) -> None:
        try:
            data = self._sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(e.strerror or str(e))
        if not data:
            self._lost("closed by the guest")
        for frame in self._decoder.feed(data):
            self._dispatch(frame)

    def _dispatch(self, frame: Frame) -> None:
        if frame.type is FrameType.PONG:
            self._pongs.add(frame.session)
            self.version = frame.int_field("version", 0, 0xFFFF)
            return
        session = self._sessions.get(frame.session)
        if session is None:
            return  # a late frame of a finished session, or a PONG we stopped waiting for
        session._frame(frame)
        if session.exit_code is not None:
            del self._sessions[frame.session]

    def run_until(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise AgentError(f"{what} within {timeout:g}s")
            self.step(left)

    # -- sessions ----------------------------------------------------------------------------

    def exec(self, args: Sequence[str], *, env: Sequence[str] = (), cwd: str = "/",
             uid: int = 0, gid: int = 0, additional_gids: Sequence[int] = (),
             terminal: bool = False, rows: int = 0, cols: int = 0, main: bool = False,
             stdin: bool = True, files: dict[str, str] | None = None,
             net: dict[str, Any] | None = None, on_stdout: OutputSink | None = None,
             on_stderr: OutputSink | None = None, chroot: bool = True,
             busybox: bool = False) -> ExecSession:
        """Start ``args`` in the guest (see ExecSpec); returns once it runs. A command that
        cannot start raises ExecError (its exit_code is what `exec` should exit with)."""
        spec = ExecSpec(list(args), list(env), cwd, uid, gid, list(additional_gids), terminal,
                        rows, cols, main, stdin, files, net, chroot, busybox)
        return self.exec_spec(spec, on_stdout=on_stdout, on_stderr=on_stderr)

    def exec_spec(self, spec: ExecSpec, *, on_stdout: OutputSink | None = None,
                  on_stderr: OutputSink | None = None) -> ExecSession:
        sid = MAIN_SESSION if spec.main else next(self._ids)
        session = ExecSession(self, sid, on_stdout, on_stderr)
        self._sessions[sid] = session
        self.send(encode_json(FrameType.EXEC, sid, spec.payload()))
        self.run_until(lambda: session.pid is not None or session.error is not None,
                       self.timeout, f"the guest agent did not start "
                       f"{spec.args[0] if spec.args else 'a file update'!r}")
        if session.error is not None:
            if session.exit_code is None:
                try:
                    session.wait(self.timeout)
                except AgentError:
                    pass
            raise ExecError(session.error, session.error_code or 126)
        return session

    def signal(self, session: int, signum: int) -> None:
        """Signal a session's process; session 0 (MAIN_SESSION) is the main workload."""
        self.send(encode_json(FrameType.SIGNAL, session, {"signal": int(signum)}))
        self._flush_all()

    def resize(self, session: int, rows: int, cols: int) -> None:
        self.send(encode_json(FrameType.RESIZE, session, {"rows": rows, "cols": cols}))
        self._flush_all()

    def _flush_all(self) -> None:
        """Block until queued frames are written (a caller about to close the connection)."""
        self.run_until(lambda: not self._out, self.timeout, "the guest agent took no input")

    def main_session(self) -> ExecSession:
        """A handle on the main workload (session 0) for SIGNAL/RESIZE from a new connection;
        its output is on the stdio ports, its exit code on the status port."""
        session = ExecSession(self, MAIN_SESSION, None, None)
        session.pid = 0
        return session

    def close(self) -> None:
        self._closed = True
        try:
            self._sel.close()
        finally:
            self._sock.close()

    def __enter__(self) -> AgentConnection:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_chunk(src: int | BinaryIO) -> bytes:
    """Up to one chunk of ``src``; a read error ends the stream like EOF."""
    try:
        return os.read(src, _CHUNK) if isinstance(src, int) else src.read(_CHUNK)
    except BlockingIOError:
        raise
    except OSError:
        return b""


def send_stream(session: ExecSession, src: int | BinaryIO, timeout: float | None,
                extra: dict[int, Callable[[], None]] | None = None) -> bool:
    """Send ``src`` (an fd or a binary file, read chunk by chunk) to the session's stdin, then
    EOF. A chunk is read only while fewer than _STDIN_HIGH bytes wait to be written, so memory
    stays bounded whatever the size; the connection (and ``extra``, see AgentConnection.step)
    is served meanwhile. False when the process exited first (it stopped reading); AgentError
    when the guest takes no stdin for ``timeout`` seconds (None: no limit)."""
    conn = session.conn
    stalled_since = time.monotonic()
    while session.exit_code is None:
        if conn.queued < _STDIN_HIGH:
            chunk = _read_chunk(src)
            if not chunk:
                session.close_stdin()
                return True
            session.stdin_write(chunk)
            stalled_since = time.monotonic()
            conn.step(0, extra)
            continue
        left = None
        if timeout is not None:
            left = stalled_since + timeout - time.monotonic()
            if left <= 0:
                raise AgentError(f"exec session {session.id}: the guest took no stdin for "
                                 f"{timeout:g}s")
        conn.step(left, extra)
    return False


def _stdin_kind(fd: int | None) -> str:
    """"poll" (pipe, socket, terminal), "file" (regular: not pollable, streamed) or "none"."""
    if fd is None:
        return "none"
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "none"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd):
        return "poll"
    return "file" if stat.S_ISREG(mode) else "none"


def pump_session(session: ExecSession, stdin_fd: int | None = 0, stdout_fd: int = 1,
                 stderr_fd: int = 2, *,
                 extra: dict[int, Callable[[], None]] | None = None) -> int:
    """Relay an attached session to local fds (stdin → STDIN, STDOUT → stdout_fd, STDERR →
    stderr_fd) until it exits; returns its exit code. A pipe, socket or terminal stdin is
    polled, a regular file streamed (send_stream), anything else (/dev/null) is EOF at once.
    ``extra`` fds are watched too, their callbacks run from this loop (a signal relay's
    wakeup fd). Raw mode of a terminal is the caller's. The session must have been started
    without output sinks."""
    session._on_stdout = lambda b: _write_all(stdout_fd, b)
    session._on_stderr = lambda b: _write_all(stderr_fd, b)
    for buf, fd in ((session.stdout, stdout_fd), (session.stderr, stderr_fd)):
        if buf:
            _write_all(fd, bytes(buf))
            buf.clear()
    conn = session.conn
    kind = _stdin_kind(stdin_fd)
    if kind == "file":
        assert stdin_fd is not None
        send_stream(session, stdin_fd, None, extra)
    elif kind == "none":
        session.close_stdin()
    reading = kind == "poll"

    def on_stdin() -> None:
        nonlocal reading
        assert stdin_fd is not None
        try:
            data = _read_chunk(stdin_fd)
        except BlockingIOError:
            return
        if data:
            session.stdin_write(data)
        else:
            reading = False
            session.close_stdin()

    while session.exit_code is None:
        fds = dict(extra or {})
        if reading and stdin_fd is not None and conn.queued < _STDIN_HIGH:
            fds[stdin_fd] = on_stdin
        conn.step(None, fds or None)
    return session.exit_code
