"""One HTTP/1.1 exchange over a :class:`http.server.BaseHTTPRequestHandler`: the request's
query and body (``Content-Length`` or chunked), and the three ways Docker answers — a whole
body, a chunked stream (logs, stats, wait, events), or a hijacked connection that stops being
HTTP after ``101 UPGRADED`` (attach, exec start)."""

from __future__ import annotations

import io
import json
import select
import socket
import ssl
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from isobox.api.errors import ApiError
from isobox.api.limits import MAX_JSON_DEPTH, json_depth_exceeds

MAX_JSON_BODY = 4 << 20          # a create or exec body is a few KiB; refuse huge ones
_TRUE = ("1", "true", "True", "TRUE", "yes")


class BodyReader:
    """The request body as a stream: ``Content-Length`` bytes, or chunked until the last
    chunk; ``read()`` returns b"" at its end."""

    def __init__(self, rfile: Any, length: int | None, chunked: bool) -> None:
        self.rfile = rfile
        self.left = length or 0
        self.chunked = chunked
        self.chunk_left = 0
        self.done = not chunked and not length

    def _next_chunk(self) -> None:
        line = self.rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)
        except ValueError:
            raise ApiError(400, "malformed chunked request body") from None
        if size == 0:
            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self.done = True
        self.chunk_left = size

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        if n is None or n < 0:
            parts = []
            while chunk := self.read(1 << 16):
                parts.append(chunk)
            return b"".join(parts)
        if not self.chunked:
            data: bytes = self.rfile.read(min(n, self.left)) if self.left else b""
            self.left -= len(data)
            if not data or self.left == 0:
                self.done = True
            return data
        if self.chunk_left == 0:
            self._next_chunk()
            if self.done:
                return b""
        data = self.rfile.read(min(n, self.chunk_left))
        if not data:
            raise ApiError(400, "request body ended early")
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            self.rfile.readline(8)  # the CRLF after a chunk
        return data

    def drain(self, limit: int = 64 << 20) -> bool:
        """Discard what is left (so the next request on the connection parses); False when
        more than ``limit`` bytes were left (the connection should close then)."""
        seen = 0
        while chunk := self.read(1 << 16):
            seen += len(chunk)
            if seen > limit:
                return False
        return True


class ChunkedWriter:
    """A chunked response body; a file-like ``write`` for tar and log streams."""

    def __init__(self, wfile: Any) -> None:
        self.wfile = wfile
        self.closed = False

    def write(self, data: bytes) -> int:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), bytes(data)))
        return len(data)

    def flush(self) -> None:
        self.wfile.flush()

    def json_line(self, obj: Any) -> None:
        self.write(json.dumps(obj).encode() + b"\n")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


class Exchange:
    """The request being served and the means to answer it (once)."""

    def __init__(self, handler: BaseHTTPRequestHandler, extra_headers: dict[str, str]) -> None:
        self.handler = handler
        self.method = handler.command
        self.path = urlsplit(handler.path).path
        self.query = parse_qs(urlsplit(handler.path).query, keep_blank_values=True)
        self.api_version = ""
        self.extra_headers = extra_headers
        self.headers = handler.headers
        self.responded = False
        self.hijacked = False
        length = handler.headers.get("Content-Length")
        chunked = "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
        self.bad_length = ""
        if length and chunked:  # which one frames the body? (request smuggling): refuse
            self.bad_length = f"{length} with Transfer-Encoding: chunked"
        n: int | None = None
        if length and not chunked:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n < 0:
                self.bad_length, n = length, None
        self.body = BodyReader(handler.rfile, n, chunked)

    def route(self, path: str, api_version: str) -> None:
        """The path without its version prefix, and the version the client asked for."""
        if self.bad_length:
            self.handler.close_connection = True
            raise ApiError(400, f"invalid Content-Length {self.bad_length!r}")
        self.path = path
        self.api_version = api_version

    # request ---------------------------------------------------------------------------------
    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        return list(self.query.get(name) or [])

    def flag(self, name: str, default: bool = False) -> bool:
        values = self.query.get(name)
        if not values:
            return default
        return values[-1] in _TRUE

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        text = self.arg(name)
        if text == "":
            return default
        try:
            return int(text)
        except ValueError:
            raise ApiError(400, f"invalid value for {name}: {text!r} is not an integer") from None

    def json_body(self, *, optional: bool = False) -> Any:
        data = self.body.read(MAX_JSON_BODY + 1)
        while len(data) <= MAX_JSON_BODY and (more := self.body.read(MAX_JSON_BODY + 1
                                                                       - len(data))):
            data += more
        if len(data) > MAX_JSON_BODY:
            self.body.done = True  # not drained: the connection closes after the 413
            self.handler.close_connection = True
            raise ApiError(413, f"request body larger than {MAX_JSON_BODY} bytes")
        if json_depth_exceeds(data):
            raise ApiError(400, f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if not data.strip():
            if optional:
                return None
            raise ApiError(400, "request body: expected a JSON object, got nothing")
        try:
            return json.loads(data)
        except ValueError as e:
            raise ApiError(400, f"request body: malformed JSON: {e}") from None

    # responses -------------------------------------------------------------------------------
    def _start(self, status: int, headers: dict[str, str], reason: str | None = None) -> None:
        if self.responded:
            raise RuntimeError("response already started")
        self.responded = True
        h = self.handler
        h.send_response(status, reason)
        for k, v in {**self.extra_headers, **headers}.items():
            h.send_header(k, v)
        h.end_headers()

    def send(self, status: int, body: bytes = b"", content_type: str = "text/plain; "
             "charset=utf-8", headers: dict[str, str] | None = None) -> None:
        hdrs = dict(headers or {})
        if status not in (204, 304):
            hdrs.setdefault("Content-Type", content_type)
            hdrs["Content-Length"] = str(len(body))
        self._start(status, hdrs)
        if body and self.method != "HEAD" and status not in (204, 304):
            self.handler.wfile.write(body)

    def send_json(self, status: int, obj: Any) -> None:
        self.send(status, json.dumps(obj).encode() + b"\n", "application/json")

    def send_error(self, status: int, message: str) -> None:
        self.send_json(status, {"message": message})

    def stream(self, status: int = 200, content_type: str = "application/json",
               headers: dict[str, str] | None = None) -> ChunkedWriter:
        self._start(status, {"Content-Type": content_type, "Transfer-Encoding": "chunked",
                             **(headers or {})})
        self.handler.wfile.flush()
        return ChunkedWriter(self.handler.wfile)

    def hijack(self, content_type: str) -> socket.socket:
        """Answer ``101 UPGRADED`` and hand over the connection: from here on its bytes
        are the process's stdin (those already read: :meth:`buffered_input`) and output."""
        return self.upgrade("UPGRADED", {"Content-Type": content_type, "Connection": "Upgrade",
                                         "Upgrade": "tcp"})

    def upgrade(self, reason: str, headers: dict[str, str]) -> socket.socket:
        """Answer ``101`` with ``headers``; the connection stops being HTTP."""
        self._start(101, headers, reason)
        self.handler.wfile.flush()
        self.hijacked = True
        self.handler.close_connection = True
        sock: socket.socket = self.handler.connection
        return sock

    def buffered_input(self) -> bytes:
        """After :meth:`hijack`: the client's bytes the HTTP reader had already buffered. The
        connection is non-blocking from here on (the hijacked stream's pump needs it so)."""
        sock: socket.socket = self.handler.connection
        sock.setblocking(False)
        rfile = cast(io.BufferedReader, self.handler.rfile)
        try:
            data = rfile.peek()
        except (OSError, ValueError):  # nothing buffered, and nothing to read yet
            return b""
        if data:
            rfile.read(len(data))
        return data

    def client_gone(self, *, eof_is_gone: bool = True) -> bool:
        """The client closed the connection. An end of input alone counts only with
        ``eof_is_gone``: a hijacked client half-closes when its stdin ends, and stays."""
        sock: socket.socket = self.handler.connection
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLRDHUP)
            events = poller.poll(0)
        except (OSError, ValueError):
            return True
        if not events:
            return False
        ev = events[0][1]
        if ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            return True
        if not eof_is_gone:
            return False
        if isinstance(sock, ssl.SSLSocket):
            # bytes on the wire are TLS records, not data: only the peer's FIN tells
            return bool(ev & select.POLLRDHUP)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
