"""Catalogue case 51 through a real `isobox serve`: build contexts that point outside
(a Dockerfile symlinked to /etc/passwd, `dockerfile=../../Dockerfile`, COPY through a symlink
out of the context, `../x` and absolute entries, a git remote), and limits on requests:
bodies capped with 413 (Content-Length or chunked), Content-Length together with chunked
refused, JSON nesting capped, slow or idle connections dropped after `--idle-timeout`, and
hundreds of attach/exec streams whose clients left reclaimed (threads, processes)."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import tarfile
import time
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer, Docker, message, raw
from engine_helpers import Isobox
from images_helpers import image_guard_fixture  # noqa: F401  (fixture)

from harness import RUN_PREFIX, unique_id
from isobox.images.store import ImageStore

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "security"))
pytest_plugins = ["sec_helpers"]   # host_guard: the catalogue's after-every-case checks
pytestmark = pytest.mark.engine


def context(files: dict[str, str], links: dict[str, str] | None = None,
            names: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in {**files, **{k: v.decode() for k, v in (names or {}).items()}}.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(text.encode())
            tf.addfile(ti, io.BytesIO(text.encode()))
        for name, target in (links or {}).items():
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tf.addfile(ti)
    return buf.getvalue()


def build(sock: str, body: bytes, query: str = "") -> tuple[int, str]:
    status, _, out = raw(sock, "POST", f"/v1.41/build?t={RUN_PREFIX}-evil{query}", body,
                         {"Content-Type": "application/x-tar"})
    return status, out.decode(errors="replace")


@pytest.fixture
def guarded(image_guard: ImageStore, canary: str) -> Iterator[ImageStore]:
    """The image guard, and the security suite's host canary unchanged afterwards."""
    from sec_helpers import _tree

    before = _tree(canary)
    yield image_guard
    assert _tree(canary) == before


# -- build contexts -----------------------------------------------------------------------

def test_case51_symlinked_dockerfile_resolves_inside(api_server: ApiServer,
                                                     guarded: ImageStore) -> None:
    status, out = build(api_server.socket_path, context({}, {"Dockerfile": "/etc/passwd"}))
    assert status == 400 and json.loads(out)["message"] == \
        "Cannot locate specified Dockerfile: Dockerfile"      # moby's TestSymlinkDockerfile


@pytest.mark.parametrize("name", ["../../Dockerfile", "sub/../../Dockerfile", ".."])
def test_case51_dockerfile_outside_the_context(api_server: ApiServer, guarded: ImageStore,
                                               name: str) -> None:
    from urllib.parse import quote

    body = context({"Dockerfile": "FROM busybox\n", "sub/x": ""})
    status, out = build(api_server.socket_path, body, f"&dockerfile={quote(name)}")
    assert status == 400
    assert json.loads(out)["message"] == f"path outside the build context: {name} ()"


def test_case51_copy_through_a_symlink_stays_in_the_context(api_server: ApiServer,
                                                            guarded: ImageStore) -> None:
    body = context({"Dockerfile": "FROM busybox\nCOPY link/shadow /stolen\n"},
                   {"link": "/etc"})
    status, out = build(api_server.socket_path, body)
    lines = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
    assert status == 200 and "error" in lines[-1], out
    assert "shadow" in lines[-1]["error"]
    assert raw(api_server.socket_path, "GET", f"/v1.41/images/{RUN_PREFIX}-evil/json")[0] == 404


def test_case51_dotdot_and_absolute_entries(api_server: ApiServer, guarded: ImageStore) -> None:
    sock = api_server.socket_path
    status, out = build(sock, context({"Dockerfile": "FROM busybox\n",
                                       f"../{RUN_PREFIX}-escape": "x"}))
    assert status == 400 and ".." in json.loads(out)["message"]
    assert not os.path.exists(f"/tmp/{RUN_PREFIX}-escape")
    # an absolute name is clamped into the context, where COPY finds it
    body = context({"Dockerfile": f"FROM busybox\nCOPY {RUN_PREFIX}-abs /abs\n",
                    f"/{RUN_PREFIX}-abs": "clamped\n"})
    status, out = build(sock, body)
    assert status == 200 and "Successfully built" in out, out
    assert not os.path.exists(f"/{RUN_PREFIX}-abs")


def test_case51_git_remote_is_refused(api_server: ApiServer, guarded: ImageStore) -> None:
    from urllib.parse import quote

    remote = quote(f"https://127.0.0.1:1/x.git#--upload-pack=touch /tmp/{RUN_PREFIX}-git")
    status, _, out = raw(api_server.socket_path, "POST", f"/v1.41/build?remote={remote}")
    assert status == 400, out
    assert not os.path.exists(f"/tmp/{RUN_PREFIX}-git")


# -- request bodies -----------------------------------------------------------------------

def connect(path: str, timeout: float = 10) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    """Everything until the server closes (a reset after a refused body counts as closed:
    the server did not read what the client sent)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


HEAD = (b"POST /v1.41/containers/create%s HTTP/1.1\r\nHost: isobox\r\n"
        b"Content-Type: application/json\r\n")


def test_case51_large_bodies_are_413_without_reading_them(api_server: ApiServer,
                                                          isobox: Isobox) -> None:
    sock = api_server.socket_path
    s = connect(sock)
    started = time.monotonic()
    s.sendall(HEAD % b"" + b"Content-Length: 1073741824\r\n\r\n")   # 1 GiB announced
    s.sendall(b"[" + b"1," * (2 << 20) + b"1")                    # 4 MiB + 2 sent
    reply = read_until_closed(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert time.monotonic() - started < 10
    s = connect(sock)
    s.sendall(HEAD % b"" + b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 65536
    try:
        for _ in range(80):                                         # 5 MiB, chunked
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        s.sendall(b"0\r\n\r\n")
    except BrokenPipeError:
        pass                                                        # refused before the end
    reply = read_until_closed(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert raw(sock, "GET", "/_ping")[0] == 200
    assert isobox.ids() == []


def test_case51_content_length_with_chunked_is_refused(api_server: ApiServer,
                                                       isobox: Isobox) -> None:
    """Which of the two frames the body? A hook could check one and the server run the
    other (CVE-2024-41110): neither runs."""
    name = unique_id("smuggle")
    body = json.dumps({"Image": "busybox"}).encode()
    s = connect(api_server.socket_path)
    s.sendall(HEAD % f"?name={name}".encode() + b"Content-Length: 0\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    reply = read_until_closed(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert b"Transfer-Encoding: chunked" in reply
    assert isobox.ids() == []


@pytest.mark.parametrize("body", [
    b"[" * 10_000 + b"]" * 10_000,
    b'{"Image": "busybox", "Labels": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001,
    b'{"Image": "busybox", "Cmd": ["' + b"[" * 10_000 + b'"]}',        # in a string: fine
])
def test_case51_json_nesting_is_capped(api_server: ApiServer, isobox: Isobox,
                                       body: bytes) -> None:
    status, _, out = raw(api_server.socket_path, "POST", "/v1.41/containers/create", body)
    if body.startswith(b'{"Image": "busybox", "Cmd"'):
        assert status == 201, out                 # brackets inside strings do not count
        raw(api_server.socket_path, "DELETE",
            f"/v1.41/containers/{json.loads(out)['Id']}?force=1")
        return
    assert status == 400, out
    assert message(out) == "request body: JSON nested deeper than 100 levels"
    assert isobox.ids() == []


# -- slow and idle connections ------------------------------------------------------------

@pytest.fixture
def impatient(engine_root: str, isobox: Isobox) -> Iterator[ApiServer]:
    server = ApiServer.start(engine_root, f"/tmp/{RUN_PREFIX}-idle.sock", "--idle-timeout", "2")
    yield server
    server.stop()


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_case51_slowloris_and_idle_connections_are_dropped(impatient: ApiServer,
                                                           docker: Docker) -> None:
    sock = impatient.socket_path
    # a long response is not an idle connection: a wait outlives the timeout
    name = unique_id("slow")
    Docker(sock)("run", "-d", "--name", name, "busybox", "sleep", "4")
    started = time.monotonic()
    status, _, out = raw(sock, "POST", f"/v1.41/containers/{name}/wait")
    assert status == 200 and json.loads(out)["StatusCode"] == 0
    assert time.monotonic() - started > 2.5
    base = threads(impatient.proc.pid)
    half = connect(sock, 15)
    half.sendall(b"GET /_ping HTTP/1.1\r\nHost: isob")              # half a header, then waits
    dribble = connect(sock, 15)
    idle = connect(sock, 15)
    idle.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")          # one request, then idle
    started = time.monotonic()
    dropped: dict[str, float] = {}
    for ch in b"GET /_ping HTTP/1.1\r\nHost: isobox\r\nX-Slow: " + b"a" * 40:
        try:
            dribble.sendall(bytes([ch]))                             # a byte every 0.25 s
        except OSError:
            dropped["dribble"] = time.monotonic() - started
            break
        time.sleep(0.25)
    for name, s in (("half", half), ("idle", idle)):
        got = read_until_closed(s)                                   # EOF: the server closed
        dropped[name] = time.monotonic() - started
        assert b"200 OK" in got if name == "idle" else got == b"", got
    assert "dribble" in dropped, "a client dribbling its head was never dropped"
    assert all(1.5 < t < 8 for t in dropped.values()), dropped
    for s in (half, dribble, idle):
        s.close()
    deadline = time.monotonic() + 10
    while threads(impatient.proc.pid) > base and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threads(impatient.proc.pid) <= base


# -- streams left open --------------------------------------------------------------------

UPGRADE = b"Connection: Upgrade\r\nUpgrade: tcp\r\n"


def hijack(sock: str, path: str, body: bytes = b"") -> socket.socket:
    s = connect(sock, 20)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: isobox\r\n%sContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (path.encode(), UPGRADE, len(body), body))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


@pytest.mark.slow
def test_case51_abandoned_attach_and_exec_streams_are_reclaimed(api_server: ApiServer,
                                                               docker: Docker) -> None:
    sock = api_server.socket_path
    name = unique_id("streams")
    # no -i: conmon closes a container's stdin when an attach client leaves (see docs/api.md)
    docker("run", "-d", "--name", name, "busybox", "sleep", "300")
    base = threads(api_server.proc.pid)
    n = 50
    conns = [hijack(sock, f"/v1.41/containers/{name}/attach?stream=1&stdout=1&stderr=1")
             for _ in range(n)]
    for _ in range(n):
        out = raw(sock, "POST", f"/v1.41/containers/{name}/exec",
                  {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True})[2]
        conns.append(hijack(sock, f"/v1.41/exec/{json.loads(out)['Id']}/start",
                            b'{"Detach": false, "Tty": false}'))
    deadline = time.monotonic() + 60
    while (procs := docker("top", name).stdout.count("cat")) < n:
        assert time.monotonic() < deadline, procs    # n execs
        time.sleep(0.25)
    peak = threads(api_server.proc.pid)
    for s in conns:
        s.close()                                     # the clients go, without a word
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = threads(api_server.proc.pid)
        procs = docker("top", name).stdout.count("cat")
        if left <= base + 1 and procs == 0:
            break
        time.sleep(0.25)
    print(f"streams: {base} threads before, {peak} with {2 * n} streams, {left} after")
    assert left <= base + 1, (base, peak, left)
    assert procs == 0, "exec processes outlived their clients' stdin"
    assert docker("exec", name, "true").returncode == 0
