"""`isobox exec -it` on a real terminal: the process gets a pty of its own with the caller's
window size, later resizes reach it, input is typed through, and the exit code comes back —
for a container (runtime's console socket) and for a micro-VM (the guest agent's pty)."""

from __future__ import annotations

import time

import pytest
from engine_helpers import Isobox
from pty_session import PtySession

from harness import RUN_PREFIX

pytestmark = pytest.mark.engine

ISOLATIONS = [pytest.param("container", id="container"),
              pytest.param("vm", id="vm", marks=[pytest.mark.vm, pytest.mark.slow])]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_exec_it_terminal_size_resize_input_and_exit_code(isobox: Isobox,
                                                          isolation: str) -> None:
    name = f"{RUN_PREFIX}tty{isolation}"
    isobox("run", "-d", "--name", name, "--isolation", isolation, "--network", "none",
           "busybox", "sleep", "600", timeout=120)
    try:
        term = PtySession([isobox.binary(), "exec", "-it", name, "sh"], isobox.env,
                          rows=27, cols=91)
        try:
            assert term.expect(b"# ", 60), term.out
            term.send(b"tty; stty size\r")
            assert term.expect(b"27 91", 30), term.out[-300:]
            term.set_size(40, 120)
            deadline = time.monotonic() + 30
            while not term.expect(b"40 120", 2) and time.monotonic() < deadline:
                term.send(b"stty size\r")
            assert b"40 120" in term.out, term.out[-300:]
            term.send(b"read x; echo got-$x; exit 6\r")
            term.send(b"typed\r")
            assert term.wait(60) == 6
        finally:
            term.close()
        assert b"/dev/pts/" in term.out and b"got-typed" in term.out
        # without -i: output only, and the exit code
        term = PtySession([isobox.binary(), "exec", "-t", name, "sh", "-c",
                           "stty size; exit 2"], isobox.env, rows=11, cols=33)
        try:
            assert term.wait(60) == 2
        finally:
            term.close()
        assert b"11 33" in term.out
    finally:
        isobox("rm", "-f", name, check=False)
