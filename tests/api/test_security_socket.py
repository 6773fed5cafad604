"""Catalogue cases 44 and 45 against a real `isobox serve`: the socket's owner, mode and
directory; whatever was planted at its path is unlinked, never followed; a user outside the
group gets EACCES; no TCP without mutual TLS; no abstract-namespace socket of isobox (server,
conmon, runtime, QEMU, agent) and no path to the API socket from a `--network host`
container."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer, Docker
from engine_helpers import Isobox

from harness import RUN_PREFIX, unique_id

pytestmark = pytest.mark.engine

SYSTEM_PYTHON = "/usr/bin/python3"   # readable by `nobody` (the venv may not be)
CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /_ping HTTP/1.0\\r\\n\\r\\n")
    print(s.recv(100).split(b"\\r\\n")[0].decode())
except OSError as e:
    print("ERR", e.errno)
"""


@pytest.fixture
def scratch() -> Iterator[str]:
    d = f"/tmp/{unique_id('s44')}"
    os.mkdir(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def serve_fails(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ISOBOX_ROOT": root}
    return subprocess.run([Isobox.binary(), "serve", *args], env=env, capture_output=True,
                          text=True, timeout=30)


# -- case 44 ------------------------------------------------------------------------------

def test_case44_socket_0660_root_isobox_in_a_0710_directory(engine_root: str,
                                                            scratch: str) -> None:
    path = os.path.join(scratch, "run", "api.sock")     # run/ does not exist yet
    server = ApiServer.start(engine_root, path, log_path=os.path.join(scratch, "log"))
    try:
        gid = grp.getgrnam("isobox").gr_gid
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert (st.st_uid, st.st_gid) == (0, gid)
        pst = os.stat(os.path.dirname(path))
        assert stat.S_IMODE(pst.st_mode) == 0o710 and (pst.st_uid, pst.st_gid) == (0, gid)
    finally:
        server.stop()
    assert not os.path.lexists(path)


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_case44_planted_path_is_unlinked_never_followed(engine_root: str, scratch: str,
                                                        planted: str) -> None:
    victim = os.path.join(scratch, "shadow")
    with open(victim, "w") as f:
        f.write("victim: never chmod/chown'ed\n")
    os.chmod(victim, 0o600)
    before = os.stat(victim)
    path = os.path.join(scratch, "api.sock")
    if planted == "symlink":
        os.symlink(victim, path)
    else:
        shutil.copy(victim, path)
    server = ApiServer.start(engine_root, path)
    try:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert "removed (never followed)" in server.log()
    finally:
        server.stop()
    after = os.stat(victim)
    assert (after.st_mode, after.st_uid, after.st_gid, after.st_nlink) == \
        (before.st_mode, before.st_uid, before.st_gid, before.st_nlink)
    with open(victim) as f:
        assert f.read() == "victim: never chmod/chown'ed\n"


def test_case44_live_socket_and_unsafe_directories_are_refused(api_server: ApiServer,
                                                               engine_root: str,
                                                               scratch: str) -> None:
    p = serve_fails(engine_root, "--socket", api_server.socket_path)
    assert p.returncode != 0 and "another server is listening" in p.stderr
    loose = os.path.join(scratch, "loose")
    os.mkdir(loose)
    os.chmod(loose, 0o777)   # anyone could swap the socket: no sticky bit
    p = serve_fails(engine_root, "--socket", os.path.join(loose, "api.sock"))
    assert p.returncode != 0 and "writable by other users (mode 0777)" in p.stderr
    assert os.listdir(loose) == []
    d = os.path.join(scratch, "dir.sock")
    os.mkdir(d)
    p = serve_fails(engine_root, "--socket", d)
    assert p.returncode != 0 and "is a directory" in p.stderr and os.path.isdir(d)


def test_case44_non_member_gets_eacces_member_connects(api_server: ApiServer) -> None:
    gid = grp.getgrnam("isobox").gr_gid

    def as_nobody(*groups: str) -> str:
        grp_args = [f"--groups={','.join(groups)}"] if groups else ["--clear-groups"]
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", *grp_args,
                            SYSTEM_PYTHON, "-c", CONNECT, api_server.socket_path],
                           capture_output=True, text=True, timeout=30, check=True)
        return p.stdout.strip()

    assert as_nobody() == "ERR 13"                       # EACCES
    assert as_nobody(str(gid)) == "HTTP/1.1 200 OK"


def test_case44_tcp_without_mutual_tls_is_refused(engine_root: str, scratch: str) -> None:
    path = os.path.join(scratch, "api.sock")
    for extra in ([], ["--tls-cert", "/etc/hostname"]):
        p = serve_fails(engine_root, "--socket", path, "--tcp", "127.0.0.1:0", *extra)
        assert p.returncode != 0 and "only with mutual TLS" in p.stderr, p.stderr
        assert not os.path.lexists(path)
    # (with TLS configured, a client without a certificate is refused: test_sdk_tls.py)


# -- case 45 ------------------------------------------------------------------------------

def abstract_owners() -> dict[str, list[str]]:
    """Every abstract (``@``) unix socket of this network namespace -> the command lines of
    the processes holding it."""
    names: dict[str, str] = {}
    with open("/proc/net/unix") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith("@"):
                names[parts[6]] = parts[7]
    owners: dict[str, list[str]] = {n: [] for n in names.values()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in names:
                owners[names[link[8:-1]]].append(f"{pid}: {cmd}")
    return owners


def assert_no_isobox_abstract_sockets(server_pid: int, *pids: int) -> None:
    ours = ("isobox", "conmon", "qemu-system", RUN_PREFIX)
    for name, holders in abstract_owners().items():
        for h in holders:
            pid = int(h.split(":", 1)[0])
            assert pid not in (server_pid, *pids) and not any(w in h for w in ours), \
                f"abstract socket {name} held by {h}"


PROBE = """
import ctypes, errno, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
pid, path = sys.argv[1], sys.argv[2]
net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
assert libc.setns(net, 0x40000000) == 0
with open("/proc/self/net/unix") as f:
    names = [ln.split()[7] for ln in f.readlines()[1:] if len(ln.split()) > 7]
assert libc.setns(mnt, 0x00020000) == 0
os.chdir("/")
out = {"abstract": {}, "api": ""}
for n in names:
    if n.startswith("@"):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect("\\0" + n[1:])
            out["abstract"][n] = "connected"
        except OSError as e:
            out["abstract"][n] = errno.errorcode[e.errno]
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(path)
    out["api"] = "connected"
except OSError as e:
    out["api"] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


def test_case45_host_network_container_sees_no_isobox_socket(api_server: ApiServer,
                                                             docker: Docker) -> None:
    name = unique_id("hostnet")
    docker("run", "-d", "--name", name, "--network", "host", "busybox", "sleep", "60")
    docker("exec", "-d", name, "sleep", "30")   # an exec's runtime and monitor too
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", name).stdout)
    assert_no_isobox_abstract_sockets(api_server.proc.pid, pid)
    inside = docker("exec", name, "cat", "/proc/net/unix").stdout
    seen = {ln.split()[7] for ln in inside.splitlines()[1:] if len(ln.split()) > 7}
    assert api_server.socket_path in seen     # the same network namespace: it is listed…
    probe = json.loads(subprocess.run(
        [SYSTEM_PYTHON, "-c", PROBE, str(pid), api_server.socket_path], capture_output=True,
        text=True, timeout=30, check=True).stdout)
    assert probe["api"] == "ENOENT"           # …but its path is not in the container
    assert set(probe["abstract"]) == {n for n in seen if n.startswith("@")}


@pytest.mark.vm
@pytest.mark.slow
def test_case45_no_abstract_socket_while_a_micro_vm_runs(api_server: ApiServer,
                                                         docker: Docker) -> None:
    name = unique_id("vm45")
    docker("run", "-d", "--name", name, "--isolation", "vm", "busybox", "sleep", "60",
           timeout=120)
    docker("exec", name, "true", timeout=60)      # the agent's port is up and used
    qemu = subprocess.run(["pgrep", "-f", f"qemu-system.*{RUN_PREFIX}"], capture_output=True,
                          text=True).stdout.split()
    assert_no_isobox_abstract_sockets(api_server.proc.pid, *map(int, qemu))
    docker("rm", "-f", name)
