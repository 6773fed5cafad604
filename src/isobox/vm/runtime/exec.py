"""``exec``: a process in a running VM through its guest agent, attached to our stdio (the
engine's ``isobox exec`` runs us in the foreground) or detached."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from isobox.errors import ConfigError, ConflictError
from isobox.vm.runtime.control import connect, control_port
from isobox.vm.runtime.state import VMStore

# Signals the caller receives are forwarded to the process in the guest.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


def exec_process(flags: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """The OCI process to run: ``--process FILE`` or the command line's pieces."""
    if flags.get("process"):
        try:
            with open(flags["process"]) as f:
                process: dict[str, Any] = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError("--process", f"{flags['process']}: {e}") from None
    else:
        if not args:
            raise ConfigError("exec", "no command given")
        uid, _, gid = str(flags.get("user") or "0:0").partition(":")
        try:
            user = {"uid": int(uid), "gid": int(gid or 0)}
        except ValueError:
            raise ConfigError("--user", f"{flags.get('user')!r}: must be uid[:gid]") from None
        process = {"args": args, "env": list(flags.get("env") or []),
                   "cwd": flags.get("cwd") or "/", "user": user,
                   "terminal": bool(flags.get("tty"))}
    if not process.get("args"):
        raise ConfigError("process.args", "no command given")
    return process


def exec_command(store: VMStore, vid: str, flags: dict[str, Any], args: list[str]) -> int:
    from isobox.vm.agent_client import ExecError, pump_session

    st = store.load(vid)
    if st.status() != "running":
        raise ConflictError(f"cannot exec in a {st.status()} container")
    process = exec_process(flags, args)
    user = process.get("user") or {}
    terminal = bool(process.get("terminal"))
    rows, cols = _terminal_size() if terminal else (0, 0)
    detach = bool(flags.get("detach"))
    with control_port(st, first=1) as n:
        conn = connect(st, n, 10.0)
        try:
            try:
                session = conn.exec(
                    list(process["args"]), env=list(process.get("env") or []),
                    cwd=str(process.get("cwd") or "/"), uid=int(user.get("uid", 0)),
                    gid=int(user.get("gid", 0)),
                    additional_gids=[int(g) for g in user.get("additionalGids") or []],
                    terminal=terminal, rows=rows, cols=cols, stdin=not detach)
            except ExecError as e:
                os.write(2, f"{e}\n".encode())
                return e.exit_code
            if detach:
                return 0
            with _raw_terminal(terminal), _forward_signals(session):
                return pump_session(session, stdin_fd=_pollable_stdin(session))
        finally:
            conn.close()


def _pollable_stdin(session: Any) -> int | None:
    """fd 0 when it can be polled (pipe, socket, terminal); a regular file is sent whole
    first, /dev/null or a closed stdin means none."""
    import stat

    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0):
        return 0
    if stat.S_ISREG(mode):
        while chunk := os.read(0, 1 << 16):
            session.stdin_write(chunk)
    return None


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return 0, 0
    return size.lines, size.columns


class _raw_terminal:
    def __init__(self, terminal: bool) -> None:
        self.saved: list[Any] | None = None
        self.active = terminal and os.isatty(0)

    def __enter__(self) -> None:
        if self.active:
            import termios
            import tty

            self.saved = termios.tcgetattr(0)
            tty.setraw(0)

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)


class _forward_signals:
    """Our signals go to the guest process; SIGWINCH becomes a RESIZE."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        def forward(sig: int, _frame: object) -> None:
            self.session.signal(sig)

        def resize(_sig: int, _frame: object) -> None:
            rows, cols = _terminal_size()
            if rows:
                self.session.resize(rows, cols)

        for sig in FORWARDED:
            self.previous[sig] = signal.signal(sig, forward)
        self.previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
