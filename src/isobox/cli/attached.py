"""Foreground containers: ``run`` without ``-d`` and ``start -a``.

The CLI connects to the monitor's attach socket before the process starts, copies the
streams, forwards signals (``--sig-proxy``) and the terminal size, then handles the exit
itself (exit code, ``--rm``) so the answer does not wait for the monitor's exit hook."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING

import click

from isobox.engine.console import raw_terminal
from isobox.errors import IsoboxError

if TYPE_CHECKING:
    from isobox.engine.attach import AttachSession
    from isobox.engine.engine import Engine
    from isobox.engine.options import CreateOptions

EXIT_ENGINE_ERROR = 125


def _forward_signals(engine: Engine, cid: str) -> None:
    from isobox.engine.stop import kill_container

    def forward(signum: int, _frame: object) -> None:
        try:
            kill_container(engine, cid, str(signum))
        except IsoboxError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)


def _follow_window(session: AttachSession) -> None:
    def resize(_signum: int = 0, _frame: object = None) -> None:
        try:
            size = os.get_terminal_size(1)
        except OSError:
            return
        session.resize(size.lines, size.columns)

    resize()
    signal.signal(signal.SIGWINCH, resize)


def attach_and_wait(engine: Engine, cid: str, session: AttachSession, *, tty: bool,
                    stdin: bool, sig_proxy: bool, owns_marker: bool = True) -> int:
    """Pump the streams until the process ends, then handle its exit. ``owns_marker``: this
    CLI started the container and wrote the "attached" marker (not so for `attach`)."""
    from isobox.engine.exits import exit_status, handle_exit
    from isobox.engine.stop import wait_exit

    marker = os.path.join(engine.layout.persist_dir(cid), "attached")
    row = engine.reload(cid)
    try:
        if sig_proxy and not tty:
            _forward_signals(engine, cid)
        if tty:
            _follow_window(session)
        sys.stdout.flush()
        with raw_terminal(tty and stdin):
            session.pump(0 if stdin else None, 1, 2)
        session.close()
        wait_exit(engine, row, 30.0)
        status = exit_status(engine, row)
        handle_exit(engine, cid)
    finally:
        if owns_marker:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)
    if status is None:
        after = engine.db.get(cid)
        return after.exit_code if after else EXIT_ENGINE_ERROR
    return status[0]


def run_attached(engine: Engine, cid: str, opts: CreateOptions, *, sig_proxy: bool) -> int:
    from isobox.cli.container_cmds import RunError, _discard_failed
    from isobox.engine.start import start_container

    try:
        session = start_container(engine, cid, attach=True, attached_pid=os.getpid())
    except IsoboxError as e:
        _discard_failed(engine, cid, opts)
        raise RunError.of_start(str(e)) from None
    assert session is not None
    return attach_and_wait(engine, cid, session, tty=opts.tty, stdin=opts.open_stdin,
                           sig_proxy=sig_proxy)


def start_attached(engine: Engine, ref: str, interactive: bool) -> int:
    from isobox.engine.start import start_container

    row = engine.get(ref)
    session = start_container(engine, row.id, attach=True, attached_pid=os.getpid())
    if session is None:
        raise click.ClickException("cannot attach")
    return attach_and_wait(engine, row.id, session, tty=bool(row.options.get("tty")),
                           stdin=interactive and bool(row.options.get("open_stdin")),
                           sig_proxy=True)
