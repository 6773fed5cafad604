"""``isobox volume create/ls/inspect/rm/prune``."""

from __future__ import annotations

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli
from isobox.cli.output import for_each, human_size
from isobox.errors import ConfigError

pass_ctx = click.make_pass_decorator(CliContext)


@cli.group()
def volume() -> None:
    """Manage volumes."""


@volume.command(name="create")
@click.option("-d", "--driver", default="local", show_default=True)
@click.option("--label", multiple=True, help="Set metadata for a volume.")
@click.option("-o", "--opt", multiple=True, help="Set driver specific options.")
@click.argument("name", required=False, default="")
@pass_ctx
def volume_create(obj: CliContext, driver: str, label: tuple[str, ...], opt: tuple[str, ...],
                  name: str) -> None:
    """Create a volume."""
    from isobox.engine.parse import parse_labels
    from isobox.engine.volume_admin import create_volume

    info = create_volume(obj.engine, name, labels=parse_labels(label), driver=driver,
                         options=parse_volume_opts(opt))
    click.echo(info.name)


def parse_volume_opts(opt: tuple[str, ...]) -> dict[str, str]:
    """``-o key=value`` flags (local and ``--host`` ``volume create``)."""
    options = {}
    for o in opt:
        k, sep, v = o.partition("=")
        if not sep:
            raise ConfigError("--opt", f"invalid option '{o}': expected key=value")
        options[k] = v
    return options


@volume.command(name="ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names.")
@click.option("--format", "fmt", default="", help="table, json or a Go template.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="dangling=true|false, driver=…, label=…, name=…")
@pass_ctx
def volume_ls(obj: CliContext, quiet: bool, fmt: str, filters: tuple[str, ...]) -> None:
    """List volumes."""
    from isobox.api.client_types import VolumeSummary
    from isobox.cli.listings import print_volumes
    from isobox.engine import filters as flt
    from isobox.engine.volume_admin import LIST_FILTERS, list_volumes

    vols = list_volumes(obj.engine, flt.group(filters, LIST_FILTERS))
    print_volumes([VolumeSummary(v.name, v.driver, v.mountpoint, v.created_at, dict(v.labels))
                   for v in vols], quiet=quiet, fmt=fmt)


@volume.command(name="inspect")
@click.option("-f", "--format", "fmt", default="", help="json or a Go template.")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def volume_inspect(obj: CliContext, fmt: str, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more volumes."""
    from isobox.cli.formats import inspect_each

    inspect_each(names, obj.engine.volumes.inspect, fmt)


@volume.command(name="rm")
@click.option("-f", "--force", is_flag=True, help="Do not error on a missing volume.")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def volume_rm(obj: CliContext, force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more volumes."""
    from isobox.engine.volume_admin import remove_volume

    if for_each(names, lambda name: remove_volume(obj.engine, name, force=force)):
        raise click.exceptions.Exit(1)


@volume.command(name="prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove named volumes too.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, help="label=…, label!=…")
@pass_ctx
def volume_prune(obj: CliContext, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused volumes (anonymous ones only, unless -a)."""
    from isobox.engine import filters as flt
    from isobox.engine.prune import (
        VOLUME_PRUNE_FILTERS,
        PruneReport,
        prune_filters,
        prune_volumes,
    )

    grouped = flt.group(filters, VOLUME_PRUNE_FILTERS)
    if all_:
        grouped["all"] = ["true"]
    report = PruneReport()
    prune_volumes(obj.engine, report, prune_filters(grouped, VOLUME_PRUNE_FILTERS))
    if report.volumes:
        click.echo("Deleted Volumes:")
        for n in report.volumes:
            click.echo(n)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(report.space_reclaimed)}")
