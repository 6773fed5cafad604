"""Waiting for a container process in the foreground, forwarding the caller's signals."""

from __future__ import annotations

import os

FORWARDED = (1, 2, 3, 10, 12, 15, 28)  # HUP INT QUIT USR1 USR2 TERM WINCH


def wait_forwarding_signals(pid: int) -> int:
    """Wait for ``pid`` (our child, or reparented to us as subreaper); its exit code,
    ``128 + signal`` when it was killed, as a shell reports it."""
    import signal

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except OSError:
            pass

    for s in FORWARDED:
        signal.signal(s, forward)
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if wpid == pid:
            break
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
