"""Helpers of the transport tests: a throw-away PKI made with openssl, `isobox serve` with
`--tcp` on 127.0.0.1 (an ephemeral port read back from its log), the docker CLI pointed at
it with DOCKER_TLS_VERIFY, and a small RFC 6455 client for the websocket attach."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass

from api_helpers import DOCKER, ApiServer, raw
from engine_helpers import NET_PREFIX, Isobox

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: str, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: str, ca: str, name: str, ext: str) -> None:
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
             f"{ca}-key.pem", "-CAcreateserial", "-out", f"{name}-cert.pem", "-days", "2",
             "-extfile", f"{name}.ext", cwd=d)


@dataclass
class Pki:
    dir: str

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @classmethod
    def make(cls, d: str) -> Pki:
        """A CA with a server (127.0.0.1) and a client certificate; another CA with a client
        certificate of its own (which the server must refuse)."""
        _ca(d, "ca")
        _leaf(d, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n")
        _leaf(d, "ca", "client", "extendedKeyUsage=clientAuth\n"
              "keyUsage=critical,digitalSignature\n")
        _ca(d, "other-ca")
        _leaf(d, "other-ca", "stranger", "extendedKeyUsage=clientAuth\n"
              "keyUsage=critical,digitalSignature\n")
        # the docker CLI's DOCKER_CERT_PATH layout
        certs = os.path.join(d, "docker")
        os.mkdir(certs)
        for src, dst in (("ca.pem", "ca.pem"), ("client-cert.pem", "cert.pem"),
                         ("client-key.pem", "key.pem")):
            with open(os.path.join(d, src), "rb") as f, open(os.path.join(certs, dst),
                                                             "wb") as g:
                g.write(f.read())
        return cls(d)

    def client_context(self, cert: str | None = "client") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        if cert is not None:
            ctx.load_cert_chain(self.path(f"{cert}-cert.pem"), self.path(f"{cert}-key.pem"))
        return ctx


class TlsServer(ApiServer):
    """`isobox serve --socket … --tcp 127.0.0.1:0 --tls-…`; ``port`` is the one it got."""

    port = 0

    @classmethod
    def start_tls(cls, root: str, socket_path: str, pki: Pki) -> TlsServer:
        log_path = socket_path + ".log"
        env = {**os.environ, "ISOBOX_ROOT": root, "ISOBOX_NET_PREFIX": NET_PREFIX}
        env.pop("ISOBOX_RUN_DIR", None)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [Isobox.binary(), "serve", "--socket", socket_path, "--tcp", "127.0.0.1:0",
                 "--tls-cert", pki.path("server-cert.pem"), "--tls-key",
                 pki.path("server-key.pem"), "--tls-ca", pki.path("ca.pem")],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        server = cls(proc, socket_path, log_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"isobox serve exited: {server.log()}")
            m = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", server.log())
            try:
                if m and raw(socket_path, "GET", "/_ping")[0] == 200:
                    server.port = int(m.group(1))
                    return server
            except OSError:
                pass
            time.sleep(0.05)
        server.stop()
        raise AssertionError(f"isobox serve did not answer: {server.log()}")


def tls_docker_env(port: int, pki: Pki) -> dict[str, str]:
    env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{port}", "DOCKER_TLS_VERIFY": "1",
           "DOCKER_CERT_PATH": pki.path("docker"), "DOCKER_CONFIG": "/nonexistent-isobox-test"}
    env.pop("DOCKER_API_VERSION", None)
    return env


def docker_tls(env: dict[str, str], *args: str, input_: bytes | None = None,
               check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run([DOCKER, *args], env=env, input=input_, capture_output=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}:\n"
                             f"{p.stdout!r}\n{p.stderr!r}")
    return p


# -- a minimal websocket client (RFC 6455) ------------------------------------------------

class WebSocket:
    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self.buf = rest

    @classmethod
    def connect(cls, sock: socket.socket, path: str) -> tuple[WebSocket | None, bytes]:
        """The handshake; (client, b"") on 101, else (None, the whole answer)."""
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
                     b"Origin: http://localhost\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None, data
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(b":") for line in head.split(b"\r\n")[1:])}
        if not head.startswith(b"HTTP/1.1 101"):
            length = int(headers.get(b"content-length", b"0"))
            while len(rest) < length and (chunk := sock.recv(4096)):
                rest += chunk
            return None, head + b"\r\n\r\n" + rest
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        assert headers.get(b"sec-websocket-accept") == accept, head
        return cls(sock, rest), head

    def send(self, payload: bytes, opcode: int = 2) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def _need(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next frame; None when the connection ended."""
        if not self._need(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "a server's frames are not masked"
        n, off = b1 & 0x7F, 2
        if n == 126:
            if not self._need(4):
                return None
            n, off = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            if not self._need(10):
                return None
            n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
        if not self._need(off + n):
            return None
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return b0 & 0x0F, payload

    def read_until_close(self, timeout: float = 20) -> tuple[list[tuple[int, bytes]], bool]:
        """Every frame up to the server's close frame; (frames, closed cleanly)."""
        self.sock.settimeout(timeout)
        frames: list[tuple[int, bytes]] = []
        while (f := self.recv()) is not None:
            if f[0] == 8:
                return frames, True
            frames.append(f)
        return frames, False
