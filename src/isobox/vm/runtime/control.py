"""``start``, ``kill``, ``delete``, ``state``, ``pause``/``resume`` of a micro-VM."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from isobox.errors import ConflictError, IsoboxError, SystemSetupError
from isobox.vm.runtime.state import CTL_PORTS, VMState, VMStore

TYPE_CHECKING = False  # not `typing` at run time: start-up cost (see fastjson)
if TYPE_CHECKING:
    from typing import Any

    from isobox.vm.agent_client import AgentConnection

BOOT_TIMEOUT_ENV = "ISOBOX_VM_BOOT_TIMEOUT"
DEFAULT_BOOT_TIMEOUT = 60.0
MAIN_SESSION = 0  # the agent's name for the workload started by `start`
PORT_WAIT = 30.0  # how long a client waits for a free control port


def boot_timeout() -> float:
    try:
        return float(os.environ.get(BOOT_TIMEOUT_ENV, "") or DEFAULT_BOOT_TIMEOUT)
    except ValueError:
        return DEFAULT_BOOT_TIMEOUT


@contextmanager
def control_port(st: VMState, *, control: bool, wait: float = PORT_WAIT) -> Iterator[int]:
    """A control port no other host process is using (QEMU serves one client per port).
    ctl0 is kept for the control verbs (start, kill, sync-files, powerdown), which take the
    others too when it is busy; exec and the engine's tools (cp, stats, top) use ctl1..3
    only, so they can never keep a ``kill`` out. All busy: retried for ``wait`` seconds,
    then ConflictError."""
    ports = range(CTL_PORTS) if control else range(1, CTL_PORTS)
    deadline = time.monotonic() + wait
    while True:
        for n in ports:
            fd = os.open(st.ctl_lock(n), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield n
            finally:
                os.close(fd)
            return
        if time.monotonic() >= deadline:
            raise ConflictError(f"all {len(ports)} control ports of VM {st.id} are busy "
                                f"(waited {wait:g}s)")
        time.sleep(0.05)


@contextmanager
def agent_session(st: VMState, *, control: bool, timeout: float,
                  wait: float = PORT_WAIT) -> Iterator[AgentConnection]:
    """A connection to the VM's guest agent on a free control port (see control_port),
    closed on exit; ``timeout`` bounds the connection and the agent's answers."""
    with control_port(st, control=control, wait=wait) as n:
        conn = connect(st, n, timeout)
        try:
            yield conn
        finally:
            conn.close()


def connect(st: VMState, n: int, timeout: float) -> AgentConnection:
    from isobox.vm.agent_client import AgentConnection

    try:
        from pathlib import Path

        return AgentConnection(Path(st.ctl_socket(n)), timeout=timeout, alive=st.alive)
    except IsoboxError as e:
        if not st.alive():
            raise SystemSetupError(f"the VM stopped: qemu: {log_tail(st.qemu_log)}; console: "
                                   f"{log_tail(st.console_log)}") from None
        raise SystemSetupError(f"the VM's guest agent did not answer: {e}; last console lines: "
                               f"{log_tail(st.console_log)}") from None


def log_tail(path: str, lines: int = 5) -> str:
    """The last lines of a log (QEMU's, the guest console) joined for an error message."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()[-4000:]
    except OSError:
        return "no log"
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:]) or "no output"


def start(store: VMStore, vid: str) -> None:
    import json

    st = store.load(vid)
    status = st.status()
    if status == "stopped":
        raise ConflictError(f"cannot start a VM that has stopped (qemu: {log_tail(st.qemu_log)};"
                            f" console: {log_tail(st.console_log)})")
    if status != "created":
        raise ConflictError(f"cannot start an already {status} container")
    if st.annotations.get("org.isobox.vm.loadvm") or st.annotations.get("org.isobox.vm.incoming"):
        resume_restored(st)  # the workload runs already in the memory QEMU started from
        return
    with open(os.path.join(st.bundle, "config.json")) as f:
        config = json.load(f)
    from isobox.vm.agent_protocol import ExecSpec

    process = config["process"]
    mounts = list(config.get("mounts") or [])
    user = process.get("user") or {}
    size = process.get("consoleSize") or {}
    with agent_session(st, control=True, timeout=boot_timeout()) as conn:
        conn.exec_spec(ExecSpec(
            args=list(process["args"]), env=list(process.get("env") or []),
            cwd=str(process.get("cwd") or "/"), uid=int(user.get("uid", 0)),
            gid=int(user.get("gid", 0)),
            additional_gids=[int(g) for g in user.get("additionalGids") or []],
            terminal=bool(process.get("terminal")), rows=int(size.get("height", 0)),
            cols=int(size.get("width", 0)), main=True, stdin=_stdin_open(),
            net=st.net or None, files=etc_files(mounts), mounts=share_mounts(config)))
    st.started = True
    st.save()


def resume_restored(st: VMState) -> None:
    """A VM started with ``-loadvm`` or ``-incoming``: no main EXEC (its workload is in the
    restored memory); only the guest NIC and /etc files are brought up to date (they may
    have changed)."""
    if st.annotations.get("org.isobox.vm.incoming"):
        run_when_migrated(st)
    with agent_session(st, control=True, timeout=boot_timeout()) as conn:
        conn.exec([], net=st.net or None,
                  files=etc_files(process_mounts(st.bundle))).wait(10.0)
    st.started = True
    st.save()


def process_mounts(bundle: str) -> list[dict[str, Any]]:
    import json

    with open(os.path.join(bundle, "config.json")) as f:
        return list(json.load(f).get("mounts") or [])


def etc_files(mounts: list[dict[str, Any]]) -> dict[str, str]:
    """The engine's /etc/hosts, resolv.conf and hostname (bind mounts for a container):
    their content goes to the guest, which writes them into its root before the workload."""
    from isobox.vm.runtime.machine import ETC_FILES

    files: dict[str, str] = {}
    for m in mounts:
        dest = m.get("destination")
        if dest in ETC_FILES and m.get("source"):
            try:
                with open(m["source"]) as f:
                    files[dest] = f.read(65536)
            except OSError:
                continue
    return files


def share_mounts(config: dict[str, Any]) -> list[str]:
    """The agent's view of the 9p shares machine.py gave QEMU: tag, target, ro|rw, ..."""
    from isobox.vm.runtime.machine import shares

    out: list[str] = []
    for sh in shares(config):
        out += [sh.tag, sh.target, "ro" if sh.readonly else "rw"]
    return out


def sync_files(store: VMStore, vid: str) -> None:
    """The engine rewrote /etc/hosts (a peer joined or left): give the guest the new copy."""
    st = store.load(vid)
    if st.status() != "running":
        return
    files = etc_files(process_mounts(st.bundle))
    if not files:
        return
    with agent_session(st, control=True, timeout=10.0) as conn:
        conn.exec([], files=files).wait(10.0)


def _stdin_open() -> bool:
    """conmon gives the runtime /dev/null as stdin unless the container has ``-i``."""
    import stat

    try:
        s = os.fstat(0)
    except OSError:
        return False
    return not (stat.S_ISCHR(s.st_mode) and os.major(s.st_rdev) == 1 and os.minor(s.st_rdev) == 3)


def kill(store: VMStore, vid: str, sig: int) -> None:
    st = store.load(vid)
    if not st.alive():
        raise ConflictError("container not running")
    if sig == signal.SIGKILL or not st.started:
        os.kill(st.pid, signal.SIGKILL)
        return
    if st.annotations.get("org.isobox.vm.system") == "true":
        powerdown(st, sig)
        return
    with agent_session(st, control=True, timeout=5.0) as conn:
        conn.signal(MAIN_SESSION, sig)


def delete(store: VMStore, vid: str, force: bool) -> None:
    st = store.load(vid)
    if st.alive():
        if not force and st.status() != "created":
            raise ConflictError(f"cannot delete container {vid} that is not stopped: "
                                f"{st.status()}")
        os.kill(st.pid, signal.SIGKILL)
        _wait_gone(st, 5.0)
    if st.cgroup:
        from isobox.cgroups.manager import CgroupManager

        try:
            CgroupManager.from_state(st.cgroup).destroy()
        except IsoboxError:
            pass
    import shutil  # not images.store's remove_tree: importing the image store costs ~45 ms

    shutil.rmtree(st.dir, ignore_errors=True)


def _wait_gone(st: VMState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while st.alive() and time.monotonic() < deadline:
        time.sleep(0.01)


def state(store: VMStore, vid: str) -> dict[str, Any]:
    st = store.load(vid)
    status = st.status()
    return {"ociVersion": "1.2.0", "id": vid, "status": status,
            "pid": st.pid if status != "stopped" else 0, "bundle": st.bundle,
            "created": st.created, "annotations": st.annotations}


def pause(store: VMStore, vid: str, resume: bool) -> None:
    st = store.load(vid)
    if not st.alive():
        raise ConflictError("container not running")
    qmp_command(st.qmp_socket, "cont" if resume else "stop")
    st.paused = not resume
    st.save()


def powerdown(st: VMState, sig: int) -> None:
    """A system VM's stop: the signal goes to the guest's init through the agent (SIGTERM
    becomes systemd's poweroff request, SIGRTMIN+4), and QEMU presses the ACPI power button
    (``system_powerdown``) for guests whose agent is gone; the engine kills after its timeout."""
    try:
        with agent_session(st, control=True, timeout=5.0) as conn:
            conn.signal(MAIN_SESSION, sig)
    except IsoboxError:
        pass
    if sig in (signal.SIGTERM, signal.SIGPWR):
        qmp_command(st.qmp_socket, "system_powerdown")


def run_when_migrated(st: VMState, timeout: float = 600.0) -> None:
    """Wait for QEMU to load the state file (``-incoming``), then run the vCPUs: a state is
    saved paused (vm save stops the VM first), and QEMU keeps the saved run state, so a
    restored VM always runs (also one that was paused when saved)."""
    try:
        _load_and_run(st, time.monotonic() + timeout, timeout)
    except IsoboxError as e:
        if not st.alive():  # QEMU refused the stream: its own words are in its log
            raise SystemSetupError(f"QEMU could not load the saved state: "
                                   f"{log_tail(st.qemu_log)}") from None
        raise SystemSetupError(f"loading the saved state failed: {e}") from None


def _load_and_run(st: VMState, deadline: float, timeout: float) -> None:
    from pathlib import Path

    from isobox.vm.qmp import QMPClient

    with QMPClient(Path(st.qmp_socket), timeout=30.0) as qmp:
        while True:
            status = qmp.execute("query-migrate").get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or not st.alive():
                raise SystemSetupError(f"QEMU could not load the saved state: "
                                       f"{log_tail(st.qemu_log)}")
            if time.monotonic() > deadline:
                raise SystemSetupError(f"loading the saved state took more than {timeout:.0f} s")
            time.sleep(0.02)
        qmp.execute("cont")


def qmp_command(path: str, command: str, timeout: float = 5.0) -> None:
    from pathlib import Path

    from isobox.vm.qmp import QMPClient

    with QMPClient(Path(path), timeout=timeout) as qmp:
        qmp.execute(command)
