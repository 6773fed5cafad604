"""``network connect``/``disconnect`` of containers: a running container joins or leaves a
user-defined network at once (a new veth in its namespace); a stopped one has the change
recorded and applied at its next start, as Docker does.

A container's record keeps its network mode (``options["network"]``, Docker's
``HostConfig.NetworkMode``) apart from the networks it is attached to
(``options["network_endpoints"]``: network name → its aliases on that network, in the
order they are joined). Leaving the last network keeps the mode and the namespace: the
container runs with only ``lo`` and can be connected again, as Docker keeps the sandbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isobox.errors import ConfigError, ConflictError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

PREDEFINED = ("bridge", "host", "none")


def endpoint_configs(options: dict[str, Any]) -> dict[str, list[str]]:
    """The networks a container joins at start, in order, each with its aliases. A record
    written before per-network aliases has ``network`` (with ``network_aliases``) and
    ``extra_networks`` instead."""
    saved = options.get("network_endpoints")
    if isinstance(saved, dict):
        return {str(n): [str(a) for a in aliases or []] for n, aliases in saved.items()}
    mode = str(options.get("network") or "bridge")
    if mode in ("host", "none"):
        return {}
    out = {mode: [str(a) for a in options.get("network_aliases") or []]}
    for extra in options.get("extra_networks") or []:
        out.setdefault(str(extra), [])
    return out


def _save_endpoint_configs(options: dict[str, Any], configs: dict[str, list[str]]) -> None:
    options["network_endpoints"] = configs
    options.pop("extra_networks", None)  # the legacy list: network_endpoints supersedes it


def _check_mode(row_options: dict[str, Any], network: str) -> None:
    mode = str(row_options.get("network") or "bridge")
    if mode in ("host", "none"):
        raise ConflictError(f"container cannot be connected to network {network}: it uses "
                            f"the {mode} network mode")
    if network in ("host", "none"):
        raise ConfigError("network", f"container cannot be disconnected from host network or "
                          f"connected to {network} network")


def _check_aliases(network: str, aliases: tuple[str, ...]) -> None:
    if aliases and network in PREDEFINED:
        raise ConfigError("alias", "network-scoped aliases are supported only for "
                          "user-defined networks")
    for alias in aliases:
        if not alias or any(c.isspace() for c in alias):
            raise ConfigError("alias", f'invalid alias "{alias}"')


def connect_container(engine: Engine, network: str, ref: str,
                      aliases: tuple[str, ...] = ()) -> None:
    from isobox.engine.start import endpoint_dict, refresh_hosts

    net = engine.networks.inspect(network)  # NotFoundError names it
    row = engine.get(ref)
    with engine.locked(row.id) as row:
        _check_mode(row.options, net.name)
        _check_aliases(net.name, aliases)
        configs = endpoint_configs(row.options)
        if net.name in configs:
            raise ConflictError(f"endpoint with name {row.name} already exists in network "
                                f"{net.name}")
        own = list(dict.fromkeys(aliases))
        if row.status == "running":
            current = (row.network or {}).get("endpoints") or {}
            ep = engine.networks.connect(net.name, row.id, engine.layout.netns_path(row.id),
                                         name=row.name, aliases=own)
            network_state = dict(row.network)
            network_state["endpoints"] = {**current, net.name: endpoint_dict(ep)}
            engine.db.update(row.id, network=network_state)
        configs[net.name] = own
        _save_endpoint_configs(row.options, configs)
        engine.db.update(row.id, options=row.options)
    refresh_hosts(engine, row.id)
    for peer in engine.networks.peers(row.id):
        refresh_hosts(engine, peer)
    engine.db.add_event("network", "connect", net.id, {"name": net.name,
                                                       "container": row.id})


def disconnect_container(engine: Engine, network: str, ref: str, force: bool = False) -> None:
    from isobox.engine.start import refresh_hosts

    net = engine.networks.inspect(network)
    row = engine.get(ref)
    with engine.locked(row.id) as row:
        configs = endpoint_configs(row.options)
        if net.name not in configs:
            raise ConflictError(f"container {row.id[:12]} is not connected to network "
                                f"{net.name}")
        peers = engine.networks.peers(row.id)
        if row.status == "running":
            engine.networks.disconnect(net.name, row.id, engine.layout.netns_path(row.id))
            state = dict(row.network)
            eps = dict(state.get("endpoints") or {})
            eps.pop(net.name, None)
            state["endpoints"] = eps
            if state.get("ports"):  # those published on that network went with it
                state["ports"] = [{"container_port": p.container_port, "protocol": p.protocol,
                                   "host_ip": p.host_ip, "host_port": p.host_port}
                                  for p in engine.networks.published(row.id)]
            engine.db.update(row.id, network=state)
        del configs[net.name]  # the last one too: the mode and the namespace stay (Docker)
        _save_endpoint_configs(row.options, configs)
        engine.db.update(row.id, options=row.options)
    refresh_hosts(engine, row.id)
    for peer in peers:
        refresh_hosts(engine, peer)
    engine.db.add_event("network", "disconnect", net.id, {"name": net.name,
                                                          "container": row.id})
