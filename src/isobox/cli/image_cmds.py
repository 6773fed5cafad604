"""``isobox image …`` (ls, inspect, history, tag, rm, prune), their Docker aliases
(``images``, ``tag``, ``rmi``) and ``system df``."""

from __future__ import annotations

from collections.abc import Callable

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli, system
from isobox.cli.output import human_ago, human_size, print_json, print_table

# isobox.images.* (sqlite3, the store) is imported inside the commands: every `isobox` call
# registers these commands, most never touch the store.

pass_ctx = click.make_pass_decorator(CliContext)


@cli.group()
def image() -> None:
    """Manage images."""


def image_filters(filters: tuple[str, ...], reference: str | None) -> dict[str, list[str]]:
    """``--filter`` flags and the optional REPOSITORY[:TAG] argument (a reference filter)."""
    from isobox.engine.filters import group
    from isobox.images.listing import FILTER_KEYS

    grouped = group(filters, FILTER_KEYS)
    if reference:
        grouped.setdefault("reference", []).append(reference)
    return grouped


def _ls(obj: CliContext, all_: bool, quiet: bool, fmt: str, digests: bool,
        no_trunc: bool, filters: tuple[str, ...], reference: str | None) -> None:
    import datetime

    from isobox.api.client_types import ImageSummary
    from isobox.cli.listings import print_images
    from isobox.images.inspect import familiar
    from isobox.images.listing import filter_images, shown_refs

    def unix(rfc3339: str) -> int:
        try:
            return int(datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
                       .timestamp())
        except ValueError:
            return 0

    wanted = image_filters(filters, reference)
    store = obj.store
    rows = []
    for r in filter_images(store, store.images(include_intermediate=all_), wanted):
        refs = shown_refs(r, wanted)
        rows.append(ImageSummary(r.id, tuple(familiar(t) for t in refs if "@" not in t),
                                 tuple(familiar(d) for d in refs if "@" in d), unix(r.created),
                                 r.size, dict(r.config.config.get("Labels") or {})))
    print_images(rows, quiet=quiet, fmt=fmt, digests=digests, no_trunc=no_trunc)


_ls_options = [
    click.option("-a", "--all", "all_", is_flag=True, help="Show intermediate build images."),
    click.option("-q", "--quiet", is_flag=True, help="Only image IDs."),
    click.option("--format", "fmt", default="", help="table, json or a Go template."),
    click.option("--digests", is_flag=True, help="Show digests."),
    click.option("--no-trunc", is_flag=True, help="Do not truncate image IDs."),
    click.option("-f", "--filter", "filters", multiple=True,
                 help="dangling=true|false, label=…, reference=PATTERN, before=…, since=…"),
    click.argument("reference", required=False),
]


def _with_ls_options(f: Callable[..., None]) -> Callable[..., None]:
    for opt in reversed(_ls_options):
        f = opt(f)
    return f


@image.command("ls")
@_with_ls_options
@pass_ctx
def image_ls(obj: CliContext, all_: bool, quiet: bool, fmt: str, digests: bool,
             no_trunc: bool, filters: tuple[str, ...], reference: str | None) -> None:
    """List images."""
    _ls(obj, all_, quiet, fmt, digests, no_trunc, filters, reference)


@cli.command("images")
@_with_ls_options
@pass_ctx
def images_alias(obj: CliContext, all_: bool, quiet: bool, fmt: str, digests: bool,
                 no_trunc: bool, filters: tuple[str, ...], reference: str | None) -> None:
    """List images (alias of ``image ls``)."""
    _ls(obj, all_, quiet, fmt, digests, no_trunc, filters, reference)


@image.command("inspect")
@click.option("-f", "--format", "fmt", default="",
              help="json, or a Go template such as '{{.Id}}' (one line per image).")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def image_inspect(obj: CliContext, fmt: str, names: tuple[str, ...]) -> None:
    """Show an image's configuration as JSON."""
    from isobox.cli.formats import print_objects
    from isobox.images.inspect import inspect_image

    print_objects([inspect_image(obj.store.resolve(n)) for n in names], fmt)


@image.command("history")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--no-trunc", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
@click.argument("name")
@pass_ctx
def image_history(obj: CliContext, fmt: str, no_trunc: bool, quiet: bool, name: str) -> None:
    """Show the history of an image."""
    from isobox.images.inspect import history

    rec = obj.store.resolve(name)
    rows = history(rec, obj.store.db.layer_sizes())
    if fmt == "json":
        print_json(rows)
        return
    if quiet:
        for r in rows:
            click.echo(r["Id"] if r["Id"] == "<missing>" or no_trunc else r["Id"][7:19])
        return
    table = []
    for r in rows:
        ident = r["Id"] if (no_trunc or r["Id"] == "<missing>") else r["Id"][7:19]
        by = r["CreatedBy"] if no_trunc or len(r["CreatedBy"]) <= 45 else \
            r["CreatedBy"][:44] + "…"
        table.append([ident, human_ago(r["Created"]), by, human_size(r["Size"]), r["Comment"]])
    print_table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], table)


def _tag(obj: CliContext, source: str, target: str) -> None:
    obj.store.tag(source, target)


@image.command("tag")
@click.argument("source")
@click.argument("target")
@pass_ctx
def image_tag(obj: CliContext, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    _tag(obj, source, target)


@cli.command("tag")
@click.argument("source")
@click.argument("target")
@pass_ctx
def tag_alias(obj: CliContext, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    _tag(obj, source, target)


def _rm(obj: CliContext, names: tuple[str, ...], force: bool) -> None:
    from isobox.errors import IsoboxError, NotFoundError

    failed = []
    for n in names:
        try:
            for line in obj.store.remove(n, force=force):
                click.echo(line)
        except NotFoundError as e:
            if force:  # as docker rmi -f: a missing image is no error
                continue
            click.echo(f"isobox: error: {e}", err=True)
            failed.append(n)
        except IsoboxError as e:
            click.echo(f"isobox: error: {e}", err=True)
            failed.append(n)
    if failed:
        raise click.exceptions.Exit(1)


@image.command("rm")
@click.option("-f", "--force", is_flag=True, help="Remove even if in use or multiply tagged.")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def image_rm(obj: CliContext, force: bool, names: tuple[str, ...]) -> None:
    """Remove images."""
    _rm(obj, names, force)


@cli.command("rmi")
@click.option("-f", "--force", is_flag=True, help="Remove even if in use or multiply tagged.")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def rmi_alias(obj: CliContext, force: bool, names: tuple[str, ...]) -> None:
    """Remove images."""
    _rm(obj, names, force)


@image.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove every unused image.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt (isobox never prompts).")
@pass_ctx
def image_prune(obj: CliContext, all_: bool, force: bool) -> None:
    """Remove unused images and garbage-collect blobs and layers (and the VM root disks
    of images that are gone)."""
    from isobox.engine.prune import prune_images

    deleted, freed = prune_images(obj.engine, all_images=all_)
    if deleted:
        click.echo("Deleted Images:")
        for d in deleted:
            click.echo(f"deleted: {d}")
        click.echo()
    click.echo(f"Total reclaimed space: {human_size(freed)}")


@system.command("df")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_ctx
def system_df(obj: CliContext, fmt: str) -> None:
    """Show disk usage of images, containers, volumes and build cache."""
    from isobox.engine.disk_usage import disk_usage

    rows = disk_usage(obj.engine).summary()
    if fmt == "json":
        print_json(rows)
        return
    print_table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                [[r["Type"], str(r["TotalCount"]), str(r["Active"]), human_size(r["Size"]),
                  human_size(r["Reclaimable"])] for r in rows])
