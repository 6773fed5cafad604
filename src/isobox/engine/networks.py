"""Networks as the CLI and the API manage them: create and remove with their events, the
list filters, and Docker's JSON for a network (``network inspect``, ``GET /networks``).
Joining and leaving are in :mod:`.networking`; the bridges themselves in
:mod:`isobox.network.manager`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isobox.engine import filters as flt
from isobox.errors import ConfigError
from isobox.oci.digest import short_sha256_hex

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.network.models import NetworkInfo

LIST_FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")


def create_network(engine: Engine, name: str, *, driver: str = "bridge", subnet: str = "",
                   gateway: str = "", internal: bool = False,
                   labels: dict[str, str] | None = None) -> NetworkInfo:
    info = engine.networks.create(name, subnet=subnet, gateway=gateway, internal=internal,
                                  labels=labels, driver=driver)
    engine.db.add_event("network", "create", info.id, {"name": name, "type": driver})
    return info


def remove_network(engine: Engine, ref: str) -> NetworkInfo:
    """Remove by name, id or id prefix; a network with endpoints is a ConflictError."""
    info = engine.networks.inspect(ref)
    engine.networks.remove(info.name)
    engine.db.add_event("network", "destroy", info.id, {"name": info.name,
                                                        "type": docker_driver(info)})
    return info


def networks_in_use(engine: Engine) -> set[str]:
    """Names of the networks some container (in any state) is configured to join."""
    from isobox.engine.networking import endpoint_configs

    out: set[str] = set()
    for row in engine.db.all():
        mode = str(row.options.get("network") or "bridge")
        if mode in ("host", "none"):
            out.add(mode)
        out.update(endpoint_configs(row.options))
    return out


def docker_driver(info: NetworkInfo) -> str:
    return {"bridge": "bridge", "host": "host"}.get(info.driver, "null")


def list_networks(engine: Engine, filters: flt.Filters | None = None) -> list[NetworkInfo]:
    """``network ls`` with Docker's filters: every key must match one of its values."""
    filters = filters or {}
    flt.check_keys(filters, LIST_FILTERS)
    used = networks_in_use(engine) if "dangling" in filters else set()

    def one(net: NetworkInfo, key: str, value: str) -> bool:
        if key == "driver":
            return docker_driver(net) == value
        if key == "id":
            return flt.text_matches(value, net.id)
        if key == "name":
            return flt.text_matches(value, net.name)
        if key == "scope":
            return net.scope == value
        if key == "type":
            if value not in ("custom", "builtin"):
                raise ConfigError("filters", f"invalid filter: 'type'='{value}'")
            return net.predefined == (value == "builtin")
        unused = not net.predefined and not net.containers and net.name not in used
        return unused == flt.parse_bool(key, value)           # dangling

    return [n for n in engine.networks.list()
            if all(flt.labels_match(n.labels, values) if key == "label"
                   else any(one(n, key, v) for v in values)
                   for key, values in filters.items())]


def _endpoint_id(network_id: str, container_id: str) -> str:
    """A stable 64-hex endpoint id (isobox names endpoints by network and container)."""
    return short_sha256_hex(f"{network_id}/{container_id}")


def network_doc(info: NetworkInfo) -> dict[str, Any]:
    """Docker's ``NetworkResource`` JSON."""
    return {
        "Name": info.name, "Id": info.id, "Created": info.created, "Scope": info.scope,
        "Driver": docker_driver(info), "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [{"Subnet": info.subnet, "Gateway": info.gateway}]
                 if info.subnet else []},
        "Internal": info.internal, "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": {cid: {"Name": ep.name, "EndpointID": _endpoint_id(info.id, cid),
                             "MacAddress": ep.mac,
                             "IPv4Address": f"{ep.ip}/{ep.prefixlen}", "IPv6Address": ""}
                       for cid, ep in info.containers.items()},
        "Options": {"com.docker.network.bridge.name": info.bridge} if info.bridge else {},
        "Labels": dict(info.labels),
    }
