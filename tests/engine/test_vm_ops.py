"""Working with a running micro-VM: `cp` both ways, `stats`, `top`, `exec -it` (terminal size,
resize), `exec` signal forwarding, `restart`, `logs -f` and `--restart on-failure` (TCG)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import signal
import struct
import tarfile
import termios
import time

import pytest
from engine_helpers import Isobox

from harness import RUN_PREFIX, wait_for

pytestmark = [pytest.mark.engine, pytest.mark.vm, pytest.mark.slow]

VM = ("--isolation", "vm", "--network", "none")
LOOP = "echo up; while :; do sleep 0.2; done"


@pytest.fixture(autouse=True)
def _needs_qemu() -> None:
    if not os.path.exists("/usr/bin/qemu-system-x86_64"):
        pytest.fail("qemu-system-x86 is not installed (make deps installs it)")


def _up(isobox: Isobox, name: str) -> None:
    wait_for(lambda: "up" in isobox("logs", name).stdout, timeout=40)


def test_cp_both_ways_survives_restart_and_needs_a_running_vm(isobox: Isobox,
                                                              tmp_path: object) -> None:
    tmp = str(tmp_path)
    name = f"{RUN_PREFIX}vmcp"
    isobox("run", "-d", "--name", name, *VM, "busybox", "sh", "-c", LOOP)
    src = os.path.join(tmp, "src")
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "a"), "w") as f:
        f.write("alpha\n")
    with open(os.path.join(src, "sub", "b"), "w") as f:
        f.write("beta\n")
    os.symlink("/etc/passwd", os.path.join(src, "lnk"))
    _up(isobox, name)

    isobox("cp", src, f"{name}:/tmp/")
    listing = isobox("exec", name, "sh", "-c",
                     "cat /tmp/src/a /tmp/src/sub/b; readlink /tmp/src/lnk; stat -c %u /tmp/src/a"
                     ).stdout.split()
    assert listing == ["alpha", "beta", "/etc/passwd", "0"]
    # a file onto a new name, a directory's contents, a guest symlink resolved in the guest
    isobox("cp", os.path.join(src, "a"), f"{name}:/tmp/renamed")
    assert isobox("exec", name, "cat", "/tmp/renamed").stdout == "alpha\n"
    isobox("exec", name, "sh", "-c", "echo guest > /tmp/src/made-in-guest; "
           "ln -s /tmp/src /tmp/via-link")
    out = os.path.join(tmp, "back")
    isobox("cp", f"{name}:/tmp/src", out)
    assert sorted(os.listdir(out)) == ["a", "lnk", "made-in-guest", "sub"]
    assert os.readlink(os.path.join(out, "lnk")) == "/etc/passwd"  # stays a link
    with open(os.path.join(out, "made-in-guest")) as f:
        assert f.read() == "guest\n"
    contents = os.path.join(tmp, "contents")
    os.mkdir(contents)
    isobox("cp", "-L", f"{name}:/tmp/via-link/.", contents)
    assert sorted(os.listdir(contents)) == ["a", "lnk", "made-in-guest", "sub"]
    stream = isobox.popen("cp", f"{name}:/etc/hostname", "-", stdout=-1)
    data, _ = stream.communicate(timeout=30)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        member = tf.extractfile("hostname")
        assert member is not None and member.read().strip()
    assert names == ["hostname"]
    missing = isobox("cp", f"{name}:/nope", tmp, check=False)
    assert missing.returncode != 0 and "Could not find the file /nope" in missing.stderr

    isobox("restart", "-t", "5", name)  # the guest disk (qcow2 overlay) keeps the copy
    wait_for(lambda: isobox("logs", name).stdout.count("up") == 2, timeout=40)
    assert isobox("exec", name, "cat", "/tmp/renamed").stdout == "alpha\n"

    isobox("kill", name)
    wait_for(lambda: isobox.record(name)["status"] == "exited", timeout=20)
    stopped = isobox("cp", f"{name}:/tmp/renamed", tmp, check=False)
    assert stopped.returncode != 0 and "must be running" in stopped.stderr
    assert "Traceback" not in stopped.stderr


def _read_for(fd: int, seconds: float, until: bytes = b"") -> bytes:
    out = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (until and until in out):
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_stats_top_exec_tty_and_signals(isobox: Isobox) -> None:
    from isobox.engine import stats
    from isobox.engine.engine import Engine

    name = f"{RUN_PREFIX}vmst"
    isobox("run", "-d", "--name", name, *VM, "--memory", "256m", "busybox", "sh", "-c",
           "echo up; (while :; do echo tick; sleep 0.5; done) & exec sleep 1000")
    _up(isobox, name)

    # logs -f of the detached VM streams lines as the workload writes them
    follow = isobox.popen("logs", "-f", name, stdout=-1)
    assert follow.stdout is not None
    seen = [follow.stdout.readline() for _ in range(4)]
    assert seen.count(b"tick\n") >= 3, seen
    follow.terminate()
    follow.wait(timeout=10)

    # stats: the guest's memory in the table, host (QEMU cgroup) and guest figures in the JSON
    row = json.loads(isobox("stats", "--no-stream", "--format", "json", name).stdout)
    _used, limit = row["MemUsage"].split(" / ")
    assert limit.endswith("MiB") and 150 < float(limit[:-3]) <= 256  # the guest's MemTotal
    engine = Engine(isobox.root)
    data = stats.container_stats(engine, engine.get(name), interval=0)
    vm = data["vm_stats"]
    assert 150 << 20 < vm["guest_memory_total"] <= 256 << 20
    assert 0 < vm["guest_memory_used"] < vm["guest_memory_total"]
    assert vm["host_memory_usage"] > 10 << 20  # QEMU's own RSS and the RAM it touched
    assert vm["host_memory_limit"] > 256 << 20  # guest RAM plus QEMU's allowance
    assert stats.summarize(data).mem_limit == vm["guest_memory_total"]

    top = isobox("top", name).stdout.splitlines()
    assert top[0].split()[0] == "PID"
    cmds = [line.split(None, 2)[2] for line in top[1:]]
    assert "sleep 1000" in cmds
    assert not any(c.startswith("[") for c in cmds)  # no kernel threads, no agent
    assert not any("ps" in c.split()[:2] for c in cmds)  # not our own ps either

    # exec -it: a terminal of the host's size, resized on SIGWINCH
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(Isobox.binary(), ["isobox", "exec", "-it", name, "sh"], isobox.env)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        _read_for(fd, 15, b"# ")
        os.write(fd, b"tty; stty size\r")
        got = _read_for(fd, 15, b"24 80")
        assert b"/dev/pts/" in got and b"24 80" in got, got
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
        time.sleep(0.5)
        os.write(fd, b"stty size; exit 3\r")
        got = _read_for(fd, 15, b"40 132")
        assert b"40 132" in got, got
        _read_for(fd, 5)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3

    # SIGTERM to `isobox exec` reaches the process in the guest
    proc = isobox.popen("exec", name, "sh", "-c",
                        'trap "echo got-term; exit 7" TERM; echo ready; '
                        "while :; do sleep 0.1; done", stdout=-1)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=20)
    assert rest == b"got-term\n" and proc.returncode == 7


def test_restart_on_failure(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}vmrf"
    isobox("run", "-d", "--name", name, *VM, "--restart", "on-failure:2", "busybox", "sh",
           "-c", "echo try; exit 1")
    wait_for(lambda: isobox.record(name)["status"] == "exited"
             and isobox("logs", name).stdout.count("try") == 3, timeout=60)
    info = json.loads(isobox("inspect", name).stdout)[0]
    assert info["RestartCount"] == 2 and info["State"]["ExitCode"] == 1
    time.sleep(1)
    assert isobox("logs", name).stdout.count("try") == 3  # no third restart


def test_guest_tar_cannot_write_outside_the_destination(tmp_path: object) -> None:
    """What a hostile guest sends for `cp` out goes through the layer unpacker: a symlink it
    plants is never followed out of the destination."""
    from isobox.engine.vm_copy import _rewrite
    from isobox.images.unpack import unpack_layer

    tmp = str(tmp_path)
    outside = os.path.join(tmp, "outside")
    dest = os.path.join(tmp, "dest")
    os.mkdir(outside)
    os.mkdir(dest)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for ti, body in (
                (tarfile.TarInfo("d"), None),
                (tarfile.TarInfo("d/l"), None),
                (tarfile.TarInfo("d/l/pwn"), b"x"),
                (tarfile.TarInfo("elsewhere/y"), b"y"),
                (tarfile.TarInfo("d/ok"), b"ok")):
            if ti.name == "d":
                ti.type = tarfile.DIRTYPE
            elif ti.name == "d/l":
                ti.type, ti.linkname = tarfile.SYMTYPE, outside
            if body is not None:
                ti.size = len(body)
            tf.addfile(ti, io.BytesIO(body) if body is not None else None)
    raw.seek(0)
    rewritten = io.BytesIO()
    _rewrite(raw, rewritten, "d", "top", (0, 0))
    rewritten.seek(0)
    with tarfile.open(fileobj=io.BytesIO(rewritten.getvalue())) as tf:
        assert all(n == "top" or n.startswith("top/") for n in tf.getnames())
    unpack_layer(rewritten, dest, whiteouts="apply", allow_devices=False)
    assert os.listdir(outside) == []  # top/l/pwn did not go through the planted link
    assert sorted(os.listdir(os.path.join(dest, "top"))) == ["l", "ok"]
    assert not os.path.exists(os.path.join(dest, "elsewhere"))  # outside the requested tree
