"""The terminal of an ``exec -t``: the runtime makes the pty and sends its master over a console
socket (runc's ``--console-socket`` protocol); the caller relays it (the CLI to its own terminal,
the API to a hijacked connection)."""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from isobox.errors import SystemSetupError

if TYPE_CHECKING:
    import socket

    from isobox.engine.execute import ExecProcess

CONSOLE_TIMEOUT = 30.0


class ConsoleSocket:
    """``with ConsoleSocket() as cs:`` a listening socket at ``cs.path`` in a private temporary
    directory, removed on exit."""

    def __init__(self) -> None:
        import socket
        import tempfile

        self._dir = tempfile.mkdtemp(prefix="isobox-console-")
        self.path = os.path.join(self._dir, "console.sock")
        self._listener: socket.socket = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._listener.bind(self.path)
            self._listener.listen(1)
        except BaseException:
            self.close()
            raise

    def receive(self, proc: ExecProcess) -> int:
        """The pty master the runtime sends (SCM_RIGHTS); the runtime's error if it fails first."""
        import socket

        deadline = time.monotonic() + CONSOLE_TIMEOUT
        self._listener.settimeout(0.1)
        while True:
            try:
                conn, _ = self._listener.accept()
                break
            except TimeoutError:
                if proc.proc.poll() is not None:
                    err = proc.proc.stderr.read().decode(errors="replace").strip() \
                        if proc.proc.stderr else ""
                    raise SystemSetupError(f"exec failed: {err or 'no terminal received'}") \
                        from None
                if time.monotonic() > deadline:
                    proc.proc.kill()
                    raise SystemSetupError("exec: the runtime sent no terminal") from None
        with conn:
            conn.settimeout(CONSOLE_TIMEOUT)
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
        if not fds:
            raise SystemSetupError("exec: the runtime sent no terminal")
        os.set_inheritable(fds[0], False)
        return fds[0]

    def close(self) -> None:
        import shutil

        self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Our terminal (fd 0) in raw mode while relaying, if it is one."""
    if not enabled or not os.isatty(0):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(0)
    try:
        tty.setraw(0)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def set_window(master: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except OSError:
        pass


def relay(master: int, stdin_fd: int | None, stdout_fd: int) -> None:
    """Copy ``stdin_fd`` to the pty and the pty to ``stdout_fd`` until every holder of the
    pty's other end has gone (EIO). Writes to the pty never block: with both pty buffers full
    (a large paste echoed back) a blocking write would stop us reading, and the other side
    too."""
    os.set_blocking(master, False)
    pending = bytearray()  # for the pty
    poller = select.poll()
    reading_input = stdin_fd is not None

    def interest() -> None:
        poller.register(master, select.POLLIN | (select.POLLOUT if pending else 0))
        if stdin_fd is not None:
            if reading_input and len(pending) < INPUT_HIGH:
                poller.register(stdin_fd, select.POLLIN)
            else:
                try:
                    poller.unregister(stdin_fd)
                except KeyError:
                    pass

    while True:
        interest()
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == master:
                if ev & select.POLLOUT and pending:
                    try:
                        pending[:os.write(master, pending)] = b""
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        pending.clear()
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    try:
                        data = os.read(master, 65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:  # EIO: the other end is gone
                        return
                    if not data:
                        return
                    _write_all(stdout_fd, data)
            elif reading_input:
                try:
                    data = os.read(fd, 65536)
                except InterruptedError:
                    continue
                except OSError:
                    data = b""
                if data:
                    pending += data
                else:  # end of our input: the terminal sees ^D, as a typed one
                    pending += b"\x04"
                    reading_input = False


INPUT_HIGH = 1 << 20  # input queued for the pty above which our input is not read further


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:
            return
