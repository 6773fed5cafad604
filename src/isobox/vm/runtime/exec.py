"""``exec``: a process in a running VM through its guest agent, attached to our stdio (the
engine's ``isobox exec`` runs us in the foreground) or detached."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isobox.errors import ConfigError, ConflictError
from isobox.vm.runtime.control import agent_session
from isobox.vm.runtime.state import VMStore

if TYPE_CHECKING:
    from isobox.vm.agent_client import ExecSession

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
    detach = bool(flags.get("detach"))
    if terminal and not detach and flags.get("console-socket"):
        use_console_socket(str(flags["console-socket"]))
    rows, cols = _terminal_size() if terminal else (0, 0)
    from isobox.vm.agent_protocol import ExecSpec

    spec = ExecSpec(
        list(process["args"]), env=list(process.get("env") or []),
        cwd=str(process.get("cwd") or "/"), uid=int(user.get("uid", 0)),
        gid=int(user.get("gid", 0)),
        additional_gids=[int(g) for g in user.get("additionalGids") or []],
        terminal=terminal, rows=rows, cols=cols, stdin=not detach,
        user=str(user.get("username") or ""))  # a name the guest resolves itself
    with agent_session(st, control=False, timeout=10.0) as conn:
        if spec.user and (conn.version or 0) < 2:  # an older agent would ignore it: root
            raise ConflictError(f"the VM's guest agent is older than -u NAME (protocol "
                                f"{conn.version}); restart the VM to get the current agent, "
                                "or give a numeric uid:gid")
        try:
            session = conn.exec_spec(spec)
        except ExecError as e:
            os.write(2, f"{e}\n".encode())
            return e.exit_code
        if detach:
            return 0
        # a console socket's pty gets its size from the caller only after we sent it: the
        # size now (maybe set before our SIGWINCH handler) goes to the guest at once
        resize_now = terminal and bool(flags.get("console-socket"))
        with _raw_terminal(terminal), SignalRelay(session, resize_now) as relay:
            return pump_session(session, stdin_fd=0, extra=relay.extra)


def use_console_socket(path: str) -> None:
    """runc's protocol: a new pty whose master goes to ``path``; its other end becomes our
    stdio and controlling terminal, so the caller's resizes of the master reach us as SIGWINCH
    (relayed to the guest as RESIZE)."""
    import fcntl
    import socket
    import termios

    from isobox.errors import SystemSetupError

    master, slave = os.openpty()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            socket.send_fds(sock, [os.ttyname(slave).encode()], [master])
        except OSError as e:
            raise SystemSetupError(f"cannot send the terminal to {path}: "
                                   f"{e.strerror or e}") from None
        finally:
            sock.close()
        try:
            os.setsid()
        except OSError:
            pass  # already a session leader
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
    finally:
        os.close(master)
        os.close(slave)


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


class SignalRelay:
    """Our signals go to the guest process, SIGWINCH becomes a RESIZE. The handlers only
    record the signal (and Python's wakeup fd wakes pump_session's loop): the frames are
    sent from the loop, through ``extra``. A handler writing to the connection itself could
    run between a ``send`` and the removal of what it sent, sending those bytes twice."""

    def __init__(self, session: ExecSession, resize_now: bool = False) -> None:
        self.session = session
        self.pending: list[int] = [signal.SIGWINCH] if resize_now else []
        self.previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup = -1

    def __enter__(self) -> SignalRelay:
        self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._old_wakeup = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
            for sig in (*FORWARDED, signal.SIGWINCH):
                self.previous[sig] = signal.signal(sig, self.record)
            if self.pending:
                os.write(self._pipe[1], b"\0")
        except BaseException:
            self.__exit__()
            raise
        return self

    def record(self, sig: int, _frame: object) -> None:
        self.pending.append(sig)

    @property
    def extra(self) -> dict[int, Callable[[], None]]:
        """For pump_session: the wakeup fd and what to do when it is readable."""
        assert self._pipe is not None
        return {self._pipe[0]: self.deliver}

    def deliver(self) -> None:
        """Send the recorded signals (from the loop, never from a handler)."""
        assert self._pipe is not None
        try:
            while os.read(self._pipe[0], 512):
                pass
        except BlockingIOError:
            pass
        while self.pending:
            sig = self.pending.pop(0)
            if sig == signal.SIGWINCH:
                rows, cols = _terminal_size()
                if rows:
                    self.session.resize(rows, cols)
            else:
                self.session.signal(sig)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
