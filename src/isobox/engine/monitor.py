"""The per-container monitor: Debian's ``conmon``, as podman uses it.

Something has to outlive the CLI to hold the container's stdio, write its log, keep an attach
socket and record the exit code. A Python process per container costs about 3 MiB of PSS here
(measured: ``python3.11 -IS`` idle, 3.1 MiB), over the 2 MiB budget; conmon is a small C
program made for exactly this job (see docs/engine.md for the measurement).

conmon forks, runs ``<runtime> create`` for the bundle and reports the container's pid (or the
runtime's error) on a sync pipe, then stays behind as the container's parent. When the
container exits it writes ``<exit-dir>/<id>`` (the exit code) and runs the exit command, which
is the engine's exit handler (``python -m isobox.engine.exit_hook``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field

from isobox.engine.logrotate import PRELOAD_VAR, monitor_env
from isobox.errors import SystemSetupError

CONMON_CANDIDATES = ("/usr/bin/conmon", "/usr/libexec/podman/conmon", "/usr/local/bin/conmon")


def conmon_binary() -> str:
    found = shutil.which("conmon")
    if found:
        return found
    for path in CONMON_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise SystemSetupError("conmon is not installed (Debian package conmon): it is the "
                           "monitor that holds each container's stdio and exit code")


@dataclass
class MonitorRequest:
    """Everything conmon needs to start and watch one container."""

    cid: str
    name: str
    runtime: str                       # path of the OCI runtime binary
    runtime_args: list[str]            # global flags, e.g. ["--root", "/run/isobox/runtime"]
    bundle: str
    pidfile: str
    conmon_pidfile: str
    log_path: str
    exit_dir: str
    persist_dir: str
    exit_command: list[str]
    log_size_max: int = 0
    log_max_file: int = 1              # >1: keep that many generations (engine/logrotate.py)
    terminal: bool = False
    stdin: bool = False
    leave_stdin_open: bool = False     # a client's disconnect does not close the stdin
    env: dict[str, str] = field(default_factory=dict)


def monitor_argv(req: MonitorRequest) -> list[str]:
    argv = [conmon_binary(), "--api-version", "1", "-c", req.cid, "-u", req.cid,
            "-n", req.name, "-r", req.runtime, "-b", req.bundle, "-p", req.pidfile,
            "-l", f"k8s-file:{req.log_path}", "--exit-dir", req.exit_dir,
            "-0", req.persist_dir, "--conmon-pidfile", req.conmon_pidfile,
            "--full-attach", "--socket-dir-path", req.persist_dir, "--log-level", "error",
            "--no-sync-log"]
    for arg in req.runtime_args:
        argv += ["--runtime-arg", arg]
    if req.log_size_max > 0:
        argv += ["--log-size-max", str(req.log_size_max)]
    if req.terminal:
        argv.append("-t")
    if req.stdin:
        argv.append("-i")
        if req.leave_stdin_open:
            argv.append("--leave-stdin-open")
    if req.exit_command:
        argv += ["--exit-command", req.exit_command[0]]
        for arg in req.exit_command[1:]:
            argv += ["--exit-command-arg", arg]
    return argv


SPAWN_SCRIPT = (f'cd "$0" || exit 1; if [ -n "${PRELOAD_VAR}" ]; then '
                f'LD_PRELOAD="${PRELOAD_VAR}" exec "$@"; fi; exec "$@"')


def spawn_monitor(req: MonitorRequest) -> tuple[int, int]:
    """Start conmon, which creates the container; return (container pid, conmon pid).

    Raises SystemSetupError with the runtime's own message when ``create`` fails."""
    argv = monitor_argv(req)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "_OCI_SYNCPIPE": "3", **req.env,
           **monitor_env(req.log_path, req.log_size_max, req.log_max_file)}
    os.makedirs(req.persist_dir, mode=0o700, exist_ok=True)
    sync_r, sync_w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                   (os.POSIX_SPAWN_DUP2, devnull, 2), (os.POSIX_SPAWN_DUP2, sync_w, 3)]
        try:
            # conmon writes an "oom" file into its working directory (as well as into
            # the persist dir): start it in the persist dir, never in the caller's. The
            # log-rotation library is preloaded into conmon only, not into this shell.
            shell = ["/bin/sh", "-c", SPAWN_SCRIPT, req.persist_dir, *argv]
            first = os.posix_spawn(shell[0], shell, env, file_actions=actions, setsid=True)
        except OSError as e:
            raise SystemSetupError(f"cannot start {argv[0]}: {e.strerror}") from None
    finally:
        os.close(sync_w)
        os.close(devnull)
    try:
        data = b""
        while True:
            chunk = os.read(sync_r, 65536)
            if not chunk:
                break
            data += chunk
            if data.endswith(b"\n"):
                break
    finally:
        os.close(sync_r)
        os.waitpid(first, 0)  # conmon's first process exits once it has daemonised
    return _parse_sync(data, req), read_pid(req.conmon_pidfile)


def _parse_sync(data: bytes, req: MonitorRequest) -> int:
    try:
        msg = json.loads(data.decode().splitlines()[0])
        pid = int(msg["data"])
    except (ValueError, IndexError, KeyError, TypeError):
        raise SystemSetupError(f"the monitor gave no container pid for {req.cid} "
                               f"(got {data[:200]!r})") from None
    if pid < 0:
        message = str(msg.get("message", "")).strip()
        prefix = os.path.basename(req.runtime) + ": "
        for line in message.splitlines():
            if line.startswith(prefix + "error: "):  # our runtime: say it once, not twice
                message = line[len(prefix + "error: "):]
        raise SystemSetupError(f"{os.path.basename(req.runtime)} create failed: "
                               f"{message or 'no message'}")
    return pid


def read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


# The exit command. An attached CLI handles the exit itself (no interpreter start on the
# critical path of `run`): it writes its pid to the marker and deletes the marker when done.
# The shell waits while that CLI lives and the marker exists, and runs the Python exit hook
# only if the marker is still there (the CLI was killed first), or at once when no CLI is
# attached. A CLI whose start failed deletes the marker too: conmon then ends at once.
EXIT_SCRIPT = (
    'm=$1; shift; if [ -e "$m" ]; then p=$(cat "$m"); '
    'while [ -e "$m" ] && kill -0 "$p" 2>/dev/null; do sleep 0.05; done; '
    '[ -e "$m" ] || exit 0; fi; exec "$@"')


def exit_hook_command(root: str, run_dir: str, cid: str, marker: str) -> list[str]:
    """The command conmon runs when the container exits: the engine's exit handler."""
    return ["/bin/sh", "-c", EXIT_SCRIPT, "isobox-exit", marker, sys.executable, "-I", "-m",
            "isobox.engine.exit_hook", "--root", root, "--run-dir", run_dir, cid]
