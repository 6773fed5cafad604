"""Signals the CLI receives while a child runs in the foreground go to that child (Docker's
``--sig-proxy``): ``isobox exec`` killed with SIGTERM ends the exec'd process, not just the
CLI (the runtime's ``exec`` forwards them on into the container or the guest)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from typing import Any

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


def wait_forwarding(proc: subprocess.Popen[Any]) -> int:
    """Wait for ``proc`` relaying FORWARDED signals to it; its return code."""
    def forward(sig: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
