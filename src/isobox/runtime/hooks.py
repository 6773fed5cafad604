"""OCI hooks: run each with the state JSON on stdin, its args, env and timeout."""

from __future__ import annotations

import os

from isobox import fastjson
from isobox.errors import IsoboxError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class HookError(IsoboxError):
    pass


def run_hook(hook: dict[str, Any], state: dict[str, Any], stage: str, index: int) -> None:
    import select

    path = hook["path"]
    args = hook.get("args") or [path]
    env = dict(e.split("=", 1) for e in hook.get("env", []) if "=" in e)
    timeout = hook.get("timeout")
    data = fastjson.dumps(state).encode()
    r, w = os.pipe()
    errr, errw = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.dup2(r, 0)
            os.dup2(errw, 2)
            os.execve(path, args, env)
        except OSError as e:
            os.write(2, f"exec {path}: {e.strerror}".encode())
        os._exit(127)
    os.close(r)
    os.close(errw)
    try:
        try:
            os.write(w, data)
        except BrokenPipeError:
            pass
        os.close(w)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            # startContainer hooks run under the container's seccomp filter, which may deny
            # pidfd_open (EPERM from profiles older than it, e.g. runtime-tools' default).
            pidfd = -1
        try:
            if pidfd < 0:
                _wait_without_pidfd(pid, timeout)
            else:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                if not poller.poll(None if timeout is None else timeout * 1000):
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    raise HookError(f"{stage} hook #{index} ({path}) timed out after {timeout}s")
        except TimeoutError:
            raise HookError(f"{stage} hook #{index} ({path}) timed out after {timeout}s") from None
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        err = os.read(errr, 4096).decode(errors="replace").strip()
    finally:
        os.close(errr)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        detail = f": {err}" if err else ""
        raise HookError(f"{stage} hook #{index} ({path}) failed with exit status {code}{detail}")


def _wait_without_pidfd(pid: int, timeout: float | None) -> None:
    """Until ``pid`` exits (left unreaped for the caller's waitpid); after ``timeout``
    seconds, kill and reap it and raise :class:`TimeoutError`."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise TimeoutError
        time.sleep(0.005)


def run_hooks(config: dict[str, Any], stage: str, state: dict[str, Any],
              warn: bool = False) -> None:
    """Run the hooks of ``stage`` in order. The first failure raises :class:`HookError`,
    unless ``warn`` (poststart, poststop): then each failure is logged as a warning and the
    remaining hooks still run, as the runtime-spec requires."""
    for i, hook in enumerate(config.get("hooks", {}).get(stage, [])):
        if not warn:
            run_hook(hook, state, stage, i)
            continue
        try:
            run_hook(hook, state, stage, i)
        except HookError as e:
            from isobox.runtime.log import LOG

            LOG.warning(str(e))


# -- startContainer: run by the init process after ``start`` released it -----------------
# ``start`` cannot see those hooks fail, so the init reports through a second fifo in the
# state directory (``START_FIFO``): ``start`` opens it for reading before it releases the
# init; the init opens it for writing (close-on-exec) once released, writes the error if a
# hook fails and exits, or execs the container process, which closes it (EOF: success).


def open_start_fifo(state_dir: str) -> int:
    """``start``'s end, or -1 when the container has no startContainer hooks."""
    from isobox.runtime.state import START_FIFO

    try:
        return os.open(os.path.join(state_dir, START_FIFO),
                       os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1


def wait_start_hooks(fd: int, pid: int) -> None:
    """Wait until the init process execs (EOF) or exits; raise the error it reported."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        msg = b""
        while True:
            events = dict(poller.poll())
            if fd in events:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                msg += chunk
                continue
            if pidfd in events:  # exited: read what it wrote, if anything
                try:
                    msg += os.read(fd, 4096)
                except BlockingIOError:
                    pass
                if not msg:
                    msg = b"startContainer hooks: the container's init process exited"
                break
    finally:
        os.close(fd)
        if pidfd >= 0:
            os.close(pidfd)
    if msg:
        raise HookError(msg.decode(errors="replace").strip())
