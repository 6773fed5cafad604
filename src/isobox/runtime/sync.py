"""A line protocol over a pair of pipes between the runtime and the processes it forks.

Pipes rather than a socketpair: :mod:`socket` imports :mod:`enum`, several ms of start-up.
Messages are single lines ``KIND [ARG]``; newlines inside an argument are flattened.
"""

from __future__ import annotations

import posix


class SyncPipe:
    __slots__ = ("_buf", "rfd", "wfd")

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self._buf = b""

    def send(self, kind: str, arg: str = "") -> None:
        line = f"{kind} {arg}".replace("\n", " ").rstrip() + "\n"
        data = line.encode()
        while data:
            n = posix.write(self.wfd, data)
            data = data[n:]

    def recv(self) -> tuple[str, str]:
        """The next message; ``("eof", "")`` once the other side has closed."""
        while b"\n" not in self._buf:
            chunk = posix.read(self.rfd, 65536)
            if not chunk:
                return "eof", ""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        kind, _, arg = line.decode(errors="replace").partition(" ")
        return kind, arg

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                posix.close(fd)
            except OSError:
                pass


def pair() -> tuple[SyncPipe, SyncPipe, tuple[int, int]]:
    """(parent end, child end, fds only the parent must close after fork)."""
    p2c_r, p2c_w = posix.pipe()
    c2p_r, c2p_w = posix.pipe()
    return SyncPipe(c2p_r, p2c_w), SyncPipe(p2c_r, c2p_w), (p2c_r, c2p_w)
