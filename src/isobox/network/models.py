"""The network package's plain data: networks, endpoints and published ports.

All are JSON-serialisable through :func:`dataclasses.asdict` and rebuilt with ``from_dict``
(the state file and ``inspect`` output use the same shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PREDEFINED = ("bridge", "host", "none")


@dataclass(frozen=True)
class PortMapping:
    """One published port; ``host_ip`` "" means every host address, ``host_port`` 0 = pick."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""
    host_port: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PortMapping:
        return cls(int(d["container_port"]), str(d["protocol"]), str(d["host_ip"]),
                   int(d["host_port"]))


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to one network (one veth pair)."""

    network: str                 # network name
    container_id: str
    name: str                    # container name, resolvable on user-defined networks
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    ifname: str                  # inside the container: eth0, eth1, …
    host_ifname: str
    aliases: tuple[str, ...] = ()
    network_id: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        return cls(**{**d, "aliases": tuple(d.get("aliases", ()))})


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    driver: str                  # bridge | host | null
    subnet: str = ""
    gateway: str = ""
    bridge: str = ""             # device name; "" for host and none
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""
    scope: str = "local"
    containers: dict[str, Endpoint] = field(default_factory=dict)

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkInfo:
        eps = {k: Endpoint.from_dict(v) for k, v in d.get("containers", {}).items()}
        return cls(**{**d, "labels": dict(d.get("labels", {})), "containers": eps})
