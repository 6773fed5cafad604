"""``run`` in the foreground with ``process.terminal`` and no ``--console-socket``: the runtime
makes the console itself and copies between it and its own terminal, as runc does."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time

from harness import Bundle, Runtime, unique_id


def _read_until(fd: int, needle: bytes, timeout: float = 10) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return out


def test_run_foreground_terminal(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["terminal"] = True
    bundle.set_args("sh")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 91, 0, 0))
    proc = subprocess.Popen([*runtime.cmd, "--root", runtime.root, "run", "--bundle",
                             bundle.path, unique_id()], stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        _read_until(master, b"# ")
        os.write(master, b"tty; stty size; echo $((6*7))\n")
        out = _read_until(master, b"42")
        assert b"/dev/pts/0" in out and b"33 91" in out and b"42" in out, out
        os.write(master, b"exit 4\n")
        assert proc.wait(timeout=10) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_detached_terminal_needs_console_socket(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["terminal"] = True
    bundle.set_args("sh")
    res = runtime("run", "-d", "--bundle", bundle.path, unique_id(), check=False)
    assert res.code == 1 and "--console-socket" in res.err
    assert runtime.ids() == []
