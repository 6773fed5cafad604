"""Catalogue cases 48-50 through a real `isobox serve`: `GET/HEAD/PUT
/containers/{id}/archive` resolve every path inside the container's root (traversal,
`/proc/1/root`, symlinks), hold while the container swaps a directory and a symlink to `/`
under them, and run uploads through the layer unpacker with the layer suite's hostile tars
(tests/security/test_layers.py). After each case the security suite's host guard checks the
canary, the host's files and mounts; the container is left running, never paused."""

from __future__ import annotations

import base64
import io
import json
import lzma
import os
import sys
import tarfile
import time
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer, Docker, message, raw
from engine_helpers import Isobox

from harness import RUN_PREFIX, unique_id

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "security"))
from test_layers import d, f, hl, node, pax, sym, tar

pytest_plugins = ["sec_helpers"]
pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("host_guard")]

CTR_SHADOW = b"container's own shadow\n"
SETUP = ("echo \"container's own shadow\" > /etc/shadow; ln -s /etc/shadow /x; "
         "mkdir /realdir; echo inside > /realdir/f; ln -s /realdir /dirlink; "
         "ln -s / /rootlink; touch /ready; exec sleep 300")


def members(body: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tf:
        for ti in tf:
            data = tf.extractfile(ti).read() if ti.isreg() else b""  # type: ignore[union-attr]
            out[ti.name] = (ti, data)
    return out


def get(sock: str, name: str, path: str) -> tuple[int, dict[str, str], bytes]:
    from urllib.parse import quote

    return raw(sock, "GET", f"/v1.41/containers/{name}/archive?path={quote(path)}")


def put(sock: str, name: str, path: str, body: bytes) -> tuple[int, bytes]:
    from urllib.parse import quote

    status, _, out = raw(sock, "PUT", f"/v1.41/containers/{name}/archive?path={quote(path)}",
                         body, {"Content-Type": "application/x-tar"})
    return status, out


@pytest.fixture
def box(api_server: ApiServer, docker: Docker) -> Iterator[str]:
    """A running container with a shadow of its own and symlinks to it, to `/realdir`
    and to `/`."""
    name = unique_id("ar")
    docker("run", "-d", "--network", "none", "--name", name, "busybox", "sh", "-c", SETUP)
    deadline = time.monotonic() + 20
    while raw(api_server.socket_path, "HEAD",
              f"/v1.41/containers/{name}/archive?path=/ready")[0] != 200:
        assert time.monotonic() < deadline, "the container did not set up"
        time.sleep(0.05)
    yield name


def assert_healthy(sock: str, docker: Docker, name: str) -> None:
    state = json.loads(raw(sock, "GET", f"/v1.41/containers/{name}/json")[2])["State"]
    assert (state["Status"], state["Paused"]) == ("running", False)
    assert docker("exec", name, "true").returncode == 0


# -- case 48 ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../../../../etc/shadow", "/../../etc/shadow",
                                  "/rootlink/etc/shadow", "/rootlink/../../etc/shadow",
                                  "/etc/../../../etc/shadow"])
def test_case48_traversal_serves_the_containers_file(api_server: ApiServer, box: str,
                                                     path: str) -> None:
    status, headers, body = get(api_server.socket_path, box, path)
    assert status == 200, body
    assert members(body)["shadow"][1] == CTR_SHADOW
    st = json.loads(base64.b64decode(headers["X-Docker-Container-Path-Stat"]))
    assert st["size"] == len(CTR_SHADOW)


def test_case48_proc_1_root_is_never_the_daemons(api_server: ApiServer, box: str) -> None:
    sock = api_server.socket_path
    for path in ("/proc/1/root/etc/shadow", "/proc/self/root/etc/shadow",
                 "/proc/1/root/", "/proc/self/cwd/etc/shadow"):
        status, _, body = get(sock, box, path)
        assert status == 404, (path, body[:200])
        status, _, _ = raw(sock, "HEAD", f"/v1.41/containers/{box}/archive?path={path}")
        assert status == 404, path


def test_case48_symlinks_are_archived_as_symlinks(api_server: ApiServer, box: str,
                                                  docker: Docker, tmp_path: str) -> None:
    sock = api_server.socket_path
    ti, data = members(get(sock, box, "/x")[2])["x"]
    assert ti.issym() and ti.linkname == "/etc/shadow" and data == b""
    status, headers, _ = raw(sock, "HEAD", f"/v1.41/containers/{box}/archive?path=/x")
    st = json.loads(base64.b64decode(headers["X-Docker-Container-Path-Stat"]))
    assert status == 200 and st["linkTarget"] == "/etc/shadow"
    # a trailing separator follows the link, inside the root (moby's
    # TestCopyFromContainerDirSymlinkTrailingSeparator)
    got = members(get(sock, box, "/dirlink/")[2])
    assert got["dirlink/f"][1] == b"inside\n"
    got = members(get(sock, box, "/rootlink/")[2])
    assert got["rootlink/etc/shadow"][1] == CTR_SHADOW
    # docker cp -L follows it within the root too
    out = os.path.join(str(tmp_path), "shadow")
    docker("cp", "-L", f"{box}:/x", out)
    with open(out, "rb") as fh:
        assert fh.read() == CTR_SHADOW


# -- case 49 ------------------------------------------------------------------------------

SWAP = ("mkdir /swap; touch /ready; "
        "while :; do mv /swap /swap.d; ln -s / /swap; rm /swap; mv /swap.d /swap; done")


@pytest.mark.stress
def test_case49_symlink_swap_race(api_server: ApiServer, docker: Docker, canary: str) -> None:
    """The container swaps /swap between a directory and a symlink to / while the test PUTs
    and GETs through it: the host canary (its contents, modes and a `chmod` aimed at it)
    and the host's / are never touched, host files never served."""
    sock = api_server.socket_path
    name = unique_id("race")
    docker("run", "-d", "--network", "none", "--name", name, "busybox", "sh", "-c", SWAP)
    deadline = time.monotonic() + 20
    while raw(sock, "HEAD", f"/v1.41/containers/{name}/archive?path=/ready")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rel = canary.lstrip("/")
    with open(os.path.join(canary, "file"), "rb") as fh:
        host_secret = fh.read()
    payload = tar(d(rel, 0o777), f(f"{rel}/file", b"overwritten\n", 0o777),
                  d(f"{rel}/dir", 0o777), f(f"pwned-{RUN_PREFIX}", b"pwned\n"))
    outcomes: dict[str, int] = {}
    for i in range(300):
        status, out = put(sock, name, "/swap", payload)
        outcomes[f"put {status}"] = outcomes.get(f"put {status}", 0) + 1
        assert status in (200, 404), out
        status, _, body = get(sock, name, f"/swap/{rel}/file")
        outcomes[f"get {status}"] = outcomes.get(f"get {status}", 0) + 1
        if status == 200:
            assert members(body)["file"][1] != host_secret, f"host file served ({i})"
    print("case 49 outcomes:", outcomes)
    assert outcomes.get("put 200", 0) > 0, outcomes   # the race was run, not just refused
    assert not os.path.exists(f"/pwned-{RUN_PREFIX}")
    with open(os.path.join(canary, "file"), "rb") as fh:
        assert fh.read() == host_secret
    assert oct(os.stat(canary).st_mode & 0o777) != oct(0o777)
    assert_healthy(sock, docker, name)


# -- case 50 ------------------------------------------------------------------------------

P = RUN_PREFIX
HOSTILE = {
    "dotdot": (tar(f(f"../{P}-dotdot", b"x")), 400, ".."),
    "dotdot-deep": (tar(f(f"a/../../../{P}-dotdot", b"x")), 400, ".."),
    "root-type-change": (tar(sym(".", "/etc")), 400, "refusing to change type of root"),
    "huge-pax": (tar(f("ok", b"x"), pax(f("big", b"x"), comment="x" * (2 << 20))), 400,
                 "exceeds the pax limit"),
    "pax-terabyte": (b"", 400, "exceeds the pax limit"),
    "sparse-terabyte": (tar(pax(f("sparse", b""), **{"GNU.sparse.map": "0,0",
                                                      "GNU.sparse.size": str(1 << 40)})),
                        400, "sparse"),
    "absolute": (tar(f(f"/{P}-abs", b"abs")), 200, ""),
    "symlink-write": (tar(sym("evil", "/etc"), f(f"evil/{P}-pwned", b"p")), 200, ""),
    "symlink-up-write": (tar(sym("up", "../../../../../../etc"), f(f"up/{P}-pwned2", b"p")),
                         200, ""),
    "hardlink-host": (tar(hl(f"{P}-hl", "/etc/shadow")), None, ""),
    "hardlink-via-symlink": (tar(sym("s", "/etc"), hl(f"{P}-hl2", "s/shadow")), None, ""),
    "device": (tar(node(f"{P}-dev", tarfile.CHRTYPE, 1, 3)), 200, ""),
    "whiteout-via-symlink": (tar(sym("w", "/etc"), f("w/.wh.passwd")), 200, ""),
    "opaque-whiteout": (tar(d("etc"), f("etc/.wh..wh..opq")), 200, ""),
    "xz": (b"", 200, ""),
}


def _pax_terabyte() -> bytes:
    ti = tarfile.TarInfo("././@PaxHeader")
    ti.type, ti.size = tarfile.XHDTYPE, 1 << 40
    return ti.tobuf(tarfile.GNU_FORMAT) + bytes(4096)


@pytest.mark.parametrize("dest", ["/tmp", "/"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_case50_layer_suite_through_put_archive(api_server: ApiServer, docker: Docker,
                                                box: str, case: str, dest: str) -> None:
    sock = api_server.socket_path
    body, want, words = HOSTILE[case]
    if case == "pax-terabyte":
        body = _pax_terabyte()
    elif case == "xz":
        body = lzma.compress(tar(f(f"{P}-xz", b"from xz\n")))
    shadow = os.stat("/etc/shadow")
    status, out = put(sock, box, dest, body)
    if want is not None:
        assert status == want, out
    else:
        assert status in (200, 400), out
    if words:
        assert words in message(out)
    # nothing on the host (the host guard checks /, /etc, /var/tmp, /root, /dev too)
    for p in (f"/{P}-abs", f"/etc/{P}-pwned", f"/etc/{P}-pwned2", f"/{P}-dotdot",
              f"/tmp/{P}-dotdot", f"/{P}-hl", f"/{P}-dev"):
        assert not os.path.lexists(p), p
    now = os.stat("/etc/shadow")
    assert (now.st_nlink, now.st_mode, now.st_ino) == \
        (shadow.st_nlink, shadow.st_mode, shadow.st_ino)
    inside = docker("exec", box, "sh", "-c", "cat /etc/passwd >/dev/null && "
                    f"find / -xdev -name '{P}-*' | sort").stdout.split()
    if case == "absolute":
        assert inside == [os.path.join(dest, f"{P}-abs")]       # clamped into the target
    if case == "device":
        assert inside == []                                     # no device nodes
    if case == "xz":
        assert inside == [os.path.join(dest, f"{P}-xz")]
    if case.startswith("hardlink") and status == 200:
        data = docker("exec", box, "cat", *inside).stdout
        assert data == CTR_SHADOW.decode()                      # the container's, if any
    assert_healthy(sock, docker, box)


def test_case50_cp_out_never_applies_whiteouts_on_the_host(isobox: Isobox, box: str,
                                                           tmp_path: str) -> None:
    """A container's `.wh.` files are archive entries like any other: `isobox cp` out of
    it (the engine's copy, as `GET /archive`) never deletes the host's files."""
    docker_exec = ["exec", box, "sh", "-c",
                   "mkdir /out && touch /out/.wh..wh..opq /out/.wh.keep /out/new"]
    isobox(*docker_exec)
    dest = os.path.join(str(tmp_path), "out")
    os.mkdir(dest)
    for n in ("keep", "other"):
        with open(os.path.join(dest, n), "w") as fh:
            fh.write("host file\n")
    isobox("cp", f"{box}:/out/.", dest)
    assert sorted(os.listdir(dest)) == [".wh..wh..opq", ".wh.keep", "keep", "new", "other"]
