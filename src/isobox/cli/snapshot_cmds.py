"""``isobox snapshot create/ls/restore/rm``: local snapshots of containers and VMs."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli
from isobox.cli.output import human_size, print_table

pass_ctx = click.make_pass_decorator(CliContext)
EXIT_UNAVAILABLE = 125  # as Docker/Podman exit when the engine cannot do it at all


class SnapshotUnavailable(click.ClickException):
    exit_code = EXIT_UNAVAILABLE

    def show(self, file: Any = None) -> None:
        click.echo(f"isobox: error: {self.message}", err=True)


@cli.group()
def snapshot() -> None:
    """Manage local snapshots of containers and VMs."""


@snapshot.command(name="create")
@click.option("--memory", is_flag=True,
              help="Also save the running state (VM: RAM and devices; container: needs CRIU).")
@click.argument("instance")
@click.argument("name")
@pass_ctx
def snapshot_create(obj: CliContext, memory: bool, instance: str, name: str) -> None:
    """Take snapshot NAME of INSTANCE (its disk/filesystem, with --memory its running state)."""
    from isobox.engine.instance_snapshots import MemorySnapshotUnavailable, create_snapshot

    try:
        create_snapshot(obj.engine, instance, name, memory=memory)
    except MemorySnapshotUnavailable as e:
        raise SnapshotUnavailable(str(e)) from None
    click.echo(name)


@snapshot.command(name="ls")
@click.option("--format", "fmt", default="", help="table or json.")
@click.option("-q", "--quiet", is_flag=True, help="Only display snapshot names.")
@click.argument("instance")
@pass_ctx
def snapshot_ls(obj: CliContext, fmt: str, quiet: bool, instance: str) -> None:
    """List the snapshots of INSTANCE."""
    from isobox.engine.instance_snapshots import list_snapshots

    print_snapshots(list_snapshots(obj.engine, instance), fmt, quiet)


def print_snapshots(snaps: list[Any], fmt: str, quiet: bool) -> None:
    """``snapshot ls`` output, local or remote (``--host``): names, JSON lines or a table."""
    if quiet:
        for s in snaps:
            click.echo(s.name)
        return
    if fmt == "json":
        for s in snaps:
            click.echo(json.dumps(s.to_dict()))
        return
    print_table(["NAME", "CREATED", "KIND", "MEMORY", "SIZE"], [
        [s.name, datetime.datetime.fromtimestamp(s.created).strftime("%Y-%m-%d %H:%M:%S"),
         s.kind, "yes" if s.memory else "no", human_size(s.size)] for s in snaps])


@snapshot.command(name="restore")
@click.argument("instance")
@click.argument("name")
@pass_ctx
def snapshot_restore(obj: CliContext, instance: str, name: str) -> None:
    """Return INSTANCE to snapshot NAME (a VM memory snapshot: it continues from there)."""
    from isobox.engine.instance_snapshots import restore_snapshot

    restore_snapshot(obj.engine, instance, name)
    click.echo(name)


@snapshot.command(name="rm")
@click.argument("instance")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def snapshot_rm(obj: CliContext, instance: str, names: tuple[str, ...]) -> None:
    """Remove snapshots of INSTANCE."""
    from isobox.cli.output import for_each
    from isobox.engine.instance_snapshots import remove_snapshot

    if for_each(names, lambda n: remove_snapshot(obj.engine, instance, n)):
        raise click.exceptions.Exit(1)
