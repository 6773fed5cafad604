"""Real registries for tests: Debian's ``docker-registry`` on 127.0.0.1 (plain HTTP, or HTTPS
with a test CA; htpasswd or bearer-token auth), a recording/fault-injecting reverse proxy,
and a tiny token server that signs JWTs with ``openssl``.

Everything binds 127.0.0.1 on a free port and is stopped by ``stop()`` / the fixtures."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness import RUN_PREFIX

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (the registry accepts bcrypt only) from glibc's crypt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if hashed and hashed.startswith("$2"):
        return f"{user}:{hashed}"
    out = subprocess.run(["htpasswd", "-nbB", user, password], check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


def make_ca(d: str) -> dict[str, str]:
    """A test CA and a server certificate for 127.0.0.1/localhost; also a token-signing cert."""
    p = {k: os.path.join(d, f"{k}") for k in ("ca.key", "ca.crt", "srv.key", "srv.csr",
                                               "srv.crt", "ext.cnf", "tok.key", "tok.crt")}
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["ca.key"], "-out",
        p["ca.crt"], "-days", "2", "-subj", "/CN=isobox test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p["srv.key"], "-out", p["srv.csr"],
        "-subj", "/CN=127.0.0.1")
    with open(p["ext.cnf"], "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:registry.test\n")
    run("x509", "-req", "-in", p["srv.csr"], "-CA", p["ca.crt"], "-CAkey", p["ca.key"],
        "-CAcreateserial", "-out", p["srv.crt"], "-days", "2", "-extfile", p["ext.cnf"])
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["tok.key"], "-out",
        p["tok.crt"], "-days", "2", "-subj", "/CN=isobox test token issuer")
    return p


class Registry:
    """``docker-registry serve`` with a config written here; ``url``/``host`` to reach it."""

    def __init__(self, *, tls: dict[str, str] | None = None, htpasswd: str | None = None,
                 token: dict[str, str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-registry-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{self.host}"
        self.log_path = os.path.join(self.dir, "registry.log")
        lines = ["version: 0.1", "log:", "  level: info", "  accesslog:", "    disabled: false",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.dir}/data",
                 "  delete:", "    enabled: true",
                 "http:", f"  addr: 127.0.0.1:{self.port}", "  secret: isobox-test-secret"]
        if tls:
            lines += ["  tls:", f"    certificate: {tls['srv.crt']}", f"    key: {tls['srv.key']}"]
        if htpasswd:
            path = os.path.join(self.dir, "htpasswd")
            with open(path, "w") as f:
                f.write(htpasswd + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: isobox-test", f"    path: {path}"]
        if token:
            lines += ["auth:", "  token:", f"    realm: {token['realm']}",
                      f"    service: {token['service']}", f"    issuer: {token['issuer']}",
                      f"    rootcertbundle: {token['rootcertbundle']}"]
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed by stop())
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", self.config], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class ProxyFaults:
    """Per blob digest: cut the response after N bytes (``cut``, once each), or flip bytes
    (``tamper``); ``ignore_range`` answers 200 with the whole blob to Range requests."""

    cut: dict[str, int] = field(default_factory=dict)
    tamper: set[str] = field(default_factory=set)
    ignore_range: bool = False
    content_type: dict[str, str] = field(default_factory=dict)  # path suffix → Content-Type
    body: dict[str, bytes] = field(default_factory=dict)        # path suffix → replacement
    drop_digest_header: bool = False  # with ``body``: no Docker-Content-Digest to compare
    location_host: str | None = None  # rewrite upload ``Location`` headers to this host:port


class Proxy:
    """A reverse proxy in front of a plain-HTTP registry that records every request."""

    def __init__(self, upstream_port: int, faults: ProxyFaults | None = None) -> None:
        self.upstream = upstream_port
        self.faults = faults or ProxyFaults()
        self.requests: list[Recorded] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in
                                                          self.headers.items()})
                proxy.requests.append(rec)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive")}
                digest = self.path.split("?")[0].rsplit("/", 1)[-1]
                is_blob = "/blobs/sha256:" in self.path and self.command == "GET"
                if is_blob and proxy.faults.ignore_range:
                    headers.pop("Range", None)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                rec.status = resp.status
                for suffix, repl in proxy.faults.body.items():
                    if self.path.split("?")[0].endswith(suffix) and self.command == "GET":
                        data = repl
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in ("connection", "transfer-encoding", "keep-alive",
                                     "content-length"):
                        continue
                    if k.lower() == "docker-content-digest" and proxy.faults.drop_digest_header:
                        continue
                    if k.lower() == "location" and proxy.faults.location_host:
                        parts = urllib.parse.urlsplit(urllib.parse.urljoin(
                            f"http://{proxy.host}/", v))
                        v = urllib.parse.urlunsplit(
                            parts._replace(netloc=proxy.faults.location_host))
                    if k.lower() == "content-type":
                        for suffix, ctype in proxy.faults.content_type.items():
                            if self.path.split("?")[0].endswith(suffix):
                                v = ctype
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if is_blob and digest in proxy.faults.tamper and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                cut = proxy.faults.cut.pop(digest, None) if is_blob else None
                if cut is not None:
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def matching(self, method: str, fragment: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and fragment in r.path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry bearer tokens (RS256 JWT, ``x5c`` = the signing certificate) for
    ``user``/``password``; anonymous requests are refused. Records the scopes asked for."""

    def __init__(self, pki: dict[str, str], user: str, password: str,
                 service: str = "isobox-test-registry", issuer: str = "isobox-test-issuer"
                 ) -> None:
        self.pki, self.user, self.password = pki, user, password
        self.service, self.issuer = service, issuer
        self.scopes: list[list[str]] = []
        with open(pki["tok.crt"]) as f:
            pem = f.read()
        der = base64.b64decode("".join(line for line in pem.splitlines()
                                       if "-----" not in line))
        self.x5c = base64.b64encode(der).decode()
        ts = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                ok = auth == "Basic " + base64.b64encode(
                    f"{ts.user}:{ts.password}".encode()).decode()
                if not ok:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                scopes = q.get("scope", [])
                ts.scopes.append(scopes)
                body = json.dumps({"token": ts.sign(scopes), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def registry_config(self) -> dict[str, str]:
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": self.pki["tok.crt"]}

    def sign(self, scopes: list[str]) -> str:
        access = []
        for s in scopes:
            kind, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": self.user, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": hashlib.sha256(os.urandom(8)).hexdigest(),
                  "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.pki["tok.key"]],
                             input=signing_input.encode(), capture_output=True,
                             check=True).stdout
        return signing_input + "." + _b64url(sig)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
