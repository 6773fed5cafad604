"""The guest agent, run on the host in --test mode (same loop as PID 1 in the VM, without the
mounts and the power-off), driven through the real host client over unix sockets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import RUN_PREFIX
from isobox.vm.agent_build import AGENT_SOURCE, agent_binary
from isobox.vm.agent_client import AgentConnection, ExecError, pump_session
from isobox.vm.agent_protocol import (
    HEADER,
    PROTOCOL_VERSION,
    AgentError,
    ExecSpec,
    Frame,
    FrameDecoder,
    FrameType,
    encode_frame,
)

ENV = ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"]


class Agent:
    def __init__(self, binary: Path, workdir: Path, nctl: int = 2, main: bool = False,
                 extra: tuple[str, ...] = (), wrapper: tuple[str, ...] = ()) -> None:
        self.dir = workdir
        self.ctl = [workdir / f"ctl{i}" for i in range(nctl)]
        args = [*wrapper, str(binary), "--test", *extra]
        for p in self.ctl:
            args += ["--ctl", str(p)]
        self.stdio: socket.socket | None = None
        if main:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(workdir / "stdio"))
            listener.listen(1)
            self.listener = listener
            args += ["--stdio", str(workdir / "stdio"), "--stderr", str(workdir / "stderr"),
                     "--status", str(workdir / "status")]
        self.log = open(workdir / "agent.log", "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)
        if main:
            self.listener.settimeout(5)
            self.stdio, _ = self.listener.accept()
            self.listener.close()

    def connect(self, port: int = 0) -> AgentConnection:
        return AgentConnection(self.ctl[port], timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("agent ignored SIGTERM") from None
        if self.stdio:
            self.stdio.close()
        self.log.close()


@pytest.fixture(scope="module")
def agent_bin() -> Iterator[Path]:
    cache = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-agentcache-"))
    try:
        yield agent_binary(cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-agent-"))  # short: unix socket paths
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def agent(agent_bin: Path, workdir: Path) -> Iterator[Agent]:
    a = Agent(agent_bin, workdir)
    yield a
    a.stop()


def pid_gone(pid: int, timeout: float = 3) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    time.sleep(0.02)
                    continue
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


# -- build -------------------------------------------------------------------------------------

def test_build_is_cached_static_and_warning_free(agent_bin: Path, workdir: Path) -> None:
    assert agent_binary(agent_bin.parent.parent.parent) == agent_bin  # reused, not rebuilt
    # musl when installed (make deps does): every MiB of initramfs costs boot time under TCG
    assert agent_bin.stat().st_size < ((256 << 10) if shutil.which("musl-gcc") else (2 << 20))
    out = subprocess.run(["file", "-L", str(agent_bin)], capture_output=True, text=True)
    if out.returncode == 0:
        assert "statically linked" in out.stdout
    for cc in ("cc", "musl-gcc"):
        if shutil.which(cc) is None:
            continue
        proc = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2",
                               "-fsyntax-only", str(AGENT_SOURCE)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"{cc}: {proc.stderr}"


def test_not_pid1_without_test_flag(agent_bin: Path) -> None:
    proc = subprocess.run([str(agent_bin)], capture_output=True, text=True, timeout=5)
    assert proc.returncode == 2 and "--test" in proc.stderr


# -- exec ----------------------------------------------------------------------------------------

def test_args_env_cwd_and_exit_codes(agent: Agent) -> None:
    with agent.connect() as conn:
        assert conn.version == PROTOCOL_VERSION == 2
        s = conn.exec_spec(ExecSpec(["sh", "-c", 'echo "$1:$FOO:$(pwd)"; exit 3', "sh", "a b"],
                               env=[*ENV, "FOO=bär"], cwd="/tmp"))
        assert s.pid and s.pid > 0
        assert s.wait(5) == 3
        assert s.stdout.decode() == "a b:bär:/tmp\n"
        assert conn.exec_spec(ExecSpec(["true"], env=ENV)).wait(5) == 0


def test_stdout_stderr_are_separate(agent: Agent) -> None:
    with agent.connect() as conn:
        s = conn.exec_spec(ExecSpec(["sh", "-c", "echo out; echo err >&2; echo out2"], env=ENV))
        assert s.wait(5) == 0
        assert (bytes(s.stdout), bytes(s.stderr)) == (b"out\nout2\n", b"err\n")


def test_exec_failures_like_docker(agent: Agent, workdir: Path) -> None:
    noexec = workdir / "noexec"
    noexec.write_text("#!/bin/sh\n")
    with agent.connect() as conn:
        with pytest.raises(ExecError) as e:
            conn.exec_spec(ExecSpec(["no-such-cmd-xyz"], env=ENV))
        assert e.value.exit_code == 127
        assert str(e.value) == 'exec: "no-such-cmd-xyz": executable file not found in $PATH'
        with pytest.raises(ExecError) as e:
            conn.exec_spec(ExecSpec([str(noexec)], env=ENV))
        assert e.value.exit_code == 126 and "permission denied" in str(e.value).lower()
        with pytest.raises(ExecError) as e:
            conn.exec_spec(ExecSpec(["true"], env=ENV, cwd="/no/such/dir"))
        assert e.value.exit_code == 126 and "/no/such/dir" in str(e.value)
        # the connection is still good
        assert conn.exec_spec(ExecSpec(["true"], env=ENV)).wait(5) == 0


def test_signal_kills_with_128_plus_signal(agent: Agent) -> None:
    with agent.connect() as conn:
        s = conn.exec_spec(ExecSpec(["sleep", "30"], env=ENV))
        assert s.pid is not None
        s.signal(signal.SIGKILL)
        assert s.wait(5) == 128 + 9
        assert pid_gone(s.pid)


def test_stdin_streaming_and_eof(agent: Agent) -> None:
    data = os.urandom(3 << 20)  # above the agent's pipe and socket buffers: back-pressure
    out = bytearray()  # a sink: the default buffer keeps only the last MiB
    with agent.connect() as conn:
        s = conn.exec_spec(ExecSpec(["cat"], env=ENV), on_stdout=out.extend)
        s.stdin_write(b"first line\n")
        conn.run_until(lambda: bytes(out) == b"first line\n", 5, "echo")
        s.stdin_write(data)
        s.close_stdin()
        assert s.wait(10) == 0
        assert bytes(out) == b"first line\n" + data


def test_big_output_intact(agent: Agent, workdir: Path) -> None:
    blob = workdir / "blob"
    data = os.urandom(8 << 20)
    blob.write_bytes(data)
    out, err = bytearray(), bytearray()
    with agent.connect() as conn:
        t = time.monotonic()
        s = conn.exec_spec(ExecSpec(["sh", "-c", f"cat {blob}; cat {blob} >&2"], env=ENV),
                           on_stdout=out.extend, on_stderr=err.extend)
        assert s.wait(15) == 0
        elapsed = time.monotonic() - t
    assert bytes(out) == data and bytes(err) == data
    print(f"16 MiB through the agent in {elapsed:.2f}s")


def test_terminal_and_resize(agent: Agent) -> None:
    with agent.connect() as conn:
        s = conn.exec_spec(ExecSpec(["sh", "-c", "test -t 0 && echo is-a-tty; stty size; read x; "
                                "stty size"], env=ENV, terminal=True, rows=24, cols=80))
        conn.run_until(lambda: b"24 80" in s.stdout, 5, "first stty size")
        s.resize(50, 132)
        s.stdin_write(b"go\n")
        assert s.wait(5) == 0
        out = bytes(s.stdout)
    assert b"is-a-tty\r\n24 80\r\n" in out
    assert out.endswith(b"50 132\r\n")
    assert s.stderr == b""


def test_concurrent_sessions_and_ports(agent: Agent) -> None:
    with agent.connect(0) as c0, agent.connect(1) as c1:
        t = time.monotonic()
        sessions = [c0.exec_spec(ExecSpec(["sh", "-c", f"sleep 0.5; echo {i}"], env=ENV))
                    for i in range(3)]
        other = c1.exec_spec(ExecSpec(["sh", "-c", "sleep 0.5; echo other"], env=ENV))
        assert [s.wait(5) for s in sessions] == [0, 0, 0]
        assert other.wait(5) == 0
        assert time.monotonic() - t < 1.4  # ran side by side, not one after the other
    assert [bytes(s.stdout) for s in sessions] == [b"0\n", b"1\n", b"2\n"]
    assert other.stdout == b"other\n"


def test_disconnect_keeps_sessions_and_reconnect_works(agent: Agent) -> None:
    conn = agent.connect()
    s = conn.exec_spec(ExecSpec(["sleep", "30"], env=ENV))
    assert s.pid is not None
    conn.close()
    with agent.connect() as again:  # session ids restart at 1: no clash with the old one
        assert again.exec_spec(ExecSpec(["echo", "hi"], env=ENV)).wait(5) == 0
    assert not pid_gone(s.pid, 0.1)  # still running
    agent.stop()
    assert pid_gone(s.pid)  # the agent's shutdown ended it


def test_protocol_errors_keep_the_connection(agent: Agent) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    deadline = time.monotonic() + 5
    while True:
        try:
            sock.connect(str(agent.ctl[0]))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    big = 2 << 20
    sock.sendall(HEADER.pack(FrameType.STDIN, 7, big) + b"\0" * big)  # over 1 MiB: skipped
    sock.sendall(encode_frame(FrameType.EXEC, 8, b"{not json"))
    sock.sendall(bytes([99]) + (9).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    sock.sendall(encode_frame(FrameType.PING, 10))
    dec = FrameDecoder()
    frames: list[Frame] = []
    while not any(f.type is FrameType.PONG for f in frames):
        data = sock.recv(65536)
        assert data
        frames += dec.feed(data)
    sock.close()
    assert [(f.type, f.session) for f in frames] == [
        (FrameType.ERROR, 7), (FrameType.ERROR, 8), (FrameType.ERROR, 9), (FrameType.PONG, 10)]
    assert "1 MiB" in frames[0].json()["message"]
    assert "malformed" in frames[1].json()["message"]


def test_pump_session_to_fds(agent: Agent, workdir: Path) -> None:
    rin, win = os.pipe()
    out_path, err_path = workdir / "out", workdir / "err"
    os.write(win, b"through stdin\n")
    os.close(win)
    with agent.connect() as conn, open(out_path, "wb") as out, open(err_path, "wb") as err:
        s = conn.exec_spec(ExecSpec(["sh", "-c", "cat; echo bye >&2; exit 4"], env=ENV))
        code = pump_session(s, rin, out.fileno(), err.fileno())
    os.close(rin)
    assert code == 4
    assert out_path.read_bytes() == b"through stdin\n"
    assert err_path.read_bytes() == b"bye\n"


def test_agent_unreachable_is_a_clear_error(workdir: Path) -> None:
    with pytest.raises(AgentError, match="ctl-missing"):
        AgentConnection(workdir / "ctl-missing", timeout=0.3)


# -- the main workload ---------------------------------------------------------------------------

def _read_until(sock: socket.socket, want: bytes, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while want not in data:
        chunk = sock.recv(4096)
        assert chunk, f"stdio closed, got {data!r}"
        data += chunk
    return data


def test_main_process_uses_stdio_ports_and_reports_status(agent_bin: Path,
                                                          workdir: Path) -> None:
    a = Agent(agent_bin, workdir, nctl=1, main=True)
    try:
        assert a.stdio is not None
        with a.connect() as conn:
            s = conn.exec(["sh", "-c", 'read x; echo "got $x"; echo oops >&2; exit 5'],
                          env=ENV, main=True)
            assert s.id == 0
            a.stdio.sendall(b"hello\n")
            assert _read_until(a.stdio, b"got hello\n") == b"got hello\n"
            assert s.wait(5) == 5
        assert a.proc.wait(5) == 0  # the test-mode stand-in for the power-off
        assert (workdir / "status").read_text() == "exit=5\n"
        assert (workdir / "stderr").read_bytes() == b"oops\n"
    finally:
        a.stop()


def test_main_terminal_killed_from_another_connection(agent_bin: Path, workdir: Path) -> None:
    a = Agent(agent_bin, workdir, nctl=2, main=True)
    try:
        assert a.stdio is not None
        with a.connect(0) as conn:
            conn.exec_spec(ExecSpec(["sh", "-c", "test -t 0 && echo tty-ok; exec sleep 30"],
                               env=ENV, main=True, terminal=True))
        # `start` has gone; a later `kill` reaches the main process as session 0
        assert b"tty-ok\r\n" in _read_until(a.stdio, b"tty-ok")
        with a.connect(1) as kill_conn, pytest.raises(ExecError, match="main process"):
            kill_conn.exec_spec(ExecSpec(["true"], env=ENV, main=True))  # only one main
        with a.connect(1) as kill_conn:
            kill_conn.signal(0, signal.SIGKILL)
            assert a.proc.wait(5) == 0
        assert (workdir / "status").read_text() == "exit=137\n"
    finally:
        a.stop()


def test_background_process_does_not_hold_exit(agent: Agent) -> None:
    with agent.connect() as conn:
        t = time.monotonic()
        s = conn.exec_spec(ExecSpec(["sh", "-c", "sleep 20 & echo $!"], env=ENV))
        assert s.wait(5) == 0
        assert time.monotonic() - t < 2
    orphan = int(s.stdout)
    assert not pid_gone(orphan, 0.1)
    agent.stop()
    assert pid_gone(orphan)  # the agent's shutdown ends orphans of finished sessions too


def test_many_sessions_in_parallel_threads(agent: Agent) -> None:
    """Each control port is used by one client at a time; two clients on two ports."""
    errors: list[BaseException] = []

    def run(port: int) -> None:
        try:
            with agent.connect(port) as conn:
                for i in range(10):
                    s = conn.exec_spec(ExecSpec(["echo", str(i)], env=ENV))
                    assert s.wait(5) == 0 and s.stdout == f"{i}\n".encode()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors


def test_main_with_stdin_closed_reads_eof(agent_bin: Path, workdir: Path) -> None:
    a = Agent(agent_bin, workdir, nctl=1, main=True)
    try:
        with a.connect() as conn:
            s = conn.exec(["sh", "-c", "cat; echo done"], env=ENV, main=True, stdin=False)
            assert s.wait(5) == 0
        assert a.proc.wait(5) == 0
        assert (workdir / "status").read_text() == "exit=0\n"
    finally:
        a.stop()


def test_rootfs_chroot_and_files(agent_bin: Path, workdir: Path, busybox_rootfs: str) -> None:
    root = workdir / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    (root / "etc").mkdir(exist_ok=True)
    outside = workdir / "outside"
    (root / "etc" / "resolv.conf").unlink(missing_ok=True)
    (root / "etc" / "resolv.conf").symlink_to(outside)
    marker = root / "only-in-rootfs"
    marker.write_text("")
    a = Agent(agent_bin, workdir, extra=("--rootfs", str(root)))
    try:
        with a.connect() as conn:
            s = conn.exec(["sh", "-c", "cat /etc/hosts /etc/resolv.conf; ls /"], env=ENV,
                          files={"/etc/hosts": "10.0.0.7 web\n",
                                 "/etc/resolv.conf": "nameserver 10.0.0.1\n"})
            assert s.wait(5) == 0, s.stderr
            with pytest.raises(ExecError, match="files"):
                conn.exec(["true"], env=ENV, files={"/etc/../x": ""})
    finally:
        a.stop()
    out = s.stdout.decode()
    assert out.startswith("10.0.0.7 web\nnameserver 10.0.0.1\n")
    assert "only-in-rootfs" in out.split()  # ran chrooted
    assert not outside.exists() and not (root / "etc" / "resolv.conf").is_symlink()


NET_MAC = "02:42:0a:63:00:05"


def test_guest_network_configuration(agent_bin: Path, workdir: Path) -> None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs unshare and ip")
    setup = (f"ip link add eth7 type veth peer name eth7p && ip link set eth7p up && "
             f"ip link set eth7 address {NET_MAC} && "
             'exec "$0" "$@"')
    a = Agent(agent_bin, workdir, extra=("--allow-net",),
              wrapper=("unshare", "--net", "sh", "-c", setup))
    try:
        with a.connect() as conn:
            net = {"mac": NET_MAC.upper(), "address": "10.99.0.5/24", "gateway": "10.99.0.1",
                   "mtu": 1400}
            s = conn.exec(["sh", "-c", "ip -o -4 addr show; ip route; ip link show eth7"],
                          env=ENV, net=net)
            assert s.wait(5) == 0, s.stderr
            with pytest.raises(ExecError, match="no network interface with MAC"):
                conn.exec(["true"], env=ENV, net={**net, "mac": "02:00:00:00:00:01"})
    finally:
        a.stop()
    out = s.stdout.decode()
    assert "eth7    inet 10.99.0.5/24" in out and "lo    inet 127.0.0.1/8" in out
    assert "default via 10.99.0.1 dev eth7" in out
    assert "mtu 1400" in out


def test_net_refused_in_test_mode_without_flag(agent: Agent) -> None:
    with agent.connect() as conn, pytest.raises(ExecError, match="--allow-net") as e:
        conn.exec(["true"], env=ENV, net={"mac": NET_MAC, "address": "10.99.0.5/24"})
    assert e.value.exit_code == 126
