"""Containers through the `isobox` CLI: run, ps, exec, stop, start, kill, rm, restart
policies, and state that outlives the CLI (including a simulated reboot)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from engine_helpers import Isobox

from harness import wait_for

pytestmark = pytest.mark.engine


def test_run_rm_foreground_streams_and_exit_code(isobox: Isobox) -> None:
    p = isobox("run", "--rm", "--network", "none", "busybox", "sh", "-c",
               "echo out; echo err >&2; exit 3", check=False)
    assert p.returncode == 3
    assert p.stdout == "out\n"
    assert p.stderr == "err\n"
    assert isobox.ids() == []


def test_run_passes_stdin_with_i(isobox: Isobox) -> None:
    p = isobox("run", "--rm", "-i", "--network", "none", "busybox", "sh", "-c",
               "tr a-z A-Z", input_=b"hello\n")
    assert p.stdout == "HELLO\n"


def test_detached_lifecycle(isobox: Isobox) -> None:
    cid = isobox("run", "-d", "--name", "life", "--network", "none", "busybox", "sh", "-c",
                 'trap "echo got-term; exit 7" TERM; while :; do sleep 0.1; done'
                 ).stdout.strip()
    assert len(cid) == 64
    ps = isobox("ps", "--format", "json").stdout
    rows = [json.loads(line) for line in ps.splitlines()]
    assert [(r["Names"], r["State"]) for r in rows] == [("life", "running")]
    pid = isobox.record("life")["pid"]
    assert os.path.exists(f"/proc/{pid}")
    ex = isobox("exec", "-e", "FOO=bar", "life", "sh", "-c", "echo $FOO; exit 4", check=False)
    assert (ex.returncode, ex.stdout) == (4, "bar\n")
    assert isobox("exec", "-w", "/etc", "life", "pwd").stdout == "/etc\n"
    env_file = os.path.join(isobox.root, "exec.env")
    with open(env_file, "w") as f:
        f.write("# comment\nFROM_FILE=1\nBOTH=file\n")
    out = isobox("exec", "--env-file", env_file, "-e", "BOTH=flag", "life", "sh", "-c",
                 "echo $FROM_FILE $BOTH").stdout
    assert out == "1 flag\n"  # -e wins over the file, as run's
    assert isobox("exec", "--privileged", "life", "true", check=False).returncode != 0
    isobox("stop", "-t", "5", "life")
    rec = isobox.record("life")
    assert rec["status"] == "exited" and rec["exit_code"] == 7
    assert not os.path.exists(f"/proc/{pid}")
    # start again, then kill: Docker's 137
    isobox("start", "life")
    assert isobox.record("life")["status"] == "running"
    isobox("kill", "life")
    wait_for(lambda: isobox.record("life")["status"] == "exited", what="exit after kill")
    assert isobox.record("life")["exit_code"] == 137
    assert "Exited (137)" in isobox("ps", "-a").stdout
    isobox("rm", "life")
    assert isobox.ids() == []


def test_wait_and_detached_rm(isobox: Isobox) -> None:
    cid = isobox("run", "-d", "--network", "none", "busybox", "sh", "-c",
                 "sleep 0.3; exit 5").stdout.strip()
    assert isobox("wait", cid).stdout.strip() == "5"
    isobox("rm", cid)
    cid = isobox("run", "-d", "--rm", "--network", "none", "busybox", "true").stdout.strip()
    wait_for(lambda: cid not in isobox.ids(), what="--rm of a detached container")


def test_rm_running_needs_force(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "busy", "--network", "none", "busybox", "sleep", "60")
    p = isobox("rm", "busy", check=False)
    assert p.returncode == 1
    assert "container is running: stop the container before removing or force remove" \
        in p.stderr
    isobox("rm", "-f", "busy")
    assert isobox.ids() == []


def test_containers_outlive_the_cli_and_a_reboot(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "survivor", "--network", "none", "busybox", "sleep", "300")
    rec = isobox.record("survivor")
    # simulated reboot: every process of the container and its monitor dies, /run is cleared
    for pid in (rec["pid"], rec["monitor_pid"]):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not os.path.exists(f"/proc/{rec['pid']}"), what="container death")
    run_dir = isobox.run_dir()
    subprocess.run(["umount", "-R", "-l", run_dir], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", run_dir], check=True)
    # overlay root still mounted from the "old boot": a real reboot would have unmounted it
    ps = isobox("ps", "-a").stdout
    assert "Exited (" in ps and "survivor" in ps
    assert isobox.record("survivor")["status"] == "exited"
    isobox("start", "survivor")
    assert isobox.record("survivor")["status"] == "running"
    isobox("rm", "-f", "survivor")


def test_restart_on_failure_with_backoff(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "--network", "none",
           "busybox", "sh", "-c", "exit 1")
    wait_for(lambda: isobox.record("flaky")["restart_count"] == 2
             and isobox.record("flaky")["status"] == "exited", timeout=20,
             what="two restarts then exited")
    time.sleep(0.5)
    assert isobox.record("flaky")["restart_count"] == 2


def test_readers_do_not_cancel_a_restart_policy(isobox: Isobox) -> None:
    """`ps` (which reconciles records) running while the exit hook is due must not record
    the exit itself and so skip the restart."""
    isobox("run", "-d", "--name", "watched", "--restart", "on-failure:2", "--network",
           "none", "busybox", "sh", "-c", "sleep 0.3; exit 1")
    import threading

    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            isobox("ps", "-a")

    readers = [threading.Thread(target=poll) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        wait_for(lambda: isobox.record("watched")["status"] == "exited"
                 and isobox.record("watched")["restart_count"] >= 2, timeout=15)
    except AssertionError:
        pass  # the assertion below says what happened
    finally:
        done.set()
        for t in readers:
            t.join()
    time.sleep(0.5)
    rec = isobox.record("watched")
    assert (rec["status"], rec["restart_count"]) == ("exited", 2)


def test_restart_always_and_stop_wins(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "phoenix", "--restart", "always", "--network", "none",
           "busybox", "sleep", "300")
    first = isobox.record("phoenix")["pid"]
    os.kill(first, signal.SIGKILL)  # dies outside isobox: the policy brings it back
    wait_for(lambda: isobox.record("phoenix")["status"] == "running"
             and isobox.record("phoenix")["pid"] != first, timeout=20, what="restart")
    isobox("stop", "-t", "1", "phoenix")
    time.sleep(0.5)
    assert isobox.record("phoenix")["status"] == "exited"


def test_a_killed_monitor_ends_the_container_and_the_policy_restarts_it(
        isobox: Isobox) -> None:
    """conmon killed (not a reboot): the next command records the end, kills the orphaned
    process (its stdio is gone, nobody would record its exit) and applies the policy."""
    isobox("run", "-d", "--name", "orphan", "--restart", "always", "--network", "none",
           "busybox", "sleep", "300")
    isobox("run", "-d", "--name", "lone", "--network", "none", "busybox", "sleep", "300")
    old = {n: isobox.record(n) for n in ("orphan", "lone")}
    for rec in old.values():
        os.kill(rec["monitor_pid"], signal.SIGKILL)
    wait_for(lambda: all(not os.path.exists(f"/proc/{r['monitor_pid']}")
                         for r in old.values()), what="monitors gone")
    assert "lone" in isobox("ps", "-a").stdout  # a reader finds both monitors dead
    wait_for(lambda: isobox.record("orphan")["status"] == "running"
             and isobox.record("orphan")["pid"] != old["orphan"]["pid"], timeout=20,
             what="the restart policy applied")
    rec = isobox.record("orphan")
    assert rec["restart_count"] == 1 and rec["monitor_pid"] != old["orphan"]["monitor_pid"]
    lone = isobox.record("lone")
    assert (lone["status"], lone["exit_code"]) == ("exited", 255)
    for r in old.values():  # the orphaned processes were killed, not left behind
        wait_for(lambda r=r: not os.path.exists(f"/proc/{r['pid']}"), what="orphan killed")
    isobox("rm", "-f", "orphan", "lone")


def test_system_boot_restarts_per_policy(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "keep", "--restart", "unless-stopped", "--network", "none",
           "busybox", "sleep", "300")
    isobox("run", "-d", "--name", "plain", "--network", "none", "busybox", "sleep", "300")
    isobox("run", "-d", "--name", "stopped", "--restart", "unless-stopped", "--network",
           "none", "busybox", "sleep", "300")
    isobox("stop", "-t", "0", "stopped")
    for name in ("keep", "plain"):
        rec = isobox.record(name)
        for pid in (rec["monitor_pid"], rec["pid"]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    subprocess.run(["rm", "-rf", isobox.run_dir()], check=True)
    out = isobox("system", "boot").stdout
    assert "started keep" in out and "plain" not in out and "stopped" not in out
    assert isobox.record("keep")["status"] == "running"
    assert isobox.record("plain")["status"] == "exited"
    assert isobox.record("stopped")["status"] == "exited"


@pytest.mark.parametrize("verb", [("kill",), ("stop", "-t", "1"), ("rm", "-f")])
def test_a_paused_container_can_be_killed_stopped_and_removed(isobox: Isobox,
                                                              verb: tuple[str, ...]) -> None:
    """As Docker's killWithSignal: signal, then unpause, so the signal is acted on."""
    name = f"paused-{verb[0]}"
    isobox("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "300")
    pid = isobox.record(name)["pid"]
    isobox("pause", name)
    p = isobox(*verb, name, check=False)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the paused process killed")
    if verb[0] == "rm":
        assert isobox.ids() == []
        return
    wait_for(lambda: isobox.record(name)["status"] == "exited", what="exit recorded")
    assert isobox.record(name)["exit_code"] == 137
    isobox("rm", name)


def test_rm_force_of_a_running_container_is_a_kill_to_waiters(isobox: Isobox) -> None:
    """A `wait` on a container removed with rm -f gets 137, and `events` the kill and die."""
    isobox("run", "-d", "--name", "doomed", "--network", "none", "busybox", "sleep", "300")
    cid = isobox.record("doomed")["id"]
    waiter = subprocess.Popen([isobox.binary(), "wait", "doomed"], env=isobox.env,
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    isobox("rm", "-f", "doomed")
    assert waiter.communicate(timeout=30)[0] == "137\n"
    events = isobox("events", "--since", "1m", "--until", "0s", "--filter",
                    f"container={cid}", "--format", "{{.Action}}").stdout.split()
    assert events[-3:] == ["kill", "die", "destroy"]


def test_stop_with_a_negative_timeout_waits_without_a_kill(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "patient", "--network", "none", "busybox", "sh", "-c",
           "trap 'sleep 2; exit 7' TERM; while :; do sleep 0.1; done")
    time.sleep(0.3)
    t = time.monotonic()
    isobox("stop", "-t", "-1", "patient")
    assert time.monotonic() - t >= 1.5
    rec = isobox.record("patient")
    assert (rec["status"], rec["exit_code"]) == ("exited", 7)
    isobox("rm", "patient")
