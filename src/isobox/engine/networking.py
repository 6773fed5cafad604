"""``network connect``/``disconnect`` of containers: a running container joins or leaves a
user-defined network at once (a new veth in its namespace); a stopped one has the change
recorded and applied at its next start, as Docker does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isobox.errors import ConfigError, ConflictError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

PREDEFINED = ("bridge", "host", "none")


def _check_mode(row_options: dict[str, Any], network: str) -> None:
    mode = str(row_options.get("network") or "bridge")
    if mode in ("host", "none"):
        raise ConflictError(f"container cannot be connected to network {network}: it uses "
                            f"the {mode} network mode")
    if network in ("host", "none"):
        raise ConfigError("network", f"container cannot be disconnected from host network or "
                          f"connected to {network} network")


def connect_container(engine: Engine, network: str, ref: str,
                      aliases: tuple[str, ...] = ()) -> None:
    from isobox.engine.start import endpoint_dict, refresh_hosts

    net = engine.networks.inspect(network)  # NotFoundError names it
    row = engine.get(ref)
    with engine.locked(row.id) as row:
        _check_mode(row.options, net.name)
        extra = list(row.options.get("extra_networks") or [])
        current = (row.network or {}).get("endpoints") or {}
        if net.name == row.options.get("network") or net.name in extra:
            raise ConflictError(f"endpoint with name {row.name} already exists in network "
                                f"{net.name}")
        if row.status == "running":
            ep = engine.networks.connect(net.name, row.id, engine.layout.netns_path(row.id),
                                         name=row.name, aliases=list(aliases))
            network_state = dict(row.network)
            network_state["endpoints"] = {**current, net.name: endpoint_dict(ep)}
            engine.db.update(row.id, network=network_state)
        extra.append(net.name)
        row.options["extra_networks"] = extra
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
        extra = list(row.options.get("extra_networks") or [])
        primary = str(row.options.get("network") or "bridge")
        if net.name not in extra and net.name != primary:
            raise ConflictError(f"container {row.id[:12]} is not connected to network "
                                f"{net.name}")
        peers = engine.networks.peers(row.id)
        if row.status == "running":
            engine.networks.disconnect(net.name, row.id, engine.layout.netns_path(row.id))
            state = dict(row.network)
            eps = dict(state.get("endpoints") or {})
            eps.pop(net.name, None)
            state["endpoints"] = eps
            engine.db.update(row.id, network=state)
        if net.name in extra:
            extra.remove(net.name)
        else:  # leaving the primary network: Docker leaves the container with none
            row.options["network"] = "none" if not extra else extra.pop(0)
        row.options["extra_networks"] = extra
        engine.db.update(row.id, options=row.options)
    for peer in peers:
        refresh_hosts(engine, peer)
    engine.db.add_event("network", "disconnect", net.id, {"name": net.name,
                                                          "container": row.id})
