"""What happens when a container's process ends: record the exit, release the network and the
root filesystem, then remove the container (``--rm``) or restart it (``--restart``).

Whoever notices first does it, under the container's lock: the monitor's exit hook, an
attached CLI, or any command that finds a record saying "running" whose monitor is gone
(a killed monitor, or a reboot that cleared the run directory). Doing it twice is harmless.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from isobox.engine.engine import ACTIVE
from isobox.engine.state import ContainerRow
from isobox.errors import IsoboxError, NotFoundError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.runtime_client import RuntimeClient

# Docker's restart back-off: 100 ms doubling to 1 min, reset after 10 s of running.
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0
EXIT_AFTER_REBOOT = 255


def monitor_alive(engine: Engine, row: ContainerRow) -> bool:
    if row.epoch != engine.layout.epoch():
        return False
    if row.monitor_pid <= 0:
        return False
    try:
        with open(f"/proc/{row.monitor_pid}/cmdline", "rb") as f:
            return row.id.encode() in f.read()
    except OSError:
        return False


def end_monitor(engine: Engine, row: ContainerRow) -> None:
    """SIGKILL the container's monitor (or the exit command it became), if it is ours."""
    if row.monitor_pid != os.getpid() and monitor_alive(engine, row):
        try:
            os.kill(row.monitor_pid, 9)
        except ProcessLookupError:
            pass


def exit_recorded(engine: Engine, row: ContainerRow) -> bool:
    """The process has ended: its exit file exists, or no monitor is left to write one.
    (conmon becomes its exit command once the file is written, so "monitor alive" alone
    does not mean "container running".)"""
    return os.path.exists(engine.layout.exit_file(row.id)) or not monitor_alive(engine, row)


def exit_status(engine: Engine, row: ContainerRow) -> tuple[int, bool] | None:
    """(exit code, OOM-killed) from the monitor's files, or None when not written yet."""
    try:
        with open(engine.layout.exit_file(row.id)) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    try:
        code = int(text)
    except ValueError:
        code = EXIT_AFTER_REBOOT
    oom = os.path.exists(os.path.join(engine.layout.persist_dir(row.id), "oom"))
    if row.options.get("isolation") == "vm":
        # conmon saw QEMU end; the workload's own code is what the guest agent reported
        from isobox.vm.runtime.state import guest_exit_code

        guest = guest_exit_code(os.path.join(engine.layout.vm_runtime_root, row.id))
        if guest is not None:
            code = guest
    return code, oom


def reconcile_row(engine: Engine, row: ContainerRow) -> ContainerRow:
    """Bring a record that says running/paused/restarting in line with reality."""
    if row.status == "restarting":
        return row  # an exit hook is waiting out the back-off
    if not exit_recorded(engine, row):
        return row
    if monitor_alive(engine, row):
        # the exit file is written and conmon has become the exit hook, which records the
        # exit and applies the restart policy: a reader recording first would lose the restart
        return row
    # The monitor is gone without a word. Killed in this boot (an OOM kill, a stray `kill`):
    # nobody holds the container's stdio or will record its end, so the end is recorded now
    # (teardown kills what still runs) and its restart policy applies, as to any other death.
    # After a reboot, the restarts are `system boot`'s: a reader only records.
    handle_exit(engine, row.id, restart_allowed=row.epoch == engine.layout.epoch())
    return engine.db.get(row.id) or row


def handle_exit(engine: Engine, cid: str, *, restart_allowed: bool = True,
                in_background: bool = False) -> ContainerRow | None:
    """Process the end of ``cid``'s process. Returns the record afterwards (None if removed).

    When a restart is due and ``in_background`` is false, a detached exit hook is started to
    wait out the back-off, so an attached CLI returns at once."""
    try:
        with engine.locked(cid) as row:
            if row.status not in ("running", "paused"):
                return row
            if not exit_recorded(engine, row):
                return row
            status = exit_status(engine, row)
            code, oom = status if status else (EXIT_AFTER_REBOOT, False)
            teardown(engine, row, exited=True)
            finished = time.time()
            engine.db.update(cid, status="exited", exit_code=code, oom_killed=int(oom),
                             finished_at=finished, pid=0, monitor_pid=0, network={})
            row = engine.reload(cid)
            if oom:
                engine.event(row, "oom")
            engine.event(row, "die", exitCode=str(code))
            if row.options.get("auto_remove"):
                from isobox.engine.remove import remove_locked

                remove_locked(engine, row, volumes=True)
                return None
            delay = restart_delay(row, code, finished) if restart_allowed else None
            if delay is None:
                return row
            engine.db.update(cid, status="restarting")
    except NotFoundError:
        return None
    if not in_background:
        spawn_restarter(engine, cid)
        return engine.db.get(cid)
    time.sleep(delay)
    return restart_now(engine, cid)


def restart_delay(row: ContainerRow, code: int, finished: float) -> float | None:
    """Seconds to wait before restarting per the policy, or None for no restart."""
    policy = row.options.get("restart") or {}
    name = str(policy.get("name") or "no")
    if name == "no" or row.manually_stopped:
        return None
    if name == "on-failure":
        if code == 0:
            return None
        limit = int(policy.get("maximum_retry_count") or 0)
        if limit and row.restart_count >= limit:
            return None
    ran = finished - row.started_at if row.started_at else 0.0
    if ran >= BACKOFF_RESET_AFTER:
        return BACKOFF_START
    return float(min(BACKOFF_MAX, BACKOFF_START * 2.0 ** row.restart_count))


def restart_now(engine: Engine, cid: str) -> ContainerRow | None:
    from isobox.engine.start import start_locked

    try:
        with engine.locked(cid) as row:
            if row.status != "restarting":  # stopped or removed meanwhile
                return row
            engine.db.update(cid, restart_count=row.restart_count + 1)
            row = engine.reload(cid)
            try:
                start_locked(engine, row)
            except IsoboxError as e:
                engine.db.update(cid, status="exited", error=str(e))
            return engine.db.get(cid)
    except NotFoundError:
        return None


def spawn_restarter(engine: Engine, cid: str) -> None:
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-I", "-m", "isobox.engine.exit_hook", "--root",
                      engine.layout.root, "--run-dir", engine.layout.run_dir, "--restart", cid],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def runtime_if_any(engine: Engine, row: ContainerRow, *,
                   exited: bool = False) -> RuntimeClient | None:
    """The container's runtime; None when its binary is gone (a ``--runtime`` path deleted
    since, say) and nothing of the container can still run: its exit is recorded
    (``exited``), or the record says nothing runs and the runtime holds no state of it. The
    rest of what the container holds is still ours to release. Otherwise the missing binary
    is an error (not a NotFoundError: the container is there)."""
    try:
        return engine.runtime(row)
    except NotFoundError as e:
        if not exited and (row.status in ACTIVE or os.path.lexists(
                os.path.join(engine.runtime_state_root(row), row.id))):
            raise SystemSetupError(str(e)) from None
        return None


def release_all(engine: Engine, row: ContainerRow) -> None:
    """Everything a container may hold, whatever its record says: used by ``rm`` so the
    debris of a CLI killed between "monitor started" and "record says running" goes too."""
    from isobox.engine.monitor import read_pid

    rt = runtime_if_any(engine, row)
    if rt is not None and os.path.isdir(os.path.join(rt.state_root, row.id)):
        rt.kill(row.id, "KILL", all_=True)
    pid = row.monitor_pid or read_pid(engine.layout.conmon_pidfile(row.id))
    if pid > 0:
        end_monitor(engine, replace(row, monitor_pid=pid, epoch=engine.layout.epoch()))
    network = dict(row.network or {})
    if not network.get("mode") and os.path.lexists(engine.layout.netns_path(row.id)):
        from isobox.engine.networking import endpoint_configs

        mode = str(row.options.get("network") or "bridge")
        network = {"mode": mode, "endpoints": {n: {} for n in endpoint_configs(row.options)}}
    teardown(engine, replace(row, network=network))


def teardown(engine: Engine, row: ContainerRow, *, exited: bool = False) -> None:
    """Release what a running container holds: runtime state, network, root mount.
    ``exited``: its exit is recorded (see :func:`runtime_if_any`)."""
    if row.healthcheck_configured:
        from isobox.engine.health import stop_checker  # health checks: end the loop

        stop_checker(engine, row.id)
    runtime = runtime_if_any(engine, row, exited=exited)
    if runtime is not None:
        runtime.delete(row.id, force=True)
    else:  # what `delete` would have removed of a process that is gone: its state directory
        from isobox.images.store import remove_tree

        remove_tree(os.path.join(engine.runtime_state_root(row), row.id))
    remove_cgroups(engine.layout.cgroup_parent, row.id)
    if runtime is None:  # and the parent the runtime made, as its delete does once it is empty
        _rmdir_in_every_hierarchy(engine.layout.cgroup_parent.strip("/"))
    teardown_network(engine, row.id, row.network or {})
    try:
        engine.snapshots.unmount(engine.snapshots.get(row.id))
    except (NotFoundError, OSError):
        pass


def remove_cgroups(parent: str, cid: str) -> None:
    """The container's cgroups, when the runtime could not remove them (its state was lost
    with a cleared /run); a cgroup that still holds processes stays."""
    _rmdir_in_every_hierarchy(f"{parent.strip('/')}/{cid}")


def _rmdir_in_every_hierarchy(rel: str) -> None:
    base = "/sys/fs/cgroup"
    try:
        hierarchies = os.listdir(base)
    except OSError:
        return
    for h in hierarchies:
        path = os.path.join(base, h, rel)
        if os.path.isdir(path) and not os.path.islink(os.path.join(base, h)):
            try:
                os.rmdir(path)
            except OSError:
                pass


def teardown_network(engine: Engine, cid: str, network: dict[str, Any]) -> None:
    mode = network.get("mode")
    if not mode or mode in ("host", "none"):
        return
    nm = engine.networks
    try:
        peers = nm.peers(cid)
    except (IsoboxError, OSError):
        peers = set()
    try:
        nm.unpublish(cid)
    except (IsoboxError, OSError):
        pass
    for name in (network.get("endpoints") or {mode: {}}):
        try:
            nm.disconnect(name, cid, engine.layout.netns_path(cid), keep_link=True)
        except (IsoboxError, OSError):
            pass
    from isobox.network.netns import delete_netns

    delete_netns(engine.layout.netns_path(cid))
    if peers:
        from isobox.engine.start import refresh_hosts

        for peer in peers:
            refresh_hosts(engine, peer)
