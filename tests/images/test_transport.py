"""The registry's HTTP transport (isobox.images.registry.transport) against small local
HTTP servers: connection reuse, redirects and credentials, truncated bodies, encodings,
stale keep-alive connections, proxies from the environment."""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from registry_server import Registry, make_ca

from isobox.images.registry import transport
from isobox.images.registry.transport import HttpClient, TransportError, proxy_for


class Server:
    """An HTTP/1.1 server whose answers the test sets per path; it records what it got."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.seen: list[tuple[str, str, dict[str, str], int]] = []  # method, target, headers, conn
        self.connections = 0
        self.close_after_response = False
        self.truncate: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                outer.connections += 1
                self.conn_no = outer.connections

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.seen.append((self.command, self.path, dict(self.headers.items()),
                                   self.conn_no))
                key = self.path.split("?")[0] if not self.path.startswith("http") else self.path
                status, headers, body = outer.routes.get(key, (404, {}, b"no"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                if outer.close_after_response:
                    self.send_header("Connection", "keep-alive")
                self.end_headers()
                cut = outer.truncate.get(key)
                if self.command != "HEAD":
                    self.wfile.write(body if cut is None else body[:cut])
                if cut is not None or outer.close_after_response:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def other() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpClient]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    c = HttpClient(ssl.create_default_context, timeout=10, connect_timeout=5,
                   headers={"User-Agent": "isobox-test"})
    yield c
    c.close()


def test_keep_alive_connection_is_reused(server: Server, client: HttpClient) -> None:
    server.routes["/a"] = (200, {}, b"x" * 3000)
    for _ in range(3):
        with client.request("GET", f"{server.url}/a") as r:
            assert r.status_code == 200 and r.read() == b"x" * 3000
    assert server.connections == 1
    assert server.seen[0][2]["User-Agent"] == "isobox-test"


def test_unread_body_closes_the_connection_instead_of_reusing_it(
        server: Server, client: HttpClient) -> None:
    server.routes["/big"] = (200, {}, b"y" * (3 << 20))
    server.routes["/a"] = (200, {}, b"ok")
    r = client.request("GET", f"{server.url}/big")
    next(r.iter_raw(1024))
    r.close()
    with client.request("GET", f"{server.url}/a") as r2:
        assert r2.read() == b"ok"
    assert server.connections == 2


def test_redirect_keeps_credentials_on_the_origin_only(server: Server, other: Server,
                                                       client: HttpClient) -> None:
    server.routes["/same"] = (307, {"Location": "/final"}, b"")
    server.routes["/final"] = (200, {}, b"same")
    server.routes["/away"] = (302, {"Location": f"{other.url}/blob"}, b"moved")
    other.routes["/blob"] = (200, {}, b"data")
    with client.request("GET", f"{server.url}/same",
                        headers={"Authorization": "Bearer t"}) as r:
        assert r.read() == b"same" and r.url == f"{server.url}/final"
    assert server.seen[-1][2].get("Authorization") == "Bearer t"
    with client.request("GET", f"{server.url}/away",
                        headers={"Authorization": "Bearer t"}) as r:
        assert r.read() == b"data"
    assert "Authorization" not in other.seen[-1][2]


def test_redirect_loop_is_an_error(server: Server, client: HttpClient) -> None:
    server.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    with pytest.raises(TransportError, match="redirects"):
        client.request("GET", f"{server.url}/loop")


def test_post_answered_303_is_followed_with_get(server: Server, client: HttpClient) -> None:
    server.routes["/upload"] = (303, {"Location": "/status"}, b"")
    server.routes["/status"] = (200, {}, b"done")
    with client.request("POST", f"{server.url}/upload", body=b"payload") as r:
        assert r.read() == b"done"
    assert [s[0] for s in server.seen] == ["POST", "GET"]


def test_truncated_body_raises(server: Server, client: HttpClient) -> None:
    server.routes["/cut"] = (200, {}, b"z" * 100_000)
    server.truncate["/cut"] = 40_000
    r = client.request("GET", f"{server.url}/cut")
    with pytest.raises(TransportError, match="60000 more expected"):
        for _ in r.iter_raw(8192):
            pass
    assert r.is_closed


def test_gzip_content_encoding_is_decoded_in_bounded_pieces(server: Server,
                                                             client: HttpClient) -> None:
    plain = b"a" * (5 << 20)
    server.routes["/gz"] = (200, {"Content-Encoding": "gzip"}, gzip.compress(plain))
    with client.request("GET", f"{server.url}/gz") as r:
        pieces = list(r.iter_bytes(1 << 20))
    assert b"".join(pieces) == plain
    assert max(len(p) for p in pieces) <= 1 << 20
    assert server.seen[-1][2]["Accept-Encoding"] == "identity"


def test_unknown_content_encoding_is_refused(server: Server, client: HttpClient) -> None:
    server.routes["/br"] = (200, {"Content-Encoding": "br"}, b"???")
    r = client.request("GET", f"{server.url}/br")
    with pytest.raises(TransportError, match="Content-Encoding 'br'"):
        r.read()


def test_stale_keep_alive_connection_is_retried_once(server: Server,
                                                     client: HttpClient) -> None:
    server.routes["/a"] = (200, {}, b"one")
    server.close_after_response = True  # says keep-alive, then closes
    with client.request("GET", f"{server.url}/a") as r:
        assert r.read() == b"one"
    with client.request("PUT", f"{server.url}/a", body=lambda: iter([b"ab", b"cd"]),
                        headers={"Content-Length": "4"}) as r:
        assert r.status_code == 200
    assert server.connections == 2


def test_connection_refused_is_a_transport_error(client: HttpClient) -> None:
    srv = Server()
    url = srv.url
    srv.stop()
    with pytest.raises(TransportError):
        client.request("GET", f"{url}/v2/")


def test_http_proxy_from_the_environment(server: Server, other: Server, client: HttpClient,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An HTTP proxy gets absolute-form targets and its credentials; no_proxy bypasses it."""
    target = "http://registry.invalid:5000/v2/"
    server.routes[target] = (200, {}, b"via proxy")
    monkeypatch.setenv("http_proxy", f"http://user:pa%20ss@127.0.0.1:{server.port}")
    with client.request("GET", target) as r:
        assert r.read() == b"via proxy"
    method, path, headers, _ = server.seen[-1]
    assert method == "GET"
    assert path == target and headers["Host"] == "registry.invalid:5000"
    assert headers["Proxy-Authorization"] == "Basic dXNlcjpwYSBzcw=="  # user:pa ss
    other.routes["/direct"] = (200, {}, b"direct")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    with client.request("GET", f"{other.url}/direct") as r:
        assert r.read() == b"direct"


def test_proxy_rules() -> None:
    env = {"https_proxy": "proxy:3128", "no_proxy": ".example.com,10.1.2.3"}
    mp = pytest.MonkeyPatch()
    try:
        for k in ("http_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                  "NO_PROXY"):
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        assert proxy_for(("https", "reg.io", 443)) == "http://proxy:3128"
        assert proxy_for(("http", "reg.io", 80)) is None
        assert proxy_for(("https", "a.example.com", 443)) is None
        assert proxy_for(("https", "example.com", 443)) is None
        assert proxy_for(("https", "10.1.2.3", 443)) is None
        for loopback in ("localhost", "127.0.0.1", "127.9.8.7", "::1"):  # never proxied
            assert proxy_for(("https", loopback, 5000)) is None
        assert proxy_for(("https", "128.0.0.1", 5000)) == "http://proxy:3128"
    finally:
        mp.undo()


class RawServer:
    """Answers each request with the next scripted bytes, as they are, and closes the
    connection after an answer scripted with ``close``; it keeps what it received."""

    def __init__(self, script: list[bytes | tuple[bytes, str]]) -> None:
        self.script = list(script)
        self.received: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return b""
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        chunked = b"transfer-encoding: chunked" in head.lower()
        while len(rest) < length if not chunked else not rest.endswith(b"0\r\n\r\n"):
            piece = conn.recv(65536)
            if not piece:
                break
            rest += piece
        return head + b"\r\n\r\n" + rest

    def _serve(self) -> None:
        while self.script:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                while self.script:
                    try:
                        request = self._read_request(conn)
                    except OSError:
                        break
                    if not request:
                        break
                    self.received.append(request)
                    try:
                        answer = self.script.pop(0)
                    except IndexError:  # stopped meanwhile
                        break
                    data, close = answer if isinstance(answer, tuple) else (answer, "")
                    conn.sendall(data)
                    if close:
                        break

    def stop(self) -> None:
        self.script.clear()
        self.sock.close()
        self.thread.join(5)


Script = list[bytes | tuple[bytes, str]]


@pytest.fixture
def raw() -> Iterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def make(script: Script) -> RawServer:
        servers.append(RawServer(script))
        return servers[-1]
    yield make
    for s in servers:
        s.stop()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_chunked_body_with_extensions_and_trailers_then_reuse(
        raw: Callable[[Script], RawServer], client: HttpClient) -> None:
    srv = raw([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;name=x\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n", OK])
    with client.request("GET", f"{srv.url}/c") as r:
        assert r.read() == b"hello world"
    with client.request("GET", f"{srv.url}/d") as r:
        assert r.read() == b"ok"
    assert srv.connections == 1


def test_conflicting_content_lengths_are_refused(
        raw: Callable[[Script], RawServer], client: HttpClient) -> None:
    srv = raw([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\nok"])
    with pytest.raises(TransportError, match="invalid Content-Length"):
        client.request("GET", f"{srv.url}/x")


@pytest.mark.parametrize("answer, message", [
    (b"HTTP/1.1 2000 OK\r\n\r\n", "invalid HTTP status line"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "invalid HTTP status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "invalid response header line"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", "more than 128 response headers"),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (70 << 10) + b"\r\n\r\n", "longer than"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "ended inside its headers"),
    (b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n", "folded response header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nok", "invalid Content-Length"),
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 11 + OK, "more than 10 interim"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: " % i + b"v" * 60000 + b"\r\n" for i in range(5))
     + b"\r\n", "bytes of them"),
])
def test_malformed_or_oversized_answers_are_transport_errors(
        raw: Callable[[Script], RawServer], client: HttpClient,
        answer: bytes, message: str) -> None:
    srv = raw([(answer, "close")])
    with pytest.raises(TransportError, match=message):
        client.request("GET", f"{srv.url}/x")


def test_bad_chunk_size_is_an_error_naming_the_url(
        raw: Callable[[Script], RawServer], client: HttpClient) -> None:
    srv = raw([(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "close")])
    r = client.request("GET", f"{srv.url}/x")
    with pytest.raises(TransportError, match=rf"{srv.url}/x: invalid chunk size b'zz'"):
        r.read()
    assert r.is_closed


def test_http_1_0_body_runs_to_the_close_and_the_connection_is_not_reused(
        raw: Callable[[Script], RawServer], client: HttpClient) -> None:
    srv = raw([(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", "close"), OK])
    with client.request("GET", f"{srv.url}/a") as r:
        assert r.read() == b"until the end"
    with client.request("GET", f"{srv.url}/b") as r:
        assert r.read() == b"ok"
    assert srv.connections == 2


def test_interim_100_continue_is_skipped(
        raw: Callable[[Script], RawServer], client: HttpClient) -> None:
    srv = raw([b"HTTP/1.1 100 Continue\r\n\r\n" + OK])
    with client.request("PUT", f"{srv.url}/u", body=b"data") as r:
        assert r.status_code == 200 and r.read() == b"ok"
    head, _, body = srv.received[0].partition(b"\r\n\r\n")
    assert head.startswith(b"PUT /u HTTP/1.1\r\n") and b"Content-Length: 4" in head
    assert f"Host: 127.0.0.1:{srv.port}".encode() in head and body == b"data"


@pytest.mark.parametrize("headers, url_suffix, message", [
    ({"Authorization": "Bearer t\r\nX-Injected: 1"}, "/x", "control characters"),
    ({"X-Bad\nName": "v"}, "/x", "control characters"),
    ({}, "/a b", "invalid request target"),
    ({"X-Text": "\u20ac"}, "/x", "not Latin-1"),
])
def test_requests_that_would_inject_are_refused_before_sending(
        raw: Callable[[Script], RawServer], client: HttpClient,
        headers: dict[str, str], url_suffix: str, message: str) -> None:
    srv = raw([OK])
    with pytest.raises(TransportError, match=message):
        client.request("GET", f"{srv.url}{url_suffix}", headers=headers)
    assert srv.received == []


def test_body_shorter_than_its_content_length_is_an_error(
        raw: Callable[[Script], RawServer], client: HttpClient) -> None:
    srv = raw([OK])
    with pytest.raises(TransportError, match="was 3 bytes, its Content-Length 10"):
        client.request("PUT", f"{srv.url}/u", body=lambda: iter([b"abc"]),
                       headers={"Content-Length": "10"})


def test_iterable_body_without_length_is_sent_chunked(
        raw: Callable[[Script], RawServer], client: HttpClient) -> None:
    srv = raw([OK])
    with client.request("POST", f"{srv.url}/u", body=lambda: iter([b"ab", b"", b"cde"])) as r:
        assert r.read() == b"ok"
    head, _, body = srv.received[0].partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"


def test_https_through_a_connect_proxy(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A CONNECT tunnel with the proxy's credentials, then TLS to the registry inside it,
    verified against the test CA (its certificate also names registry.test: loopback
    hosts are never proxied, the proxy connects to 127.0.0.1 whatever the name)."""
    pki = make_ca(str(tmp_path))
    reg = Registry(tls=pki)
    seen: list[bytes] = []
    proxy = socket.create_server(("127.0.0.1", 0))

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            b.close()

    def serve() -> None:
        conn, _ = proxy.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        seen.append(head)
        upstream = socket.create_connection(("127.0.0.1", reg.port))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
        pipe(conn, upstream)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    monkeypatch.setenv("https_proxy", f"http://u:p@127.0.0.1:{proxy.getsockname()[1]}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    c = HttpClient(lambda: ssl.create_default_context(cafile=pki["ca.crt"]), timeout=10,
                   connect_timeout=5)
    try:
        with c.request("GET", f"https://registry.test:{reg.port}/v2/") as r:
            assert r.status_code == 200 and r.read() == b"{}"
    finally:
        c.close()
        proxy.close()
        reg.stop()
        t.join(5)
    assert seen[0].startswith(f"CONNECT registry.test:{reg.port} HTTP/1.1\r\n".encode())
    assert b"Proxy-Authorization: Basic dTpw\r\n" in seen[0]  # u:p


def test_tls_to_a_plain_http_server_fails_cleanly(server: Server, client: HttpClient) -> None:
    with pytest.raises(TransportError):
        client.request("GET", server.url.replace("http://", "https://") + "/v2/")


def test_connect_authority_always_has_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authority form needs the port, 443 included; a refused CONNECT is an error."""
    seen: list[bytes] = []
    proxy = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = proxy.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            seen.append(head)
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    c = HttpClient(ssl.create_default_context, timeout=5, connect_timeout=5)
    try:
        with pytest.raises(TransportError, match=r"CONNECT registry\.test:443 answered HTTP 403"):
            c.request("GET", "https://registry.test/v2/")
    finally:
        c.close()
        proxy.close()
        t.join(5)
    assert seen[0].startswith(b"CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443")


@pytest.mark.parametrize("size", [b"0x5", b"+5", b"0_5", b"-5"])
def test_chunk_sizes_are_plain_hex(raw: Callable[[Script], RawServer], client: HttpClient,
                                   size: bytes) -> None:
    srv = raw([(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size
                + b"\r\nhello\r\n0\r\n\r\n", "close")])
    r = client.request("GET", f"{srv.url}/x")
    with pytest.raises(TransportError, match="invalid chunk size"):
        r.read()


@pytest.mark.parametrize("first", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
    b"Content-Length: 6\r\n\r\nINJECT",  # bytes past the framed body
    b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\n"
    b"Content-Length: 6\r\n\r\nINJECT",  # an upgrade nobody asked for
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",  # ambiguous framing
])
def test_a_connection_with_doubtful_framing_is_not_reused(
        raw: Callable[[Script], RawServer], client: HttpClient, first: bytes) -> None:
    """Otherwise the next request would read the bytes left over as its answer."""
    srv = raw([(first, "close"), b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"])
    with client.request("GET", f"{srv.url}/a") as r:
        assert r.read() == b"ok" or r.status_code == 101  # chunked wins over Content-Length
    with client.request("GET", f"{srv.url}/b") as r:
        assert r.read() == b"real"
    assert srv.connections == 2


def test_body_over_its_content_length_is_not_sent(
        raw: Callable[[Script], RawServer], client: HttpClient) -> None:
    srv = raw([OK])
    smuggled = b"0123456789GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    with pytest.raises(TransportError, match="over its Content-Length 10"):
        client.request("PUT", f"{srv.url}/u", body=lambda: iter([smuggled]),
                       headers={"Content-Length": "10"})
    client.close()
    srv.stop()
    assert all(b"smuggled" not in r for r in srv.received)


def test_a_body_that_fails_closes_its_connection(
        raw: Callable[[Script], RawServer], client: HttpClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def body() -> Iterator[bytes]:
        yield b"ab"
        raise RuntimeError("the file went away")

    closed: list[object] = []
    real_close = transport.Connection.close

    def close(self: transport.Connection) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(transport.Connection, "close", close)
    srv = raw([OK, OK])
    with pytest.raises(RuntimeError, match="went away"):
        client.request("PUT", f"{srv.url}/u", body=body, headers={"Content-Length": "4"})
    assert len(closed) == 1 and client._idle == {}  # closed, not leaked nor put back
