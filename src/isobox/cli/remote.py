"""``isobox --host URL …``: the same commands, served by a remote ``isobox serve``.

A command keeps its click definition (flags, help, argument parsing); with ``--host`` the
group hands out a copy whose callback is the remote implementation registered here under the
command's path (``"ps"``, ``"network ls"``), which calls :mod:`isobox.api.client` and prints
what the local command prints. A command with no remote implementation gets a callback that
refuses (exit 125) — nothing runs locally by accident, and ``CliContext.engine``/``store``
refuse under ``--host`` as a second guard."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from typing import Any

import click

from isobox.cli.context import CliContext

EXIT_UNSUPPORTED = 125
# the modules holding remote implementations (each registers with @remote)
MODULES = ("isobox.cli.remote_containers", "isobox.cli.remote_objects",
           "isobox.cli.remote_vms")

RemoteImpl = Callable[..., Any]
REMOTE: dict[str, RemoteImpl] = {}


class RemoteUnsupported(click.ClickException):
    exit_code = EXIT_UNSUPPORTED

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not available with --host (a remote server): run it on "
                         "the server's host")

    def show(self, file: Any = None) -> None:
        click.echo(f"isobox: error: {self.message}", err=True)


def remote(*paths: str) -> Callable[[RemoteImpl], RemoteImpl]:
    """Register ``fn(obj, **params)`` as the remote callback of the commands at ``paths``."""
    def deco(fn: RemoteImpl) -> RemoteImpl:
        for p in paths:
            REMOTE[p] = fn
        return fn
    return deco


def _load() -> None:
    if not REMOTE:
        for name in MODULES:
            importlib.import_module(name)


def _callback(path: str) -> Callable[..., Any]:
    impl = REMOTE.get(path)

    def call(**params: Any) -> Any:
        if impl is None:
            raise RemoteUnsupported(f"`isobox {path}`")
        obj = click.get_current_context().find_object(CliContext)
        assert obj is not None
        return impl(obj, **params)
    return call


def remote_view(cmd: click.Command, path: str) -> click.Command:
    """``cmd`` with remote callbacks (recursively for a group's subcommands)."""
    _load()
    new = copy.copy(cmd)
    if isinstance(cmd, click.Group):
        assert isinstance(new, click.Group)
        if cmd.name == "system":  # its subcommands come from several modules
            from isobox.cli.main import _register

            _register()
        new.commands = {name: remote_view(sub, f"{path} {name}")
                        for name, sub in cmd.commands.items()}
        return new
    new.callback = _callback(path)
    return new


def supported() -> list[str]:
    """The command paths that work with --host (for the docs and a test)."""
    _load()
    return sorted(REMOTE)
