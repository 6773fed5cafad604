"""Limits on what one client can make the server hold (catalogue case 51): how deeply a JSON
body nests, and how long a connection may take to send a request's head or sit idle.

**Idle connections.** A request head (request line and headers) must arrive whole within
``idle_timeout`` seconds of the server starting to wait for it — also between requests on a
kept-alive connection — or the connection is dropped: a slowloris client dribbling a byte
now and then cannot hold a thread for longer than that. After the head, each read of the
body waits at most ``idle_timeout``. Responses are not limited (a ``wait`` or ``logs
--follow`` may run for hours), and a hijacked stream (attach, exec) is non-blocking and
outside this."""

from __future__ import annotations

import io
import itertools
import re
import socket
import time
from typing import Any

MAX_JSON_DEPTH = 100        # a create body nests 5 deep; Python's decoder dies near 1,000
DEFAULT_IDLE_TIMEOUT = 60.0

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``data`` nests arrays/objects deeper than ``limit`` (brackets
    inside strings do not count). Linear, without recursion."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0) > limit


class _HeadReader(io.RawIOBase):
    """The connection's reads for ``rfile``: while a request head is awaited, each read
    waits only for what is left of the head's deadline."""

    def __init__(self, sock: socket.socket, handler: IdleTimeouts) -> None:
        self.sock = sock
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int | None:
        deadline = self.handler.head_deadline
        if deadline:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request head did not arrive in time")
            self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buf)
        except BlockingIOError:  # a hijacked (non-blocking) connection with nothing yet
            return None


class IdleTimeouts:
    """Mixin for a ``BaseHTTPRequestHandler`` whose server has ``state.idle_timeout``
    (seconds; 0 = no limit)."""

    head_deadline = 0.0
    connection: socket.socket
    rfile: Any
    server: Any

    def _idle(self) -> float:
        return float(getattr(getattr(self.server, "state", None), "idle_timeout", 0) or 0)

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        self.rfile = io.BufferedReader(_HeadReader(self.connection, self))

    def handle_one_request(self) -> None:
        idle = self._idle()
        self.head_deadline = time.monotonic() + idle if idle else 0.0
        super().handle_one_request()  # type: ignore[misc]

    def parse_request(self) -> bool:
        ok: bool = super().parse_request()  # type: ignore[misc]
        self.head_deadline = 0.0   # the head is in: body reads wait at most idle each
        idle = self._idle()
        self.connection.settimeout(idle or None)
        return ok
