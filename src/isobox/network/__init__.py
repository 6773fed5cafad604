"""Container networking: bridges, IPAM, veths into network namespaces, NAT and published
ports, /etc/hosts name resolution — what Docker's bridge driver and libnetwork do, without
a daemon.

Netlink is spoken directly (:mod:`.netlink`) rather than through pyroute2, whose package
import costs about 220 ms here even for ``pyroute2.iproute`` alone."""

from __future__ import annotations

from isobox.network.manager import NetworkManager
from isobox.network.models import Endpoint, NetworkInfo, PortMapping
from isobox.network.netns import create_netns, delete_netns

__all__ = ["Endpoint", "NetworkInfo", "NetworkManager", "PortMapping", "create_netns",
           "delete_netns"]
