"""Where the client connects (``unix://PATH``, ``tcp://HOST:PORT`` with TLS client
certificates) and the two streams httpx does not give: a hijacked connection (``101
UPGRADED``: attach, exec start) and Docker's 8-byte multiplexing header on it and on logs."""

from __future__ import annotations

import json
import socket
import ssl
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from isobox.api.client_errors import ConnectError, error_for
from isobox.errors import ConfigError

DEFAULT_URL = "unix:///run/isobox/isobox.sock"
STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}
MAX_HEAD = 64 << 10


@dataclass(frozen=True)
class Endpoint:
    url: str
    socket_path: str = ""
    host: str = ""
    port: int = 0
    tls: ssl.SSLContext | None = None

    @classmethod
    def parse(cls, url: str, *, tls_cert: str = "", tls_key: str = "", tls_ca: str = ""
              ) -> Endpoint:
        """``unix:///path`` (or a bare absolute path), ``tcp://host:port`` — TLS when a
        certificate or CA is given (the server serves TCP only with mutual TLS) — or
        ``https://host:port``."""
        if url.startswith("/"):
            url = "unix://" + url
        parts = urlsplit(url)
        if parts.scheme == "unix":
            path = parts.path or parts.netloc
            if not path:
                raise ConfigError("--host", f"{url}: no socket path")
            return cls(url, socket_path=path)
        if parts.scheme not in ("tcp", "https", "http"):
            raise ConfigError("--host", f"{url}: expected unix:///PATH or tcp://HOST:PORT")
        if not parts.hostname or not parts.port:
            raise ConfigError("--host", f"{url}: expected tcp://HOST:PORT")
        tls = None
        if parts.scheme == "https" or tls_cert or tls_ca:
            tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=tls_ca or None)
            if tls_cert:
                tls.load_cert_chain(tls_cert, tls_key or None)
        return cls(url, host=parts.hostname, port=parts.port, tls=tls)

    @property
    def base_url(self) -> str:
        if self.socket_path:
            return "http://isobox"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def connect(self, timeout: float | None) -> socket.socket:
        try:
            if self.socket_path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(self.socket_path)
                return sock
            raw = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as e:
            raise ConnectError(f"cannot connect to {self.url}: {e.strerror or e}") from None
        if self.tls is None:
            return raw
        return self.tls.wrap_socket(raw, server_hostname=self.host)


class Hijacked:
    """A connection after ``101 UPGRADED``: raw bytes both ways."""

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self.pending = buffered

    def read(self, n: int = 65536) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:n], self.pending[n:]
            return data
        try:
            return self.sock.recv(n)
        except (ConnectionResetError, ssl.SSLError):
            return b""

    def chunks(self) -> Iterator[bytes]:
        while data := self.read():
            yield data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_input(self) -> None:
        """Half-close: the process's stdin ends, its output still comes."""
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                return  # a TLS half-close would end the session; the process keeps stdin
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def hijack(endpoint: Endpoint, method: str, path: str, body: object = None,
           timeout: float | None = None) -> Hijacked:
    """Send one request asking for an upgrade; the stream on 101, the mapped error else."""
    data = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: isobox\r\nConnection: Upgrade\r\n"
            f"Upgrade: tcp\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    sock = endpoint.connect(timeout)
    try:
        sock.sendall(head + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk or len(buf) > MAX_HEAD:
                raise ConnectError(f"{endpoint.url}: the server closed the connection")
            buf += chunk
        header, _, rest = buf.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status == 101:
            sock.settimeout(None)
            return Hijacked(sock, rest)
        length = next((int(v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])
                       if k.strip().lower() == "content-length"), None)
        while length is not None and len(rest) < length and (chunk := sock.recv(65536)):
            rest += chunk
        try:
            message = str(json.loads(rest or b"{}").get("message") or "")
        except ValueError:
            message = rest.decode(errors="replace").strip()
        raise error_for(status, message)
    except BaseException:
        sock.close()
        raise


def demux(chunks: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """Docker's multiplexed stream: (stream name, payload) per frame."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 8:
            kind, size = buf[0], struct.unpack(">I", buf[4:8])[0]
            if len(buf) < 8 + size:
                break
            yield STREAMS.get(kind, "stdout"), buf[8:8 + size]
            buf = buf[8 + size:]
