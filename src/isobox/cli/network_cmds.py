"""``isobox network create/ls/rm/inspect/connect/disconnect/prune``."""

from __future__ import annotations

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli
from isobox.cli.output import for_each

pass_ctx = click.make_pass_decorator(CliContext)


def one_value(param: click.Parameter, values: tuple[str, ...]) -> str:
    """The one ``--subnet``/``--gateway`` a network has here: given twice, Docker would make
    a network with two subnets; refusing says so rather than keeping only the last."""
    if len(values) > 1:
        raise click.BadParameter(f"{', '.join(values)}: a network has one subnet here",
                                 param=param)
    return values[0] if values else ""


@cli.group()
def network() -> None:
    """Manage networks."""


@network.command(name="create")
@click.option("-d", "--driver", default="bridge", show_default=True)
@click.option("--subnet", multiple=True, callback=lambda _c, p, v: one_value(p, v),
              help="Subnet in CIDR format.")
@click.option("--gateway", multiple=True, callback=lambda _c, p, v: one_value(p, v),
              help="IPv4 gateway for the subnet.")
@click.option("--internal", is_flag=True, help="Restrict external access to the network.")
@click.option("--label", multiple=True, help="Set metadata on a network.")
@click.argument("name")
@pass_ctx
def network_create(obj: CliContext, driver: str, subnet: str, gateway: str, internal: bool,
                   label: tuple[str, ...], name: str) -> None:
    """Create a network."""
    from isobox.engine.networks import create_network
    from isobox.engine.parse import parse_labels

    info = create_network(obj.engine, name, subnet=subnet, gateway=gateway,
                          internal=internal, labels=parse_labels(label), driver=driver)
    click.echo(info.id)


@network.command(name="ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("--format", "fmt", default="", help="table, json or a Go template.")
@click.option("--no-trunc", is_flag=True)
@click.option("-f", "--filter", "filters", multiple=True,
              help="driver, id, label, name, scope, type=custom|builtin, dangling=true|false")
@pass_ctx
def network_ls(obj: CliContext, quiet: bool, fmt: str, no_trunc: bool,
               filters: tuple[str, ...]) -> None:
    """List networks."""
    from isobox.api.client_types import NetworkSummary
    from isobox.cli.listings import print_networks
    from isobox.engine import filters as flt
    from isobox.engine.networks import LIST_FILTERS, docker_driver, list_networks

    nets = list_networks(obj.engine, flt.group(filters, LIST_FILTERS))
    print_networks([NetworkSummary(n.id, n.name, docker_driver(n), n.scope, n.subnet,
                                   n.gateway, n.internal, dict(n.labels), n.created)
                    for n in nets], quiet=quiet, fmt=fmt, no_trunc=no_trunc)


@network.command(name="inspect")
@click.option("-f", "--format", "fmt", default="", help="json or a Go template.")
@click.argument("networks", nargs=-1, required=True)
@pass_ctx
def network_inspect(obj: CliContext, fmt: str, networks: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    from isobox.cli.formats import inspect_each
    from isobox.engine.networks import network_doc

    inspect_each(networks, lambda n: network_doc(obj.engine.networks.inspect(n)), fmt)


@network.command(name="rm")
@click.argument("networks", nargs=-1, required=True)
@pass_ctx
def network_rm(obj: CliContext, networks: tuple[str, ...]) -> None:
    """Remove one or more networks."""
    from isobox.engine.networks import remove_network

    if for_each(networks, lambda name: remove_network(obj.engine, name)):
        raise click.exceptions.Exit(1)


@network.command(name="connect")
@click.option("--alias", multiple=True, help="Network-scoped alias for the container.")
@click.argument("network_name")
@click.argument("container")
@pass_ctx
def network_connect(obj: CliContext, alias: tuple[str, ...], network_name: str,
                    container: str) -> None:
    """Connect a container to a network."""
    from isobox.engine.networking import connect_container

    connect_container(obj.engine, network_name, container, alias)


@network.command(name="disconnect")
@click.option("-f", "--force", is_flag=True)
@click.argument("network_name")
@click.argument("container")
@pass_ctx
def network_disconnect(obj: CliContext, force: bool, network_name: str,
                       container: str) -> None:
    """Disconnect a container from a network."""
    from isobox.engine.networking import disconnect_container

    disconnect_container(obj.engine, network_name, container, force)


@network.command(name="prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, help="until=…, label=…, label!=…")
@pass_ctx
def network_prune(obj: CliContext, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all unused user-defined networks."""
    from isobox.engine import filters as flt
    from isobox.engine.prune import (
        NETWORK_PRUNE_FILTERS,
        PruneReport,
        prune_filters,
        prune_networks,
    )

    report = PruneReport()
    prune_networks(obj.engine, report,
                   prune_filters(flt.group(filters, NETWORK_PRUNE_FILTERS),
                                 NETWORK_PRUNE_FILTERS))
    if report.networks:
        click.echo("Deleted Networks:")
        for name in report.networks:
            click.echo(name)
