"""``/networks``: list, inspect, create, remove, connect, disconnect, prune — Docker's bridge
driver as :mod:`isobox.engine.networks` and :mod:`isobox.engine.networking` run it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isobox.api.docker_json import _bool, _obj, _str, _str_map, _strs, parse_filters
from isobox.api.errors import ApiError, bad_parameter
from isobox.api.routing import route

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState


@route("GET", "/networks")
def list_(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.networks import list_networks, network_doc

    filters = parse_filters(ex.arg("filters"))
    with state.engine() as engine:
        nets = list_networks(engine, filters)
    ex.send_json(200, [network_doc(n) for n in nets])


@route("GET", "/networks/{id}")
def inspect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.networks import network_doc

    scope = ex.arg("scope")
    if scope not in ("", "local"):
        raise ApiError(404, f"network {params['id']} not found")
    with state.engine() as engine:
        info = engine.networks.inspect(params["id"])
    ex.send_json(200, network_doc(info))


@route("POST", "/networks/create")
def create(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.networks import create_network

    req = network_request(ex.json_body())
    with state.engine() as engine:
        info = create_network(engine, **req)
    ex.send_json(201, {"Id": info.id, "Warning": ""})


def network_request(body: Any) -> dict[str, Any]:
    """A ``POST /networks/create`` body → :func:`create_network`'s arguments. What the
    bridge driver here cannot do (IPv6, several subnets, IP ranges, driver options, swarm
    scopes) is a 400 naming the field, never silently dropped."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")
    name = _str(body, "Name", "")
    if not name:
        raise bad_parameter("Name", "a network needs a name")
    for flag in ("EnableIPv6", "Ingress", "ConfigOnly"):
        if _bool(body, flag, ""):
            raise bad_parameter(flag, "not supported by isobox's bridge driver")
    if _str(_obj(body, "ConfigFrom", ""), "Network", "ConfigFrom."):
        raise bad_parameter("ConfigFrom", "configuration networks are not supported")
    if _str(body, "Scope", "") not in ("", "local"):
        raise bad_parameter("Scope", f"scope {body['Scope']!r} is not supported (local only)")
    options = _str_map(body, "Options", "")
    if options:
        raise bad_parameter(f"Options.{sorted(options)[0]}", "driver options are not "
                            "supported")
    ipam = _obj(body, "IPAM", "")
    if _str(ipam, "Driver", "IPAM.") not in ("", "default"):
        raise ApiError(404, f'plugin "{ipam["Driver"]}" not found')
    if _str_map(ipam, "Options", "IPAM."):
        raise bad_parameter("IPAM.Options", "IPAM options are not supported")
    configs = ipam.get("Config") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise bad_parameter("IPAM.Config", "expected a list of objects")
    if len(configs) > 1:
        raise bad_parameter("IPAM.Config", "one IPv4 subnet per network is supported")
    subnet = gateway = ""
    if configs:
        c = configs[0]
        subnet = _str(c, "Subnet", "IPAM.Config[0].")
        gateway = _str(c, "Gateway", "IPAM.Config[0].")
        if _str(c, "IPRange", "IPAM.Config[0]."):
            raise bad_parameter("IPAM.Config[0].IPRange", "IP ranges are not supported")
        if _str_map(c, "AuxiliaryAddresses", "IPAM.Config[0]."):
            raise bad_parameter("IPAM.Config[0].AuxiliaryAddresses", "not supported")
        if gateway and not subnet:
            raise bad_parameter("IPAM.Config[0].Gateway", "a gateway needs a subnet")
    driver = _str(body, "Driver", "") or "bridge"
    if driver != "bridge":
        raise ApiError(404, f'plugin "{driver}" not found')
    return {"name": name, "driver": driver, "subnet": subnet, "gateway": gateway,
            "internal": _bool(body, "Internal", ""), "labels": _str_map(body, "Labels", "")}


@route("DELETE", "/networks/{id}")
def remove(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.networks import remove_network

    with state.engine() as engine:
        info = engine.networks.inspect(params["id"])
        if info.predefined:  # dockerd: 403 Forbidden
            raise ApiError(403, f"{info.name} is a pre-defined network and cannot be removed")
        remove_network(engine, info.id)
    ex.send(204)


@route("POST", "/networks/{id}/connect")
def connect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.networking import connect_container

    body = _object_body(ex)
    container = _container_field(body)
    endpoint = _obj(body, "EndpointConfig", "")
    where = "EndpointConfig."
    ipam = _obj(endpoint, "IPAMConfig", where)
    for key in ("IPv4Address", "IPv6Address"):
        if _str(ipam, key, where + "IPAMConfig."):
            raise bad_parameter(f"{where}IPAMConfig.{key}", "static addresses are not "
                                "supported")
    if _strs(endpoint, "Links", where):
        raise bad_parameter(f"{where}Links", "container links are not supported")
    aliases = tuple(_strs(endpoint, "Aliases", where) or ())
    with state.engine() as engine:
        connect_container(engine, params["id"], container, aliases)
    ex.send(200)


@route("POST", "/networks/{id}/disconnect")
def disconnect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.networking import disconnect_container

    body = _object_body(ex)
    container = _container_field(body)
    with state.engine() as engine:
        disconnect_container(engine, params["id"], container, _bool(body, "Force", ""))
    ex.send(200)


@route("POST", "/networks/prune")
def prune(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.prune import (
        NETWORK_PRUNE_FILTERS,
        PruneReport,
        prune_filters,
        prune_networks,
    )

    filters = prune_filters(parse_filters(ex.arg("filters")), NETWORK_PRUNE_FILTERS)
    report = PruneReport()
    with state.engine() as engine:
        prune_networks(engine, report, filters)
    ex.send_json(200, {"NetworksDeleted": report.networks or None})


def _object_body(ex: Exchange) -> dict[str, Any]:
    body = ex.json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")
    return body


def _container_field(body: dict[str, Any]) -> str:
    container = _str(body, "Container", "")
    if not container:
        raise bad_parameter("Container", "no container given")
    return container
