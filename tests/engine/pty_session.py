"""A command on a pseudo-terminal of the test's own, as a terminal emulator runs it: output
read as it comes, typed input, window resizes (TIOCSWINSZ + SIGWINCH)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time


class PtySession:
    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 24,
                 cols: int = 80) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            os.execve(argv[0], argv, env)
        self.pid, self.fd = pid, fd
        self.out = b""
        self.set_size(rows, cols)

    def set_size(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.kill(self.pid, signal.SIGWINCH)

    def send(self, text: bytes) -> None:
        os.write(self.fd, text)

    def expect(self, marker: bytes, timeout: float) -> bool:
        """Read until ``marker`` has been seen (since the start) or ``timeout``."""
        end = time.monotonic() + timeout
        while marker not in self.out and time.monotonic() < end:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:
                    break
        return marker in self.out

    def wait(self, timeout: float = 60) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.expect(b"\0never", 0.2)  # keep draining so the child never blocks
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = 0
                return os.waitstatus_to_exitcode(status)
        raise AssertionError(f"still running after {timeout} s: {self.out[-500:]!r}")

    def close(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0
        os.close(self.fd)
