"""Limits of the host side of the agent protocol: bounded output buffers and stdin, strict
JSON fields, signal relaying from the loop, control-port allocation. The real C agent runs in
--test mode on the host (see test_vm_agent.py); a scripted fake agent speaks bad JSON."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_vm_agent import ENV, Agent

from harness import RUN_PREFIX
from isobox.errors import ConfigError, ConflictError
from isobox.vm.agent_build import agent_binary
from isobox.vm.agent_client import (
    _STDIN_HIGH,
    CAPTURE_LIMIT,
    AgentConnection,
    ExecSession,
    pump_session,
    send_stream,
)
from isobox.vm.agent_protocol import AgentError, FrameDecoder, FrameType, encode_frame
from isobox.vm.runtime.control import agent_session, control_port
from isobox.vm.runtime.exec import SignalRelay
from isobox.vm.runtime.state import CTL_PORTS, VMState


@pytest.fixture(scope="module")
def agent_bin() -> Iterator[Path]:
    cache = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-agentcache-"))
    try:
        yield agent_binary(cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-lim-"))  # short: unix socket paths
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def agent(agent_bin: Path, workdir: Path) -> Iterator[Agent]:
    a = Agent(agent_bin, workdir, nctl=CTL_PORTS)
    yield a
    a.stop()


# -- output buffers ------------------------------------------------------------------------------

def test_default_output_buffers_keep_a_bounded_tail(agent: Agent, workdir: Path) -> None:
    blob = workdir / "blob"
    data = os.urandom(3 * CAPTURE_LIMIT + 123)
    blob.write_bytes(data)
    with agent.connect() as conn:
        s = conn.exec(["sh", "-c", f"cat {blob}; cat {blob} >&2"], env=ENV)
        assert s.wait(15) == 0
    assert bytes(s.stdout) == data[-CAPTURE_LIMIT:]
    assert s.stdout.dropped == len(data) - CAPTURE_LIMIT
    assert bytes(s.stderr) == data[-CAPTURE_LIMIT:] and s.stderr.dropped == s.stdout.dropped
    assert s.stderr.text(10).startswith(f"[{len(data) - 10} earlier bytes truncated] ")


# -- malformed JSON from the guest ---------------------------------------------------------------

GOOD_PONG = b'{"version":1}'


class FakeAgent:
    """Answers PING with ``pong`` and an EXEC with the ``replies`` (type, JSON payload)."""

    def __init__(self, path: Path, pong: bytes,
                 replies: tuple[tuple[FrameType, bytes], ...] = ()) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.pong, self.replies = pong, replies
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        dec = FrameDecoder()
        try:
            while data := conn.recv(65536):
                for f in dec.feed(data):
                    if f.type is FrameType.PING:
                        conn.sendall(encode_frame(FrameType.PONG, f.session, self.pong))
                    elif f.type is FrameType.EXEC:
                        for ftype, payload in self.replies:
                            conn.sendall(encode_frame(ftype, f.session, payload))
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.mark.parametrize("pong", [b'{"version":true}', b'{"version":"1"}', b'{"version":1.0}',
                                  b"{}", b'{"version":-1}', b"[1]"])
def test_bad_pong_is_an_agent_error(workdir: Path, pong: bytes) -> None:
    fake = FakeAgent(workdir / "ctl", pong)
    try:
        with pytest.raises(AgentError, match="PONG frame"):
            AgentConnection(workdir / "ctl", timeout=3).close()
    finally:
        fake.close()


@pytest.mark.parametrize("replies", [
    ((FrameType.STARTED, b'{"pid":"12"}'),),
    ((FrameType.STARTED, b'{"pid":false}'),),
    ((FrameType.STARTED, b'{"pid":1e3}'),),
    ((FrameType.STARTED, b'{"pid":12}'), (FrameType.EXIT, b'{"code":true}')),
    ((FrameType.STARTED, b'{"pid":12}'), (FrameType.EXIT, b'{"code":99999999999}')),
    ((FrameType.STARTED, b'{"pid":12}'), (FrameType.EXIT, b'{}')),
    ((FrameType.ERROR, b'{"message":"x","code":"7"}'),),
])
def test_bad_fields_are_an_agent_error(workdir: Path,
                                       replies: tuple[tuple[FrameType, bytes], ...]) -> None:
    fake = FakeAgent(workdir / "ctl", GOOD_PONG, replies)
    try:
        with AgentConnection(workdir / "ctl", timeout=3) as conn, \
                pytest.raises(AgentError, match="must be an integer"):
            conn.exec(["x"]).wait(3)
    finally:
        fake.close()


def test_good_fields_still_work(workdir: Path) -> None:
    replies = ((FrameType.STARTED, b'{"pid":12}'), (FrameType.EXIT, b'{"code":137}'))
    fake = FakeAgent(workdir / "ctl", GOOD_PONG, replies)
    try:
        with AgentConnection(workdir / "ctl", timeout=3) as conn:
            assert conn.version == 1
            s = conn.exec(["x"])
            assert (s.pid, s.wait(3)) == (12, 137)
    finally:
        fake.close()


# -- stdin: bounded, streamed, with a deadline ---------------------------------------------------

class Recorder(io.RawIOBase):
    """``size`` zero bytes, noting how many bytes waited in the connection at each read."""

    def __init__(self, session: ExecSession, size: int) -> None:
        self.session, self.left, self.queued_at_read = session, size, list[int]()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.queued_at_read.append(self.session.conn.queued)
        n = min(self.left, 1 << 16 if n < 0 else n)
        self.left -= n
        return b"\0" * n


def test_send_stream_reads_only_while_there_is_room(agent: Agent) -> None:
    size = 24 << 20
    with agent.connect() as conn:
        s = conn.exec(["sh", "-c", "sleep 0.5; wc -c"], env=ENV)
        src = Recorder(s, size)
        assert send_stream(s, src, 10.0) is True
        assert s.wait(10) == 0
    assert src.left == 0 and int(s.stdout) == size
    assert max(src.queued_at_read) < _STDIN_HIGH


def test_send_stream_times_out_when_the_guest_takes_nothing(agent: Agent) -> None:
    with agent.connect() as conn:
        s = conn.exec(["sleep", "30"], env=ENV)
        src = Recorder(s, 256 << 20)
        t = time.monotonic()
        with pytest.raises(AgentError, match=r"took no stdin for 0\.5s"):
            send_stream(s, src, 0.5)
        assert time.monotonic() - t < 5
        assert src.left > 200 << 20  # stopped reading: memory stayed bounded
        assert max(src.queued_at_read) < _STDIN_HIGH


def test_pump_session_streams_a_regular_file_stdin(agent: Agent, workdir: Path) -> None:
    data = os.urandom(5 << 20)
    (workdir / "in").write_bytes(data)
    with agent.connect() as conn, open(workdir / "in", "rb") as src, \
            open(workdir / "out", "wb") as out, open(workdir / "err", "wb") as err:
        s = conn.exec(["sh", "-c", "cat; echo done >&2"], env=ENV)
        assert pump_session(s, src.fileno(), out.fileno(), err.fileno()) == 0
    assert (workdir / "out").read_bytes() == data
    assert (workdir / "err").read_bytes() == b"done\n"


# -- signals: recorded by the handler, sent by the loop ------------------------------------------

GUEST_WAITS_FOR_USR1 = """
import signal, sys, time
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
sys.stderr.write("ready\\n"); sys.stderr.flush()
end = time.monotonic() + 5
while not got and time.monotonic() < end:
    time.sleep(0.01)
sys.exit(0 if got else 3)
"""

GUEST_COUNTS_USR1 = """
import hashlib, signal, sys
n = []
signal.signal(signal.SIGUSR1, lambda s, f: n.append(s))
sys.stderr.write("ready\\n"); sys.stderr.flush()
h = hashlib.sha256()
while chunk := sys.stdin.buffer.read(65536):
    h.update(chunk)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the storm goes on while we exit
print(h.hexdigest(), len(n))
"""


def _ready(conn: AgentConnection, s: ExecSession) -> None:
    conn.run_until(lambda: b"ready" in s.stderr, 10, "guest ready")
    s.stderr.clear()


def test_signal_handler_only_records_and_the_loop_wakes(agent: Agent, workdir: Path) -> None:
    python = shutil.which("python3")
    assert python
    with agent.connect() as conn, open(workdir / "out", "wb") as out:
        s = conn.exec([python, "-c", GUEST_WAITS_FOR_USR1], env=ENV, stdin=False)
        _ready(conn, s)
        with SignalRelay(s) as relay:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert relay.pending == [signal.SIGUSR1]  # recorded, nothing written yet
            assert conn.queued == 0
            relay.pending.clear()
            timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
            timer.start()
            try:
                t = time.monotonic()
                # the loop sleeps on the socket: only the wakeup fd can wake it
                code = pump_session(s, None, out.fileno(), out.fileno(), extra=relay.extra)
                elapsed = time.monotonic() - t
            finally:
                timer.join()
    assert code == 0 and elapsed < 3


def _timed_out(_sig: int, _frame: object) -> None:
    raise TimeoutError("the session did not end within 30s")


def test_signal_storm_keeps_the_frame_stream_intact(agent: Agent, workdir: Path) -> None:
    python = shutil.which("python3")
    assert python
    data = os.urandom(16 << 20)
    rin, win = os.pipe()

    def feed() -> None:
        with open(win, "wb") as w:
            w.write(data)

    stop = threading.Event()

    def storm() -> None:
        while not stop.wait(0.002):
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGWINCH)

    with agent.connect() as conn, open(workdir / "out", "wb") as out:
        s = conn.exec([python, "-c", GUEST_COUNTS_USR1], env=ENV)
        _ready(conn, s)
        with SignalRelay(s) as relay:
            threads = [threading.Thread(target=feed), threading.Thread(target=storm)]
            for th in threads:
                th.start()
            old_alarm = signal.signal(signal.SIGALRM, _timed_out)
            signal.alarm(30)  # a corrupted stream could leave the loop waiting forever
            try:
                code = pump_session(s, rin, out.fileno(), out.fileno(), extra=relay.extra)
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, old_alarm)
                stop.set()
                for th in threads:
                    th.join(10)
                os.close(rin)
    assert code == 0
    digest, count = (workdir / "out").read_text().split()
    assert digest == hashlib.sha256(data).hexdigest()
    assert int(count) >= 1


# -- control ports -------------------------------------------------------------------------------

def _vm(workdir: Path) -> VMState:
    for n in range(CTL_PORTS):  # the agent's sockets under VMState's names
        (workdir / f"ctl{n}.sock").symlink_to(workdir / f"ctl{n}")
    return VMState(id=f"{RUN_PREFIX}-vm", dir=str(workdir), bundle=str(workdir))


def test_ctl0_is_kept_for_control_verbs_and_busy_ports_time_out(agent: Agent,
                                                                workdir: Path) -> None:
    st = _vm(workdir)
    with agent_session(st, control=False, timeout=5) as a, \
            agent_session(st, control=False, timeout=5) as b, \
            agent_session(st, control=False, timeout=5) as c:
        assert sorted(x.path.name for x in (a, b, c)) == ["ctl1.sock", "ctl2.sock", "ctl3.sock"]
        t = time.monotonic()
        with pytest.raises(ConflictError, match=f"all 3 control ports of VM {st.id} are busy"), \
                control_port(st, control=False, wait=0.3):
            pass
        assert 0.3 <= time.monotonic() - t < 2
        with agent_session(st, control=True, timeout=5) as ctl:  # `kill` still gets in
            assert ctl.path.name == "ctl0.sock"
            assert ctl.exec(["true"], env=ENV).wait(5) == 0
            with pytest.raises(ConflictError, match="all 4 control ports"), \
                    control_port(st, control=True, wait=0.2):
                pass
    with control_port(st, control=False, wait=0) as n:
        assert n == 1


def test_cp_max_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from isobox.engine.vm_copy import CP_MAX_ENV, DEFAULT_CP_MAX, cp_max

    monkeypatch.delenv(CP_MAX_ENV, raising=False)
    assert cp_max() == DEFAULT_CP_MAX == 4 << 30
    monkeypatch.setenv(CP_MAX_ENV, "1048576")
    assert cp_max() == 1 << 20
    for bad in ("0", "-5", "4G"):
        monkeypatch.setenv(CP_MAX_ENV, bad)
        with pytest.raises(ConfigError, match=CP_MAX_ENV):
            cp_max()
