"""A small synchronous HTTP/1.1 client for the registry client, on ``_socket``.

What the registry client needs and nothing more: keep-alive connections per origin shared
by threads, redirects (``Authorization`` dropped when a redirect leaves the origin),
connect and read timeouts, proxies from the environment (``http_proxy``, ``https_proxy``,
``no_proxy``), bodies streamed in 1 MiB pieces, a ``Content-Encoding`` the server sends
anyway decoded with a bound. Responses are framed as RFC 9112 says (chunked before
``Content-Length`` and that connection not reused, conflicting lengths refused, no body for
HEAD, 1xx, 204 and 304, folded header lines refused, headers and interim answers bounded);
a connection goes back to the pool only with its body read to the end and nothing after it.

Why not the standard library's ``http.client`` (used before, and httpx before it): it
imports ``email``, ``socket`` and ``ssl`` whatever the scheme, ~35 ms of every ``isobox pull``
and ``push`` here (httpx cost ~50 ms and streamed at 40 % of the rate). ``ssl`` is imported
here for an ``https`` origin only.
"""

from __future__ import annotations

import _socket
import base64
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, overload
from urllib.parse import unquote, urljoin, urlsplit

if TYPE_CHECKING:
    import ssl

CHUNK = 1 << 20
MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)
MAX_LINE = 64 << 10  # status line, header line, chunk-size line
MAX_HEADERS = 128
MAX_HEADER_BYTES = 256 << 10
MAX_INTERIM = 10
Body = bytes | Callable[[], Iterable[bytes]] | None
ContextFactory = Callable[[], "ssl.SSLContext"]


class TransportError(Exception):
    """The exchange failed below HTTP: connection, TLS, timeout, a malformed or truncated
    response."""


class _Disconnected(TransportError):
    """The server closed the connection before it answered (a stale keep-alive one)."""


Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin:
    """(scheme, host, port) with the default port made explicit; ValueError if invalid."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return scheme, parts.hostname.lower(), parts.port or (443 if scheme == "https" else 80)


def _env(name: str) -> str:
    """``name`` in lower case, else upper case (curl's order)."""
    return os.environ.get(name) or os.environ.get(name.upper()) or ""


def _no_proxy(host: str) -> bool:
    raw = _env("no_proxy")
    for entry in (e.strip().lower() for e in raw.split(",")):
        if entry == "*":
            return True
        entry = entry.lstrip(".").split(":")[0]
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    parts = host.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() for p in parts):
        return parts[0] == "127"
    if ":" not in host:
        return False
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def proxy_for(origin: Origin) -> str | None:
    """The environment's proxy URL for ``origin`` (curl's rules), or None. Loopback hosts
    are never proxied (as Go's and Docker's clients): a proxy's ``localhost`` is not ours,
    and a loopback registry is spoken to in plain HTTP first."""
    scheme, host, _ = origin
    url = _env(f"{scheme}_proxy") or _env("all_proxy")
    if not url or is_loopback_host(host) or _no_proxy(host):
        return None
    return url if "://" in url else f"http://{url}"


class _Sock(Protocol):
    """What is used of ``_socket.socket`` and ``ssl.SSLSocket``."""

    def recv(self, n: int, /) -> bytes: ...
    def recv_into(self, buf: memoryview, n: int = 0, /) -> int: ...
    def sendall(self, data: bytes, /) -> None: ...
    def settimeout(self, t: float | None, /) -> None: ...
    def close(self) -> None: ...


class Headers:
    """Response headers: names case-insensitive, ``get`` gives the first value."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._first: dict[str, str] = {}
        for k, v in items:
            self._first.setdefault(k.lower(), v)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self._items if k.lower() == low]


class Connection:
    """One TCP (or TLS) connection and its read buffer."""

    def __init__(self, sock: _Sock) -> None:
        self.sock = sock
        self._buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    @property
    def buffered(self) -> bool:
        return bool(self._buf)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        """One line with its ending; ``b""`` at end of stream."""
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= MAX_LINE or (i < 0 and len(self._buf) >= MAX_LINE):
                raise TransportError(f"a response line longer than {MAX_LINE} bytes")
            if i >= 0:
                line = bytes(self._buf[:i + 1])
                del self._buf[:i + 1]
                return line
            start = len(self._buf)
            data = self.sock.recv(65536)
            if not data:
                line = bytes(self._buf)
                self._buf.clear()
                return line
            self._buf += data

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at end of stream."""
        out = bytearray(n)
        view = memoryview(out)
        got = min(n, len(self._buf))
        if got:
            out[:got] = self._buf[:got]
            del self._buf[:got]
        while got < n:
            r = self.sock.recv_into(view[got:])
            if not r:
                break
            got += r
        view.release()
        if got < n:
            del out[got:]
        return bytes(out)


_NO_CHARS_IN_TARGET = frozenset(chr(c) for c in (*range(0x21), 0x7F))


def _check_field(text: str, what: str) -> None:
    if "\r" in text or "\n" in text or "\0" in text:
        raise TransportError(f"invalid {what} {text!r}: control characters")


def _request_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    if not method.isalpha() or _NO_CHARS_IN_TARGET.intersection(target):
        raise TransportError(f"invalid request target {target!r}")
    lines = [f"{method} {target} HTTP/1.1"]
    for k, v in headers.items():
        _check_field(k, "header name")
        _check_field(v, f"value of header {k}")
        lines.append(f"{k}: {v}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise TransportError(f"{method} {target}: a header is not Latin-1 text") from None


class Response:
    """A response whose body is read by the caller; ``close`` returns the connection to
    the pool when the body was read to its end."""

    def __init__(self, conn: Connection, client: HttpClient, key: tuple[Origin, str | None],
                 url: str, method: str) -> None:
        self._conn: Connection | None = conn
        self._client = client
        self._key = key
        self.url = url
        self.status_code, version = self._read_status(conn)
        interim = 0
        while 100 <= self.status_code < 200 and self.status_code != 101:
            interim += 1  # an interim answer (100 Continue): the real one follows
            if interim > MAX_INTERIM:
                raise TransportError(f"more than {MAX_INTERIM} interim (1xx) responses")
            self._read_headers(conn)
            self.status_code, version = self._read_status(conn)
        self.headers = Headers(self._read_headers(conn))
        tokens = {t.strip().lower() for v in self.headers.get_all("connection")
                  for t in v.split(",")}
        self._will_close = ("close" in tokens or self.status_code < 200  # 101: not ours
                            or (version == "HTTP/1.0" and "keep-alive" not in tokens))
        self._chunked = False
        self._remaining: int | None = None  # bytes of body left; None: until the close
        self._chunk_left = 0
        if method == "HEAD" or self.status_code in (204, 304) or self.status_code < 200:
            self._remaining = 0
        elif (te := self.headers.get_all("transfer-encoding")):
            codings = [c.strip().lower() for t in te for c in t.split(",") if c.strip()]
            if codings and codings[-1] == "chunked":
                self._chunked = True
                if self.headers.get("content-length") is not None:
                    self._will_close = True  # RFC 9112 6.3: ambiguous; not reused
            else:
                self._will_close = True  # RFC 9112 6.3: read until the connection closes
        else:
            lengths = {v.strip() for v in self.headers.get_all("content-length")}
            if len(lengths) > 1 or (lengths and not _is_decimal(next(iter(lengths)))):
                raise TransportError(f"{url}: invalid Content-Length {sorted(lengths)}")
            if lengths:
                self._remaining = int(next(iter(lengths)))
            else:
                self._will_close = True
        self._done = self._remaining == 0

    @staticmethod
    def _read_status(conn: Connection) -> tuple[int, str]:
        line = conn.readline()
        if not line:
            raise _Disconnected("the server closed the connection without answering")
        if not line.endswith(b"\n"):
            raise TransportError(f"the response ended inside its status line {line[:80]!r}")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        version = parts[0]
        if (len(parts) < 2 or not version.startswith("HTTP/1.") or len(parts[1]) != 3
                or not parts[1].isdigit()):
            raise TransportError(f"invalid HTTP status line {line[:80]!r}")
        return int(parts[1]), version

    @staticmethod
    def _read_headers(conn: Connection) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        total = 0
        while True:
            line = conn.readline()
            if not line.endswith(b"\n"):
                raise TransportError("the response ended inside its headers")
            if line in (b"\r\n", b"\n"):
                return items
            total += len(line)
            if len(items) >= MAX_HEADERS or total > MAX_HEADER_BYTES:
                raise TransportError(f"more than {MAX_HEADERS} response headers or "
                                     f"{MAX_HEADER_BYTES} bytes of them")
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t"):  # RFC 9112 5.2: obsolete line folding, refused
                raise TransportError(f"folded response header line {text[:80]!r}")
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip():
                raise TransportError(f"invalid response header line {text[:80]!r}")
            items.append((name, value.strip()))

    @property
    def is_closed(self) -> bool:
        return self._conn is None

    def _body_pieces(self, size: int) -> Iterator[bytes]:
        conn = self._conn
        assert conn is not None
        if self._chunked:
            while True:
                if self._chunk_left == 0:
                    line = conn.readline()
                    if not line.endswith(b"\n"):
                        raise TransportError("the chunked body ended early")
                    text = line.split(b";", 1)[0].strip()
                    if not text or text.strip(b"0123456789abcdefABCDEF"):
                        raise TransportError(f"invalid chunk size {text[:20]!r}")
                    self._chunk_left = int(text, 16)
                    if self._chunk_left == 0:
                        self._read_headers(conn)  # trailers, bounded as headers are
                        self._done = True
                        return
                data = conn.read(min(size, self._chunk_left))
                if not data:
                    raise TransportError("the chunked body ended early")
                self._chunk_left -= len(data)
                if self._chunk_left == 0 and conn.readline() not in (b"\r\n", b"\n"):
                    raise TransportError("a chunk does not end with CRLF")
                yield data
        remaining = self._remaining
        while remaining is None or remaining > 0:
            want = size if remaining is None else min(size, remaining)
            data = conn.read(want)
            if remaining is None:
                if not data:
                    self._done = True
                    return
            else:
                remaining -= len(data)
                self._remaining = remaining
                if len(data) < want:
                    got = (int(self.headers.get("content-length") or 0) - remaining)
                    if data:
                        yield data
                    raise TransportError(f"the body ended early: {got} bytes read, "
                                         f"{remaining} more expected")
            yield data
        self._done = True

    def iter_raw(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body as sent (no decoding of ``Content-Encoding``)."""
        if self._conn is None or self._done:
            return
        try:
            yield from self._body_pieces(size)
        except (OSError, TransportError) as e:
            self.close()
            raise TransportError(f"reading the response from {self.url}: "
                                 f"{_reason(e)}") from None

    def iter_bytes(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body decoded (gzip, deflate), no piece over ``size`` bytes."""
        encoding = (self.headers.get("content-encoding") or "identity").strip().lower()
        if encoding in ("", "identity"):
            yield from self.iter_raw(size)
            return
        if encoding not in ("gzip", "x-gzip", "deflate"):
            self.close()
            raise TransportError(f"{self.url}: unsupported Content-Encoding {encoding!r}")
        d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        try:
            for chunk in self.iter_raw(size):
                while chunk:
                    out = d.decompress(chunk, size)
                    chunk = d.unconsumed_tail
                    if out:
                        yield out
            tail = d.flush()
        except zlib.error as e:
            self.close()
            raise TransportError(f"{self.url}: bad {encoding} body: {e}") from None
        if tail:
            yield tail

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and not self._will_close and not conn.buffered:
            self._client._release(self._key, conn)  # (bytes past the body: not reusable)
        else:
            conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(host: str, port: int, timeout: float) -> _socket.socket:
    """A TCP connection to the first address of ``host`` that answers."""
    try:
        name: str | bytes = host.encode("ascii")  # a str name would load the idna codec
    except UnicodeEncodeError:
        name = host
    last: OSError | None = None
    for family, kind, proto, _, addr in _socket.getaddrinfo(name, port, 0,
                                                            _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError as e:
            sock.close()
            last = e
            continue
        return sock
    raise last or OSError(f"{host}: no address")


def _tls(sock: _socket.socket, context: ssl.SSLContext, host: str) -> _Sock:
    """``sock`` wrapped in TLS (handshake done) for ``host``."""
    import socket  # ssl wraps socket.socket objects

    timeout = sock.gettimeout()
    plain = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    try:
        plain.settimeout(timeout)  # the handshake is under the connect timeout
        return context.wrap_socket(plain, server_hostname=host)
    except BaseException:
        plain.close()
        raise


def _host_header(host: str, port: int, scheme: str) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


class HttpClient:
    """Connections per origin (and proxy), reused across requests and threads."""

    def __init__(self, tls: ContextFactory, *, timeout: float, connect_timeout: float,
                 headers: dict[str, str] | None = None, max_idle: int = 8) -> None:
        self._tls_factory = tls
        self._tls_context: ssl.SSLContext | None = None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.headers = dict(headers or {})
        self.max_idle = max_idle
        self._idle: dict[tuple[Origin, str | None], list[Connection]] = {}
        self._lock = threading.Lock()

    @property
    def tls_context(self) -> ssl.SSLContext:
        """Made on the first ``https`` connection (loading CAs costs ~30 ms)."""
        with self._lock:
            if self._tls_context is None:
                self._tls_context = self._tls_factory()
            return self._tls_context

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()

    def _release(self, key: tuple[Origin, str | None], conn: Connection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self.max_idle:
                conns.append(conn)
                return
        conn.close()

    def _connection(self, key: tuple[Origin, str | None]) -> tuple[Connection, bool]:
        """(connection, reused)."""
        with self._lock:
            conns = self._idle.get(key)
            if conns:
                return conns.pop(), True
        (scheme, host, port), proxy = key
        sock: _Sock
        try:
            if proxy is None:
                tcp = _connect(host, port, self.connect_timeout)
                sock = _tls(tcp, self.tls_context, host) if scheme == "https" else tcp
            else:
                sock = self._through_proxy(proxy, scheme, host, port)
            sock.settimeout(self.timeout)
        except OSError as e:
            raise TransportError(_reason(e)) from None
        return Connection(sock), False

    def _through_proxy(self, proxy: str, scheme: str, host: str, port: int) -> _Sock:
        """A connection to an HTTP proxy; for ``https``, a CONNECT tunnel with TLS inside."""
        p = urlsplit(proxy)
        if p.scheme != "http" or not p.hostname:
            raise TransportError(f"proxy {proxy!r}: only http:// proxies are supported")
        sock = _connect(p.hostname, p.port or 3128, self.connect_timeout)
        if scheme == "http":
            return sock
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        conn = Connection(sock)
        try:
            conn.send(_request_head("CONNECT", authority,
                                    {"Host": authority, **_proxy_auth(proxy)}))
            status = Response._read_status(conn)[0]
            Response._read_headers(conn)
        except BaseException:
            sock.close()
            raise
        if status != 200:
            sock.close()
            raise TransportError(f"proxy {p.hostname}: CONNECT {authority} answered HTTP "
                                 f"{status}")
        return _tls(sock, self.tls_context, host)

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                body: Body = None, auth: tuple[str, str] | None = None,
                follow_redirects: bool = True) -> Response:
        """Send and return the response with its body unread (the caller closes it).

        ``body`` may be a callable giving a fresh iterable of bytes, so that the request
        can be sent again (a stale keep-alive connection, a 307/308 redirect)."""
        hdrs = dict(headers or {})
        if auth is not None:
            raw = f"{auth[0]}:{auth[1]}".encode()
            hdrs["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send(method, url, hdrs, body)
            if not follow_redirects or resp.status_code not in REDIRECTS:
                return resp
            location = resp.headers.get("location")
            if not location:
                return resp
            _drain(resp)
            target = urljoin(url, location)
            try:
                same = origin_of(target) == origin_of(url)
            except ValueError:
                raise TransportError(f"{url}: invalid redirect to {location!r}") from None
            if not same:  # credentials stay with the origin that was given them
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
            if resp.status_code == 303 or (resp.status_code in (301, 302)
                                           and method == "POST"):
                method, body = "GET", None
                hdrs = {k: v for k, v in hdrs.items()
                        if k.lower() not in ("content-length", "content-type")}
            url = target
        raise TransportError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body) -> Response:
        try:
            origin = origin_of(url)
        except ValueError as e:
            raise TransportError(str(e)) from None
        proxy = proxy_for(origin)
        key = (origin, proxy)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers = {**self.headers, **headers}
        names = {k.lower() for k in all_headers}
        if proxy is not None and origin[0] == "http":
            target = url.split("#")[0]  # absolute form through an HTTP proxy
            all_headers.update(_proxy_auth(proxy))
        extra = {"Host": _host_header(origin[1], origin[2], origin[0])} \
            if "host" not in names else {}
        if "accept-encoding" not in names:
            extra["Accept-Encoding"] = "identity"
        chunked = False
        if body is None:
            if method in ("POST", "PUT", "PATCH") and "content-length" not in names:
                extra["Content-Length"] = "0"
        elif isinstance(body, bytes):
            if "content-length" not in names:
                extra["Content-Length"] = str(len(body))
        elif "content-length" not in names:
            chunked = True
            extra["Transfer-Encoding"] = "chunked"
        head = _request_head(method, target, {**extra, **all_headers})
        declared = next((v for k, v in all_headers.items() if k.lower() == "content-length"),
                        None)
        for attempt in (0, 1):
            conn, reused = self._connection(key)
            try:
                _send_body(conn, head, body, chunked, declared)
                return Response(conn, self, key, url, method)
            except (OSError, TransportError) as e:
                conn.close()
                # a keep-alive connection the server closed meanwhile: once more, afresh
                if reused and attempt == 0 and _stale(e):
                    continue
                raise TransportError(_reason(e)) from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")


def _send_body(conn: Connection, head: bytes, body: Body, chunked: bool,
               declared: str | None) -> None:
    if body is None or isinstance(body, bytes):
        data = body or b""
        if len(data) <= 64 << 10:
            conn.send(head + data)
        else:
            conn.send(head)
            conn.send(data)
        return
    limit = int(declared) if declared is not None and _is_decimal(declared) else None
    conn.send(head)
    sent = 0
    for piece in body():
        if not piece:
            continue  # an empty chunk would end a chunked body
        sent += len(piece)
        if limit is not None and sent > limit:  # the surplus would be the next "request"
            raise TransportError(f"the request body is over its Content-Length {declared}")
        conn.send(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
    if chunked:
        conn.send(b"0\r\n\r\n")
    elif limit is not None and sent != limit:
        raise TransportError(f"the request body was {sent} bytes, its Content-Length "
                             f"{declared}")


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone takes "²"


def _proxy_auth(proxy: str) -> dict[str, str]:
    p = urlsplit(proxy)
    if not p.username:
        return {}
    raw = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(raw).decode()}


def _stale(e: BaseException) -> bool:
    return isinstance(e, (_Disconnected, BrokenPipeError, ConnectionResetError,
                          ConnectionAbortedError))


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


def _drain(resp: Response) -> None:
    """Read a small redirect body so that its connection can be reused."""
    try:
        for i, _ in enumerate(resp.iter_raw(64 << 10)):
            if i > 16:
                break
    finally:
        resp.close()
