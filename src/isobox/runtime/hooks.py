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
        pidfd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(None if timeout is None else timeout * 1000):
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise HookError(f"{stage} hook #{index} ({path}) timed out after {timeout}s")
        finally:
            os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        err = os.read(errr, 4096).decode(errors="replace").strip()
    finally:
        os.close(errr)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        detail = f": {err}" if err else ""
        raise HookError(f"{stage} hook #{index} ({path}) failed with exit status {code}{detail}")


def run_hooks(config: dict[str, Any], stage: str, state: dict[str, Any]) -> None:
    for i, hook in enumerate(config.get("hooks", {}).get(stage, [])):
        run_hook(hook, state, stage, i)
