"""``isobox network create/ls/rm/inspect/connect/disconnect/prune``."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli
from isobox.cli.output import for_each, print_json, print_table
from isobox.errors import IsoboxError

pass_ctx = click.make_pass_decorator(CliContext)


@cli.group()
def network() -> None:
    """Manage networks."""


def _docker_shape(info: Any) -> dict[str, Any]:
    d = asdict(info)
    return {
        "Name": d["name"], "Id": d["id"], "Created": d["created"], "Scope": d["scope"],
        "Driver": {"bridge": "bridge", "host": "host"}.get(d["driver"], "null"),
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [{"Subnet": d["subnet"], "Gateway": d["gateway"]}]
                 if d["subnet"] else []},
        "Internal": d["internal"], "Attachable": False, "Ingress": False,
        "Containers": {cid: {"Name": ep["name"], "MacAddress": ep["mac"],
                             "IPv4Address": f"{ep['ip']}/{ep['prefixlen']}",
                             "IPv6Address": ""}
                       for cid, ep in (d.get("containers") or {}).items()},
        "Options": {"com.docker.network.bridge.name": d["bridge"]} if d["bridge"] else {},
        "Labels": d["labels"],
    }


@network.command(name="create")
@click.option("-d", "--driver", default="bridge", show_default=True)
@click.option("--subnet", default="", help="Subnet in CIDR format.")
@click.option("--gateway", default="", help="IPv4 gateway for the subnet.")
@click.option("--internal", is_flag=True, help="Restrict external access to the network.")
@click.option("--label", multiple=True, help="Set metadata on a network.")
@click.argument("name")
@pass_ctx
def network_create(obj: CliContext, driver: str, subnet: str, gateway: str, internal: bool,
                   label: tuple[str, ...], name: str) -> None:
    """Create a network."""
    from isobox.engine.parse import parse_labels

    info = obj.engine.networks.create(name, subnet=subnet, gateway=gateway,
                                      internal=internal, labels=parse_labels(label),
                                      driver=driver)
    obj.engine.db.add_event("network", "create", info.id, {"name": name, "type": driver})
    click.echo(info.id)


@network.command(name="ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("--format", "fmt", default="", help="table or json.")
@click.option("--no-trunc", is_flag=True)
@pass_ctx
def network_ls(obj: CliContext, quiet: bool, fmt: str, no_trunc: bool) -> None:
    """List networks."""
    nets = obj.engine.networks.list()
    if quiet:
        for n in nets:
            click.echo(n.id if no_trunc else n.id[:12])
        return
    if fmt == "json":
        for n in nets:
            click.echo(json.dumps({"ID": n.id[:12], "Name": n.name, "Driver": n.driver,
                                   "Scope": n.scope}))
        return
    print_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                [[n.id if no_trunc else n.id[:12], n.name,
                  {"bridge": "bridge", "host": "host"}.get(n.driver, "null"), n.scope]
                 for n in nets])


@network.command(name="inspect")
@click.argument("networks", nargs=-1, required=True)
@pass_ctx
def network_inspect(obj: CliContext, networks: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    print_json([_docker_shape(obj.engine.networks.inspect(n)) for n in networks])


@network.command(name="rm")
@click.argument("networks", nargs=-1, required=True)
@pass_ctx
def network_rm(obj: CliContext, networks: tuple[str, ...]) -> None:
    """Remove one or more networks."""
    engine = obj.engine

    def remove(name: str) -> None:
        info = engine.networks.inspect(name)
        engine.networks.remove(name)
        engine.db.add_event("network", "destroy", info.id, {"name": info.name})

    if for_each(networks, remove):
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
@pass_ctx
def network_prune(obj: CliContext, force: bool) -> None:
    """Remove all unused user-defined networks."""
    removed = []
    for n in obj.engine.networks.list():
        if n.predefined or n.containers:
            continue
        try:
            obj.engine.networks.remove(n.name)
            removed.append(n.name)
        except IsoboxError:
            continue
    if removed:
        click.echo("Deleted Networks:")
        for name in removed:
            click.echo(name)
