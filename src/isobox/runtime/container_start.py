"""``start``: release the init process blocked on ``exec.fifo``, then run poststart hooks."""

from __future__ import annotations

import posix  # not os: see isobox.runtime.state

from isobox.errors import ConflictError, SystemSetupError
from isobox.runtime.state import ContainerState, StateStore


def start(store: StateStore, cid: str, timeout: float | None = None) -> ContainerState:
    """Release the created container's process. ``timeout`` (seconds): give up if its init
    has not taken the release by then (the CLI waits for as long as it takes, as runc)."""
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
        pidfd = posix.pidfd_open(st.pid)
    except OSError:
        if hook_fd >= 0:
            posix.close(hook_fd)
        raise ConflictError("cannot start a container that has stopped") from None
    try:
        fd = posix.open(st.fifo_path, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except FileNotFoundError:
        posix.close(pidfd)
        if hook_fd >= 0:
            posix.close(hook_fd)
        raise ConflictError("cannot start an already running container") from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        poller.register(pidfd, select.POLLIN)
        deadline = None if timeout is None else _now() + timeout
        while True:
            wait = None if deadline is None else max(0, int((deadline - _now()) * 1000))
            events = dict(poller.poll(wait))
            if not events and deadline is not None and _now() >= deadline:
                raise SystemSetupError(f"the container's init did not take the start in "
                                       f"{timeout:g} s")
            if fd in events:
                data = posix.read(fd, 16)
                if not data:
                    raise ConflictError("cannot start an already running container")
                break
            if pidfd in events:
                raise SystemSetupError("the container's init process exited before start")
    finally:
        posix.close(fd)
        posix.close(pidfd)
    try:
        posix.unlink(st.fifo_path)
    except FileNotFoundError:
        pass
    if hook_fd >= 0:
        from isobox.runtime.hooks import wait_start_hooks

        wait_start_hooks(hook_fd, st.pid)  # raises if a startContainer hook failed
    if hooks.get("poststart"):
        from isobox.runtime.hooks import run_hooks

        run_hooks(st.config, "poststart", st.oci_state("running"), warn=True)
    return st


def _now() -> float:
    import time

    return time.monotonic()
