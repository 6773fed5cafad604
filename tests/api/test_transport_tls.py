"""`isobox serve --tcp` with mutual TLS: the real docker CLI (DOCKER_TLS_VERIFY) and docker-py
(TLSConfig) over it, hijacked streams included (one-thread pump: a TLS socket must not be
read and written from two threads), and the clients it refuses. Only 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator

import pytest
from api_helpers import DOCKER, ApiServer, Docker, raw
from engine_helpers import NET_PREFIX, Isobox
from transport_helpers import Pki, TlsServer, WebSocket, tls_docker_env

from harness import RUN_PREFIX, unique_id

docker = pytest.importorskip("docker")
pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def tls_server(engine_root: str, api_server: ApiServer, pki: Pki) -> Iterator[TlsServer]:
    # after api_server: its teardown removes the `isobox` group if the session created it
    server = TlsServer.start_tls(engine_root, f"/tmp/{RUN_PREFIX}-tls.sock", pki)
    yield server
    assert server.stop() == 0
    assert not os.path.exists(server.socket_path)


@pytest.fixture
def tdocker(tls_server: TlsServer, pki: Pki, isobox: Isobox) -> Docker:
    """The docker CLI over TCP with TLS (never the unix socket)."""
    d = Docker(tls_server.socket_path)
    d.env = tls_docker_env(tls_server.port, pki)
    return d


@pytest.fixture
def tclient(tls_server: TlsServer, pki: Pki, isobox: Isobox,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[docker.DockerClient]:
    # requests lets these override the session's CA (TLSConfig's ca_cert)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    tls = docker.tls.TLSConfig(client_cert=(pki.path("client-cert.pem"),
                                            pki.path("client-key.pem")),
                               ca_cert=pki.path("ca.pem"), verify=True)
    c = docker.DockerClient(base_url=f"https://127.0.0.1:{tls_server.port}", tls=tls,
                            version="auto")
    yield c
    c.close()


def test_docker_cli_runs_over_mutual_tls(tdocker: Docker, isobox: Isobox) -> None:
    assert tdocker.env["DOCKER_HOST"].startswith("tcp://127.0.0.1:")
    assert "Server: isobox" in tdocker("version").stdout
    p = tdocker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3",
                check=False)
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    # stdin until EOF: the CLI half-closes the TLS stream (close_notify), output still flows
    p = tdocker("run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo after-eof",
                input_=b"l1\nl2\n")
    assert p.stdout == "l1\nl2\nafter-eof\n"
    big = os.urandom(300_000).hex().encode()  # larger than any socket buffer: both ways
    p = tdocker("run", "-i", "--rm", "busybox", "cat", input_=big)
    assert p.stdout.encode() == big
    name = unique_id("tls")
    tdocker("run", "-d", "--name", name, "busybox", "sh", "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.3; done; sleep 60")
    assert name in tdocker("ps", "--format", "{{.Names}}").stdout
    logs = subprocess.Popen([DOCKER, "logs", "-f", name], env=tdocker.env,
                            stdout=subprocess.PIPE, text=True)
    assert logs.stdout is not None
    assert [logs.stdout.readline() for _ in range(3)] == ["line1\n", "line2\n", "line3\n"]
    p = tdocker("exec", name, "sh", "-c", "echo in-exec; exit 4", check=False)
    assert (p.returncode, p.stdout) == (4, "in-exec\n")
    assert tdocker("exec", "-i", name, "cat", input_=b"piped\n").stdout == "piped\n"
    tdocker("stop", "-t", "1", name)
    assert logs.wait(20) == 0  # follow ends with the container
    tdocker("rm", name)
    assert isobox.ids() == []


def test_docker_cli_terminals_over_tls(tdocker: Docker) -> None:
    name = unique_id("ttls")
    code, out = tdocker.in_pty(f"run -it --name {name} busybox sh",
                               [(1.5, b"tty; echo $((6*7)); exit 7\r")])
    assert code == 7, out
    assert b"/dev/pts/0" in out and b"42" in out
    tdocker("start", name)
    code, out = tdocker.in_pty(f"exec -it {name} sh", [(1.0, b"tty; echo $((5*5)); exit 5\r")])
    assert code == 5, out
    assert b"/dev/pts/" in out and b"25" in out
    tdocker("rm", "-f", name)


def test_docker_py_with_tls_config(tclient: docker.DockerClient) -> None:
    assert tclient.ping()
    assert tclient.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
    ct = tclient.containers.run("busybox", "sleep 60", detach=True)
    eid = tclient.api.exec_create(ct.id, ["sh", "-c", "echo a; echo b >&2"])["Id"]
    assert tclient.api.exec_start(eid, demux=True) == (b"a\n", b"b\n")
    ct.remove(force=True)
    # a hijacked attach over TLS: stdin in, output out, then the detach keys
    ct = tclient.containers.create("busybox", "cat", stdin_open=True)
    sock = ct.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
    ct.start()
    raw = sock  # over TLS docker-py hands out the SSLSocket itself
    raw.sendall(b"ping\n")
    got = b""
    deadline = time.monotonic() + 10
    while len(got) < 13 and time.monotonic() < deadline:
        got += raw.recv(64)
    assert got == b"\x01\x00\x00\x00\x00\x00\x00\x05ping\n"
    raw.sendall(b"\x10\x11")
    assert raw.recv(64) == b""  # the server closed the stream; the container runs on
    sock.close()
    ct.reload()
    assert ct.status == "running"
    ct.remove(force=True)


def _handshake(port: int, ctx: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, \
            ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        t.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := t.recv(4096):
            data += chunk
        return data


def test_clients_without_a_good_certificate_are_refused(tls_server: TlsServer,
                                                         pki: Pki) -> None:
    port = tls_server.port
    assert _handshake(port, pki.client_context()).startswith(b"HTTP/1.1 200 OK")
    for cert in (None, "stranger"):  # no certificate; one from another CA
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            _handshake(port, pki.client_context(cert))
    old = pki.client_context()  # TLS 1.1 offered: the server's alert, not the client's check
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _handshake(port, old)
    # a server signed by another CA is refused by the client too (the docker CLI's check)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(port, ssl.create_default_context(cafile=pki.path("other-ca.pem")))
    # plain HTTP to the TLS port: Go's answer, nothing served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /containers/json HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.0 400 Bad Request")
    assert data.endswith(b"Client sent an HTTP request to an HTTPS server.\n")
    # the docker CLI without its certificates
    env = tls_docker_env(port, pki)
    env["DOCKER_CERT_PATH"] = "/nonexistent-isobox-certs"
    p = subprocess.run([DOCKER, "ps"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0
    assert "Server:" not in p.stdout
    # a silent client does not hold up the others (the handshake runs in its own thread)
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        assert _handshake(port, pki.client_context()).startswith(b"HTTP/1.1 200 OK")
    log = tls_server.log()
    assert "TLS handshake refused" in log and "plain HTTP on the TLS port" in log


def test_serve_refuses_tcp_without_every_tls_flag(engine_root: str, pki: Pki) -> None:
    env = {**os.environ, "ISOBOX_ROOT": engine_root, "ISOBOX_NET_PREFIX": NET_PREFIX}
    sock = f"/tmp/{RUN_PREFIX}-notls.sock"
    cases = [([], "--tls-cert"),
             (["--tls-cert", pki.path("server-cert.pem")], "--tls-key"),
             (["--tls-cert", pki.path("server-cert.pem"), "--tls-key",
               pki.path("server-key.pem")], "--tls-ca"),
             (["--tls-cert", pki.path("server-cert.pem"), "--tls-key",
               pki.path("server-key.pem"), "--tls-ca", "/nonexistent.pem"], "--tls-ca")]
    for flags, named in cases:
        p = subprocess.run([Isobox.binary(), "serve", "--socket", sock, "--tcp",
                            "127.0.0.1:0", *flags], env=env, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode != 0, p.stderr
        assert named in p.stderr, p.stderr
        assert not os.path.exists(sock)
    p = subprocess.run([Isobox.binary(), "serve", "--socket", sock, "--tls-ca",
                        pki.path("ca.pem")], env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "--tcp" in p.stderr
    p = subprocess.run([Isobox.binary(), "serve", "--socket", sock, "--tcp", "127.0.0.1",
                        "--tls-cert", pki.path("server-cert.pem"), "--tls-key",
                        pki.path("server-key.pem"), "--tls-ca", pki.path("ca.pem")],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "HOST:PORT" in p.stderr
    assert not os.path.exists(sock)


def test_tls_server_lists_what_the_unix_socket_serves(tclient: docker.DockerClient,
                                                      api_server: ApiServer) -> None:
    ct = tclient.containers.create("busybox", "true", name=unique_id("both"))
    status, _, body = raw(api_server.socket_path, "GET", "/containers/json?all=1")
    assert status == 200 and ct.id in [c["Id"] for c in json.loads(body)]
    ct.remove()


def test_websocket_attach_over_tls(tls_server: TlsServer, pki: Pki, isobox: Isobox) -> None:
    status, _, body = raw(tls_server.socket_path, "POST", "/containers/create", {
        "Image": "busybox", "Cmd": ["sh", "-c", "read x; echo got-$x; exit 3"],
        "OpenStdin": True})
    assert status == 201
    cid = json.loads(body)["Id"]
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=20) as s, \
            pki.client_context().wrap_socket(s, server_hostname="127.0.0.1") as t:
        ws, head = WebSocket.connect(t, f"/containers/{cid}/attach/ws?stream=1")
        assert ws is not None, head
        assert raw(tls_server.socket_path, "POST", f"/containers/{cid}/start")[0] == 204
        ws.send(b"tls\n")
        frames, closed = ws.read_until_close()
    assert closed and b"".join(p for _, p in frames) == b"got-tls\n"
    body = raw(tls_server.socket_path, "POST", f"/containers/{cid}/wait")[2]
    assert json.loads(body)["StatusCode"] == 3
    raw(tls_server.socket_path, "DELETE", f"/containers/{cid}")
