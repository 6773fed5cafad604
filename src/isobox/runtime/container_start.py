"""``start``: release the init process blocked on ``exec.fifo``, then run poststart hooks."""

from __future__ import annotations

import os

from isobox.errors import ConflictError, SystemSetupError
from isobox.runtime.state import ContainerState, StateStore


def start(store: StateStore, cid: str) -> ContainerState:
    import select

    st = store.load(cid)
    status = st.status(check_frozen=False)
    if status == "stopped":
        raise ConflictError("cannot start a container that has stopped")
    if status != "created":
        raise ConflictError("cannot start an already running container")
    hooks = st.config.get("hooks", {})
    hook_fd = -1
    if hooks.get("startContainer"):
        from isobox.runtime.hooks import open_start_fifo

        hook_fd = open_start_fifo(st.dir)
    try:
        # Before the fifo: once released, the process may run, exit and be reaped at once.
        pidfd = os.pidfd_open(st.pid)
    except OSError:
        if hook_fd >= 0:
            os.close(hook_fd)
        raise ConflictError("cannot start a container that has stopped") from None
    try:
        fd = os.open(st.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(pidfd)
        if hook_fd >= 0:
            os.close(hook_fd)
        raise ConflictError("cannot start an already running container") from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        poller.register(pidfd, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if fd in events:
                data = os.read(fd, 16)
                if not data:
                    raise ConflictError("cannot start an already running container")
                break
            if pidfd in events:
                raise SystemSetupError("the container's init process exited before start")
    finally:
        os.close(fd)
        os.close(pidfd)
    try:
        os.unlink(st.fifo_path)
    except FileNotFoundError:
        pass
    if hook_fd >= 0:
        from isobox.runtime.hooks import wait_start_hooks

        wait_start_hooks(hook_fd, st.pid)  # raises if a startContainer hook failed
    if hooks.get("poststart"):
        from isobox.runtime.hooks import run_hooks

        run_hooks(st.config, "poststart", st.oci_state("running"), warn=True)
    return st
