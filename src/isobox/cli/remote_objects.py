"""Remote image, network, volume and system commands (``--host``), printing what the local
commands print."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from isobox.cli.context import CliContext
from isobox.cli.output import for_each
from isobox.cli.remote import RemoteUnsupported, remote
from isobox.errors import IsoboxError, NotFoundError


def _each(refs: tuple[str, ...], fn: Any) -> None:
    if for_each(refs, fn):
        raise click.exceptions.Exit(1)


def _rfc3339(unix: int) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# images -------------------------------------------------------------------------------------
@remote("images", "image ls")
def images(obj: CliContext, all_: bool, quiet: bool, fmt: str, digests: bool,
           no_trunc: bool, filters: tuple[str, ...], reference: str | None) -> None:
    from isobox.cli.image_cmds import image_filters
    from isobox.cli.listings import print_images

    print_images(obj.client.images(all=all_, filters=image_filters(filters, reference)),
                 quiet=quiet, fmt=fmt, digests=digests, no_trunc=no_trunc)


@remote("image inspect")
def image_inspect(obj: CliContext, fmt: str, names: tuple[str, ...]) -> None:
    from isobox.cli.formats import print_objects

    print_objects([obj.client.image_document(n) for n in names], fmt)


@remote("rmi", "image rm")
def rmi(obj: CliContext, force: bool, names: tuple[str, ...]) -> None:
    failed = False
    for n in names:
        try:
            for entry in obj.client.remove_image(n, force=force):
                for key, value in entry.items():
                    click.echo(f"{key}: {value}")
        except IsoboxError as e:
            if force and isinstance(e, NotFoundError):
                continue
            click.echo(f"isobox: error: {e}", err=True)
            failed = True
    if failed:
        raise click.exceptions.Exit(1)


@remote("tag", "image tag")
def tag(obj: CliContext, source: str, target: str) -> None:
    obj.client.tag(source, target)


@remote("pull")
def pull(obj: CliContext, /, platform: str | None, quiet: bool, reference: str,
         **kw: Any) -> None:
    """The server pulls with its own registry settings and stored logins."""
    from isobox.images.reference import parse_reference

    if any(v for v in kw.values()):
        raise RemoteUnsupported("registry options with `isobox pull` (the server uses its "
                                "own registry settings)")
    ref = parse_reference(reference)
    if quiet:
        click.echo(obj.client.pull(str(ref), platform or ""))
        return
    click.echo(f"{ref.tag or ref.digest}: Pulling from {ref.repository}"
               if ref.registry != "docker.io" else
               f"{ref.tag or ref.digest}: Pulling from {ref.familiar.split(':')[0]}")
    for msg in obj.client.pull_progress(str(ref), platform or ""):
        status = str(msg.get("status") or "")
        if status.startswith(("Digest: ", "Status: ")):
            click.echo(status)
    click.echo(str(ref))


# system -------------------------------------------------------------------------------------
@remote("version")
def version(obj: CliContext) -> None:
    click.echo(f"isobox version {obj.client.version()['Version']}")


@remote("info", "system info")
def info(obj: CliContext, fmt: str) -> None:
    from isobox.cli.container_extra_cmds import _info_text
    from isobox.cli.formats import render_template

    data = obj.client.info()
    if fmt in ("json", "{{json .}}"):
        click.echo(json.dumps(data, indent=4))
    elif fmt:
        click.echo(render_template(fmt, data))
    else:
        for line in _info_text(data):
            click.echo(line)


# networks -----------------------------------------------------------------------------------
def _grouped(filters: tuple[str, ...], allowed: Any) -> dict[str, list[str]]:
    from isobox.engine import filters as flt

    return {k: list(v) for k, v in flt.group(filters, allowed).items()}


@remote("network create")
def network_create(obj: CliContext, driver: str, subnet: str, gateway: str, internal: bool,
                   label: tuple[str, ...], name: str) -> None:
    from isobox.engine.parse import parse_labels

    click.echo(obj.client.network_create(name, driver=driver, subnet=subnet, gateway=gateway,
                                         internal=internal, labels=parse_labels(label)))


@remote("network ls")
def network_ls(obj: CliContext, quiet: bool, fmt: str, no_trunc: bool,
               filters: tuple[str, ...]) -> None:
    from isobox.cli.listings import print_networks
    from isobox.engine.networks import LIST_FILTERS

    print_networks(obj.client.networks(_grouped(filters, LIST_FILTERS)), quiet=quiet,
                   fmt=fmt, no_trunc=no_trunc)


@remote("network inspect")
def network_inspect(obj: CliContext, fmt: str, networks: tuple[str, ...]) -> None:
    from isobox.cli.formats import inspect_each

    inspect_each(networks, obj.client.network_inspect, fmt)


@remote("network rm")
def network_rm(obj: CliContext, networks: tuple[str, ...]) -> None:
    _each(networks, obj.client.network_remove)


# volumes ------------------------------------------------------------------------------------
@remote("volume create")
def volume_create(obj: CliContext, driver: str, label: tuple[str, ...], opt: tuple[str, ...],
                  name: str) -> None:
    from isobox.cli.volume_cmds import parse_volume_opts
    from isobox.engine.parse import parse_labels

    info = obj.client.volume_create(name, driver=driver, labels=parse_labels(label),
                                    options=parse_volume_opts(opt))
    click.echo(info.name)


@remote("volume ls")
def volume_ls(obj: CliContext, quiet: bool, fmt: str, filters: tuple[str, ...]) -> None:
    from isobox.cli.listings import print_volumes
    from isobox.engine.volume_admin import LIST_FILTERS

    print_volumes(obj.client.volumes(_grouped(filters, LIST_FILTERS)), quiet=quiet, fmt=fmt)


@remote("volume inspect")
def volume_inspect(obj: CliContext, fmt: str, names: tuple[str, ...]) -> None:
    from isobox.cli.formats import inspect_each

    inspect_each(names, obj.client.volume_inspect, fmt)


@remote("volume rm")
def volume_rm(obj: CliContext, force: bool, names: tuple[str, ...]) -> None:
    _each(names, lambda n: obj.client.volume_remove(n, force=force))
