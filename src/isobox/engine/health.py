"""Health checks, the Docker way, without a daemon.

A container whose effective healthcheck (``--health-*`` merged over the image's
``Healthcheck``, Docker's rules) has a test gets one small ``/bin/sh`` loop, started detached
in its own session when the container starts: ``while sleep INTERVAL; do <health_hook> ||
exit 0; done``. Each round starts ``python -m isobox.engine.health_hook``, which runs the test
in the container through the runtime's ``exec`` (as ``isobox exec`` does) with the timeout,
records the result and exits non-zero once the container is gone, ending the loop. An idle
container therefore costs a shell and a ``sleep``, never a Python process. The loop's pid (its
process group) is kept in ``<run>/persist/<id>/health.pid``; ``teardown`` kills the group.

Status rules (moby's daemon/health.go): ``starting`` until the first result; a pass makes it
``healthy`` and resets the failing streak; a failure adds to the streak (not while still
``starting`` inside the start period) and ``retries`` of them make it ``unhealthy``. The log
keeps the last 5 results, each output cut to 4096 bytes; a check that exceeds the timeout is
killed and logged with exit code -1.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isobox.engine.state import ContainerRow
from isobox.errors import ConflictError, IsoboxError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

DEFAULT_INTERVAL_NS = 30_000_000_000
DEFAULT_TIMEOUT_NS = 30_000_000_000
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
PIDFILE = "health.pid"
LOOP_NAME = "isobox-health"
STATUSES = ("starting", "healthy", "unhealthy", "none")

# The per-container loop, and the one-shot shell that starts it in its own session (util-linux
# `setsid` execs directly: a background job of a non-interactive shell leads no group) and
# prints its pid, so the loop is nobody's child once that shell has exited.
LOOP = 'i=$1; shift; while sleep "$i"; do "$@" || exit 0; done'
SPAWN = 'cd / && setsid "$@" </dev/null >/dev/null 2>&1 & echo $!'


@dataclass(frozen=True)
class Probe:
    """The effective healthcheck of a container."""

    argv: tuple[str, ...]
    interval_ns: int = DEFAULT_INTERVAL_NS
    timeout_ns: int = DEFAULT_TIMEOUT_NS
    start_period_ns: int = 0
    retries: int = DEFAULT_RETRIES


@dataclass(frozen=True)
class CheckResult:
    start: float
    end: float
    exit_code: int
    output: str

    def log_entry(self) -> dict[str, Any]:
        from isobox.engine.inspect import rfc3339nano

        return {"Start": rfc3339nano(self.start), "End": rfc3339nano(self.end),
                "ExitCode": self.exit_code, "Output": self.output}


def effective_probe(opts: dict[str, Any]) -> Probe | None:
    """The container's healthcheck merged over the image's (moby's ``merge``: an empty test
    and zero durations come from the image); None when there is none or it is ``NONE``."""
    mine = opts.get("healthcheck") or {}
    img = (opts.get("image_config") or {}).get("Healthcheck") or {}
    test = list(mine.get("test") or []) or list(img.get("Test") or [])

    def pick(key: str, img_key: str) -> int:
        return int(mine.get(key) or 0) or int(img.get(img_key) or 0)

    if not test or test[0] == "NONE":
        return None
    kind, args = test[0], test[1:]
    if kind == "CMD-SHELL":
        shell = list((opts.get("image_config") or {}).get("Shell") or []) or ["/bin/sh", "-c"]
        argv = tuple([*shell, " ".join(args)])
    elif kind == "CMD":
        argv = tuple(args)
    else:
        return None
    if not argv or not argv[-1]:
        return None
    return Probe(argv=argv, interval_ns=pick("interval_ns", "Interval") or DEFAULT_INTERVAL_NS,
                 timeout_ns=pick("timeout_ns", "Timeout") or DEFAULT_TIMEOUT_NS,
                 start_period_ns=pick("start_period_ns", "StartPeriod"),
                 retries=pick("retries", "Retries") or DEFAULT_RETRIES)


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` for the durations a healthcheck uses."""
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    for unit, size in (("µs", 1_000), ("ms", 1_000_000)):
        if ns < size * 1000:
            return _trim(ns / size) + unit
    secs, rest = divmod(ns, 1_000_000_000)
    h, secs = divmod(secs, 3600)
    m, s = divmod(secs, 60)
    text = _trim(s + rest / 1e9) + "s"
    if h or m:
        text = f"{m}m{text}"
    if h:
        text = f"{h}h{text}"
    return text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


# ------------------------------------------------------------------------ one check

def run_probe(engine: Engine, row: ContainerRow, probe: Probe) -> CheckResult:
    """Run the test once in the running container; never raises for the test's own failure."""
    from isobox.engine.execute import ExecRequest, exec_process

    start = time.time()
    try:
        process = exec_process(engine, row, ExecRequest(args=list(probe.argv)))
    except (OSError, ValueError, IsoboxError) as e:
        return CheckResult(start, time.time(), -1, f"cannot prepare the check: {e}")
    persist = engine.layout.persist_dir(row.id)
    os.makedirs(persist, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="health-", suffix=".json", dir=persist)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(process))
        argv = engine.runtime(row).argv("exec", "--process", path, row.id)
        code, output = _run_limited(argv, probe.timeout_ns / 1e9)
    finally:
        os.unlink(path)
    if code is None:
        return CheckResult(start, time.time(), -1, "Health check exceeded timeout "
                           f"({go_duration(probe.timeout_ns)})")
    return CheckResult(start, time.time(), code, output.decode(errors="replace"))


def _run_limited(argv: list[str], timeout: float) -> tuple[int | None, bytes]:
    """Run ``argv`` in its own process group with stdout+stderr captured (the first
    MAX_OUTPUT bytes kept, the rest drained); (exit code, output), or (None, output) when it
    ran past ``timeout`` and its whole group was killed."""
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    except OSError as e:
        return 126, f"cannot run {argv[0]}: {e.strerror}".encode()
    assert proc.stdout is not None
    out = proc.stdout.fileno()
    os.set_blocking(out, False)
    pidfd = os.pidfd_open(proc.pid)
    buf = bytearray()
    timed_out = False
    try:
        watch = [out, pidfd]
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready = select.select(watch, [], [], left)[0]
            if out in ready:
                chunk = os.read(out, 65536)
                if not chunk:
                    watch.remove(out)
                elif len(buf) < MAX_OUTPUT:
                    buf += chunk[:MAX_OUTPUT - len(buf)]
            if pidfd in ready:
                try:  # what is already written, without waiting for lingering writers
                    while len(buf) < MAX_OUTPUT and (chunk := os.read(out, 65536)):
                        buf += chunk[:MAX_OUTPUT - len(buf)]
                except (BlockingIOError, ValueError):
                    pass
                break
        if timed_out:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        code = proc.wait()
        if not timed_out:
            try:  # anything the check left behind in its group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        os.close(pidfd)
        proc.stdout.close()
    _reap_orphans()
    if timed_out:
        return None, bytes(buf)
    return (code if code >= 0 else 128 - code), bytes(buf)


def _reap_orphans() -> None:
    """Zombies reparented to us (the health hook is a child subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def record_result(engine: Engine, cid: str, probe: Probe, result: CheckResult) -> str | None:
    """Apply one result to the record under the container's lock; the status afterwards, or
    None when the container is no longer running (the result is then dropped)."""
    with engine.locked(cid) as row:
        if row.status not in ("running", "paused"):
            return None
        health = dict(row.health or {})
        old = str(health.get("status") or "starting")
        streak = int(health.get("failing_streak") or 0)
        status = old
        if result.exit_code == 0:
            streak, status = 0, "healthy"
        elif not (old == "starting" and
                  result.start - row.started_at < probe.start_period_ns / 1e9):
            streak += 1
            if streak >= probe.retries:
                status = "unhealthy"
        log = [*list(health.get("log") or [])[-(MAX_LOG_ENTRIES - 1):], result.log_entry()]
        engine.db.update(cid, health={"status": status, "failing_streak": streak, "log": log})
        if status != old:
            engine.event(row, f"health_status: {status}")
    return status


def check_now(engine: Engine, ref: str) -> tuple[CheckResult, str]:
    """``healthcheck run``: one check now, recorded as the loop records it."""
    row = engine.get(ref)
    probe = effective_probe(row.options)
    if probe is None:
        raise ConflictError(f"container {row.name} has no defined healthcheck")
    if row.status != "running":
        raise ConflictError(f"container {row.name} is not running")
    result = run_probe(engine, row, probe)
    status = record_result(engine, row.id, probe, result)
    if status is None:
        raise ConflictError(f"container {row.name} is not running")
    return result, status


# ------------------------------------------------------------------------ the loop

def pidfile(engine: Engine, cid: str) -> str:
    return os.path.join(engine.layout.persist_dir(cid), PIDFILE)


def start_checker(engine: Engine, row: ContainerRow) -> int:
    """After a successful start: reset the status to ``starting`` and start the loop; its pid
    (0 when the container has no healthcheck). Never fails the start."""
    from isobox.engine.monitor import read_pid

    probe = effective_probe(row.options)
    if probe is None:
        return 0
    stop_checker(engine, row.id)
    health = dict(row.health or {})
    health.update(status="starting", failing_streak=0, log=list(health.get("log") or []))
    engine.db.update(row.id, health=health)
    row.health = health
    lay = engine.layout
    argv = ["/bin/sh", "-c", SPAWN, "isobox-health-spawn", "/bin/sh", "-c", LOOP, LOOP_NAME,
            _trim(probe.interval_ns / 1e9), sys.executable, "-I", "-m",
            "isobox.engine.health_hook", "--root", lay.root, "--run-dir", lay.run_dir, row.id]
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                              check=False, timeout=10)
        pid = int(proc.stdout.strip() or 0)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        # the container runs anyway; say why it has no checks (inspect's State.Error)
        engine.db.update(row.id, error=f"cannot start the health check loop: {e}")
        return 0
    path = pidfile(engine, row.id)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)
    return pid if read_pid(path) == pid else 0


def checker_pid(engine: Engine, cid: str) -> int:
    """The live loop's pid (it leads its own process group), or 0."""
    from isobox.engine.monitor import read_pid

    pid = read_pid(pidfile(engine, cid))
    if pid <= 0:
        return 0
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        return 0
    return pid if LOOP_NAME.encode() in cmdline and cid.encode() in cmdline else 0


def stop_checker(engine: Engine, cid: str) -> None:
    """Kill the loop's process group (the shell, its ``sleep`` and a running hook)."""
    pid = checker_pid(engine, cid)
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.unlink(pidfile(engine, cid))
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------ what ps shows

def health_state(row: ContainerRow) -> str:
    """``starting|healthy|unhealthy``, or ``none`` (no check has been set up): ps's filter."""
    status = str((row.health or {}).get("status") or "")
    if not status or effective_probe(row.options) is None:
        return "none"
    return status


def status_suffix(row: ContainerRow) -> str:
    """`` (healthy)``, `` (unhealthy)``, `` (health: starting)`` or "" (Docker's ps)."""
    state = health_state(row)
    if state == "none":
        return ""
    return " (health: starting)" if state == "starting" else f" ({state})"
