"""``stop``, ``kill``, ``wait``, ``pause``/``unpause`` and ``restart``."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from isobox.engine.state import ContainerRow
from isobox.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

DEFAULT_STOP_TIMEOUT = 10


def signal_number(text: str | int, flag: str = "--signal") -> int:
    from isobox.engine.parse import parse_signal

    return text if isinstance(text, int) else parse_signal(str(text), flag)


def stop_signal(row: ContainerRow) -> int:
    opts = row.options
    name = str(opts.get("stop_signal") or
               (opts.get("image_config") or {}).get("StopSignal") or "SIGTERM")
    return signal_number(name, "--stop-signal")


def wait_exit(engine: Engine, row: ContainerRow, timeout: float | None) -> bool:
    """Wait until the container's process has ended and its monitor has recorded the exit
    (or the monitor is gone). True when it has, False on timeout (None: no timeout)."""
    from isobox.engine.exits import exit_recorded

    deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
    if row.pid > 0:
        try:
            pfd = os.pidfd_open(row.pid)
        except ProcessLookupError:
            pfd = -1
        if pfd >= 0:
            try:
                if not select.select([pfd], [], [], None if timeout is None
                                     else max(timeout, 0))[0]:
                    return False
            finally:
                os.close(pfd)
    delay = 0.002
    while not exit_recorded(engine, row):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def kill_locked(engine: Engine, row: ContainerRow, sig: int | str) -> None:
    """Signal the container; a paused one is then resumed (as Docker's killWithSignal), so
    the signal is acted on. SIGKILL thaws the cgroup itself: the resume may find nothing to
    resume, which is no error."""
    from isobox.errors import IsoboxError

    rt = engine.runtime(row)
    if engine.reload(row.id).status == "paused":
        rt.kill(row.id, sig, all_=True)
        try:
            rt.resume(row.id)
        except IsoboxError:
            pass
        engine.db.update(row.id, status="running")
        return
    rt.kill(row.id, sig, all_=sig in ("KILL", 9))


def stop_container(engine: Engine, ref: str, timeout: int | None = None,
                   signal: str = "") -> ContainerRow:
    from isobox.engine.exits import handle_exit

    row = engine.get(ref)
    with engine.locked(row.id) as row:
        if row.status == "restarting":
            engine.db.update(row.id, status="exited", manually_stopped=1)
            return engine.reload(row.id)
        if row.status not in ("running", "paused"):
            return row
        engine.db.update(row.id, manually_stopped=1)
        if timeout is None:
            timeout = row.options.get("stop_timeout")
        grace = DEFAULT_STOP_TIMEOUT if timeout is None else int(timeout)
        sig = signal_number(signal) if signal else stop_signal(row)
        if grace != 0:
            kill_locked(engine, row, sig)
    # The grace period is waited out unlocked: a `kill` meanwhile is not held up by it.
    # A negative timeout waits for as long as it takes, as Docker's.
    run = (row.pid, row.started_at)  # the run this stop is about
    if grace == 0 or not wait_exit(engine, row, grace if grace > 0 else None):
        try:
            with engine.locked(row.id) as now:
                # not a run started (or a container removed) while the lock was free
                if now.status in ("running", "paused") and (now.pid, now.started_at) == run:
                    kill_locked(engine, now, "KILL")
        except NotFoundError:
            return row
        wait_exit(engine, row, 30.0)
    handle_exit(engine, row.id, restart_allowed=False)
    engine.event(row, "stop")
    return engine.db.get(row.id) or row


def kill_container(engine: Engine, ref: str, signal: str = "KILL") -> ContainerRow:
    row = engine.get(ref)
    sig = signal_number(signal)
    with engine.locked(row.id) as row:
        if row.status not in ("running", "paused"):
            raise ConflictError(f"Cannot kill container: {row.name}: container "
                                f"{row.id[:12]} is not running")
        if sig in (9, 15, 2):
            engine.db.update(row.id, manually_stopped=1)
        kill_locked(engine, row, sig)
    engine.event(row, "kill", signal=str(sig))
    return row


def settle_exit(engine: Engine, cid: str, timeout: float = 10.0) -> None:
    """Wait (up to ``timeout``) for the process to end and record its exit now, without
    waiting for the monitor's exit hook (as ``run`` does attached): Docker's ``kill`` with
    SIGKILL returns once the container is down."""
    from isobox.engine.exits import handle_exit

    row = engine.get(cid)
    if row.status not in ("running", "paused"):
        return
    if wait_exit(engine, row, timeout):
        handle_exit(engine, row.id)


# The states that end a `wait` per condition (Docker's not-running, next-exit, removed).
_WAIT_DONE = {"not-running": ("exited", "created", "dead"), "next-exit": ("exited",),
              "removed": ()}


def wait_container(engine: Engine, ref: str, condition: str = "not-running",
                   poll: float = 0.05, cancelled: Callable[[], bool] | None = None) -> int:
    """Block until the container is not running (or removed); its exit code. ``cancelled``
    (checked about once a second) gives up early with WaitCancelled: the API's client left."""
    row = engine.get(ref)
    done = _WAIT_DONE[condition]
    while True:
        if row.status in done:
            return row.exit_code
        if cancelled is not None and cancelled():
            raise WaitCancelled(row.id)
        if row.status == "running":
            wait_exit(engine, row, 1.0)
        else:
            time.sleep(poll)
        try:
            row = engine.get(row.id)
        except NotFoundError:
            return last_exit_code(engine, row)


class WaitCancelled(Exception):
    """A wait given up because its caller no longer needs the answer."""


def last_exit_code(engine: Engine, row: ContainerRow) -> int:
    """The exit code of a container removed meanwhile (``--rm``): its last ``die`` event,
    since the record that held the code is gone."""
    code = row.exit_code
    for ev in engine.db.events_after(0, row.created):
        if ev.actor == row.id and ev.action == "die":
            try:
                code = int(ev.attributes.get("exitCode", code))
            except ValueError:
                pass
    return code


def pause_container(engine: Engine, ref: str) -> ContainerRow:
    row = engine.get(ref)
    with engine.locked(row.id) as row:
        if row.status == "paused":
            raise ConflictError(f"container {row.id[:12]} is already paused")
        if row.status != "running":
            raise ConflictError(f"container {row.id[:12]} is not running")
        engine.runtime(row).pause(row.id)
        engine.db.update(row.id, status="paused")
    engine.event(row, "pause")
    return row


def unpause_container(engine: Engine, ref: str) -> ContainerRow:
    row = engine.get(ref)
    with engine.locked(row.id) as row:
        if row.status != "paused":
            raise ConflictError(f"container {row.id[:12]} is not paused")
        engine.runtime(row).resume(row.id)
        engine.db.update(row.id, status="running")
    engine.event(row, "unpause")
    return row


def restart_container(engine: Engine, ref: str, timeout: int | None = None) -> None:
    from isobox.engine.start import start_container

    row = stop_container(engine, ref, timeout)
    start_container(engine, row.id)
    engine.event(row, "restart")
