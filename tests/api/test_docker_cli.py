"""The real docker CLI (28) against `isobox serve`: the flows of issue 6."""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import time
import urllib.request

import pytest
from api_helpers import Docker
from engine_helpers import Isobox

from harness import unique_id

pytestmark = pytest.mark.engine


def test_version_negotiates_down_to_what_the_server_advertises(docker: Docker) -> None:
    out = docker("version").stdout
    assert "API version:       1.41 (downgraded from 1.50)" in out
    assert "Server: isobox" in out
    info = json.loads(docker("info", "--format", "{{json .}}").stdout)
    assert info["OSType"] == "linux" and info["Driver"] == "overlay2"
    assert info["Containers"] == 0


def test_run_attached_passes_streams_and_exit_code(docker: Docker) -> None:
    p = docker("run", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert p.returncode == 3
    assert p.stdout == "out\n"
    assert p.stderr == "err\n"


def test_run_rm_removes_the_container_and_keeps_its_exit_code(docker: Docker,
                                                               isobox: Isobox) -> None:
    name = unique_id("rm")
    p = docker("run", "--rm", "--name", name, "busybox", "sh", "-c", "echo bye; exit 5",
               check=False)
    assert (p.returncode, p.stdout) == (5, "bye\n")
    assert name not in docker("ps", "-a", "--format", "{{.Names}}").stdout
    assert isobox.ids() == []


def test_run_interactive_pipes_stdin_until_eof(docker: Docker) -> None:
    p = docker("run", "-i", "--rm", "busybox", "cat", input_=b"l1\nl2\n")
    assert p.stdout == "l1\nl2\n"


def test_run_detached_with_env_port_memory_name(docker: Docker, isobox: Isobox) -> None:
    name = unique_id("web")
    cid = docker("run", "-d", "--name", name, "-e", "GREETING=hello", "-p", "127.0.0.1::80",
                 "--memory", "64m", "busybox", "sh", "-c",
                 "mkdir /www; echo $GREETING > /www/index.html; httpd -f -p 80 -h /www"
                 ).stdout.strip()
    assert len(cid) == 64
    ps = docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.Status}}").stdout
    assert f"{cid} {name} Up" in ps
    assert cid in isobox.ids()  # the CLI sees what the API made
    info = json.loads(docker("inspect", name).stdout)[0]
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert "GREETING=hello" in info["Config"]["Env"]
    port = info["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
    body = b""
    for _ in range(50):
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    assert body == b"hello\n"
    docker("stop", "-t", "1", name)
    assert docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "exited"
    docker("rm", name)
    assert isobox.ids() == []


def test_bind_mount_from_the_host(docker: Docker) -> None:
    with tempfile.TemporaryDirectory(prefix="ibx-api-vol-") as d:
        with open(os.path.join(d, "in.txt"), "w") as f:
            f.write("from host\n")
        p = docker("run", "--rm", "-v", f"{d}:/data", "busybox", "sh", "-c",
                   "cat /data/in.txt; echo from container > /data/out.txt")
        assert p.stdout == "from host\n"
        with open(os.path.join(d, "out.txt")) as f:
            assert f.read() == "from container\n"


def test_logs_follow_ends_when_the_container_stops(docker: Docker) -> None:
    name = unique_id("talk")
    docker("run", "-d", "--name", name, "busybox", "sh", "-c",
           "for i in 1 2 3; do echo line$i; echo warn$i >&2; sleep 0.3; done")
    p = docker("logs", "-f", name, timeout=30)
    assert p.stdout == "line1\nline2\nline3\n"
    assert p.stderr == "warn1\nwarn2\nwarn3\n"
    last = docker("logs", "--tail", "2", name)  # the last two records, both streams
    assert (last.stdout, last.stderr) == ("line3\n", "warn3\n")
    stamped = docker("logs", "-t", name).stdout.splitlines()
    assert stamped[0].endswith("Z line1")


def test_exec_and_its_exit_code(docker: Docker) -> None:
    name = unique_id("ex")
    docker("run", "-d", "--name", name, "busybox", "sleep", "60")
    p = docker("exec", "-e", "X=1", name, "sh", "-c", "echo x=$X; echo oops >&2; exit 4",
               check=False)
    assert (p.returncode, p.stdout, p.stderr) == (4, "x=1\n", "oops\n")
    p = docker("exec", "-i", name, "cat", input_=b"piped\n")
    assert p.stdout == "piped\n"
    docker("exec", "-d", name, "sh", "-c", "echo detached > /tmp/d")
    time.sleep(0.5)
    assert docker("exec", name, "cat", "/tmp/d").stdout == "detached\n"
    docker("kill", name)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "137"
    docker("rm", name)


def test_run_it_and_exec_it_on_a_terminal(docker: Docker) -> None:
    name = unique_id("tty")
    code, out = docker.in_pty(f"run -it --name {name} busybox sh",
                              [(1.5, b"tty; echo in-tty; exit 7\r")])
    assert code == 7, out
    assert b"/dev/pts/0" in out and b"in-tty" in out
    docker("start", name)
    code, out = docker.in_pty(f"exec -it {name} sh", [(1.0, b"tty; exit 5\r")])
    assert code == 5, out
    assert b"/dev/pts/" in out
    docker("rm", "-f", name)


def test_stats_cp_and_rm_of_a_running_container(docker: Docker) -> None:
    name = unique_id("st")
    docker("run", "-d", "--name", name, "--memory", "32m", "busybox", "sleep", "60")
    stats = docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}").stdout
    assert f"{name} " in stats and "/ 32MiB" in stats
    with tempfile.TemporaryDirectory(prefix="ibx-api-cp-") as d:
        src = os.path.join(d, "f.txt")
        with open(src, "w") as f:
            f.write("copied\n")
        docker("cp", src, f"{name}:/tmp/")
        assert docker("exec", name, "cat", "/tmp/f.txt").stdout == "copied\n"
        docker("exec", name, "sh", "-c", "mkdir /tmp/dir; echo deep > /tmp/dir/x")
        docker("cp", f"{name}:/tmp/dir", os.path.join(d, "back"))
        with open(os.path.join(d, "back", "x")) as f:
            assert f.read() == "deep\n"
    p = docker("rm", name, check=False)
    assert p.returncode != 0 and "stop the container before removing" in p.stderr
    docker("rm", "-f", name)


def test_export_writes_the_containers_filesystem(docker: Docker) -> None:
    name = unique_id("ex")
    docker("run", "--name", name, "busybox", "sh", "-c", "echo mine > /made-here")
    with tempfile.TemporaryDirectory(prefix="ibx-api-export-") as d:
        out = os.path.join(d, "fs.tar")
        docker("export", "-o", out, name)
        with tarfile.open(out) as t:
            names = t.getnames()
            assert "bin/busybox" in names and "made-here" in names
            member = t.extractfile("made-here")
            assert member is not None and member.read() == b"mine\n"
        p = docker("export", "-o", out, "ibx-no-such-container", check=False)
        assert p.returncode != 0 and "No such container: ibx-no-such-container" in p.stderr
    docker("rm", name)


def test_containers_of_the_isobox_cli_show_in_docker(docker: Docker, isobox: Isobox) -> None:
    name = unique_id("cli")
    isobox("run", "-d", "--name", name, "busybox", "sleep", "60")
    assert name in docker("ps", "--format", "{{.Names}}").stdout
    docker("stop", "-t", "0", name)
    assert isobox.record(name)["status"] == "exited"
    docker("rm", name)
    assert isobox.ids() == []
