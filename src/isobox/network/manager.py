"""NetworkManager: Docker's bridge driver, IPAM and port publishing, without a daemon.

State lives in one file under ``state_dir``; every mutation holds an flock on
``state_dir/lock``, so any number of CLI processes may call in at once. Kernel objects
(bridges, veths, nft elements) are derived from that state: bridges are created lazily
on the first connect, and a reboot (which drops all of them) heals on the next one.
"""

from __future__ import annotations

import builtins
import os
import time
from dataclasses import asdict
from typing import Any

from isobox.errors import ConfigError, ConflictError, NotFoundError, SystemSetupError
from isobox.network import devices, ipam, nft
from isobox.network import ports as portalloc
from isobox.network.models import Endpoint, NetworkInfo, PortMapping
from isobox.network.netlink import Netlink
from isobox.network.state import State, StateFile

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _check_name(name: str) -> None:
    """moby's rule: ``^[a-zA-Z0-9][a-zA-Z0-9_.-]+$``."""
    if len(name) < 2 or not name[0].isalnum() or not name.isascii() or \
            not set(name) <= _NAME_CHARS:
        raise ConfigError("name", f'invalid network name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-]'
                          " are allowed")


class NetworkManager:
    def __init__(self, state_dir: str, *, bridge_prefix: str = "isobox",
                 nft_table: str = "isobox", default_network_name: str = "bridge",
                 default_bridge: str = "isobox0") -> None:
        if not 1 <= len(bridge_prefix) <= 12 or not bridge_prefix.isalnum():
            raise ConfigError("bridge_prefix", f'"{bridge_prefix}": want 1-12 letters or digits')
        if not 1 <= len(default_bridge) <= devices.IFNAMSIZ:
            raise ConfigError("default_bridge", f'"{default_bridge}": want 1-15 characters')
        self.store = StateFile(state_dir)
        self.prefix = bridge_prefix
        self.veth_tag = devices.veth_tag(bridge_prefix)
        self.table = nft_table
        self.default_name = default_network_name
        self.default_bridge = default_bridge
        self.predefined = (default_network_name, "host", "none")

    # -- state helpers -----------------------------------------------------------------

    def _read(self) -> State:
        st = self.store.load()
        if self.default_name not in st["networks"]:
            with self.store.locked() as st:
                if self._add_predefined(st):
                    self.store.save(st)
        return st

    def _add_predefined(self, st: State) -> bool:
        nets: dict[str, Any] = st["networks"]
        if self.default_name in nets:
            return False
        subnet = ipam.choose_subnet(self._taken(st), default=True)
        stamp = _now()
        nets[self.default_name] = asdict(NetworkInfo(
            _new_id(), self.default_name, "bridge", ipam.format_subnet(subnet),
            ipam.int_to_ip(ipam.gateway_of(subnet)), self.default_bridge, created=stamp))
        nets.setdefault("host", asdict(NetworkInfo(_new_id(), "host", "host", created=stamp)))
        nets.setdefault("none", asdict(NetworkInfo(_new_id(), "none", "null", created=stamp)))
        for d in nets.values():
            d.pop("containers", None)
        return True

    def _taken(self, st: State, skip: str = "") -> list[ipam.Subnet]:
        with Netlink() as nl:
            taken = ipam.host_routes(nl.ipv4_routes())
        # Routes of our own bridges equal our subnets, which are listed anyway.
        taken += [ipam.parse_cidr(d["subnet"]) for n, d in st["networks"].items()
                  if d["subnet"] and n != skip]
        return taken

    def _info(self, st: State, name: str) -> NetworkInfo:
        d = dict(st["networks"][name])
        eps = st["endpoints"].get(name, {})
        d["containers"] = eps
        return NetworkInfo.from_dict(d)

    def _find(self, st: State, name_or_id: str) -> str:
        nets: dict[str, Any] = st["networks"]
        if name_or_id in nets:
            return name_or_id
        if name_or_id:
            hits = [n for n, d in nets.items() if d["id"] == name_or_id]
            hits = hits or [n for n, d in nets.items() if d["id"].startswith(name_or_id)]
            if len(hits) == 1:
                return hits[0]
        raise NotFoundError(f"network {name_or_id} not found")

    # -- networks ----------------------------------------------------------------------

    def list(self) -> builtins.list[NetworkInfo]:
        st = self._read()
        return [self._info(st, n) for n in st["networks"]]

    def inspect(self, name_or_id: str) -> NetworkInfo:
        st = self._read()
        return self._info(st, self._find(st, name_or_id))

    def create(self, name: str, *, subnet: str = "", gateway: str = "", internal: bool = False,
               labels: dict[str, str] | None = None, driver: str = "bridge") -> NetworkInfo:
        _check_name(name)
        if driver != "bridge":
            raise ConfigError("driver", f'plugin "{driver}" not found')
        with self.store.locked() as st:
            self._add_predefined(st)
            if name in st["networks"]:
                raise ConflictError(f"network with name {name} already exists")
            if subnet:
                net = ipam.parse_cidr(subnet)
                ipam.check_usable(net)
                for other, d in st["networks"].items():
                    if d["subnet"] and ipam.overlaps(net, ipam.parse_cidr(d["subnet"])):
                        raise ConflictError(
                            f"subnet {ipam.format_subnet(net)} of network {name} overlaps "
                            f"subnet {d['subnet']} of network {other}")
            else:
                net = ipam.choose_subnet(self._taken(st))
            if gateway:
                gw = ipam.parse_ip(gateway, "gateway")
                if not ipam.contains(net, gw) or gw in (net[0], ipam.broadcast_of(net)):
                    raise ConfigError("gateway", f"no matching subnet for gateway {gateway}")
            else:
                gw = ipam.gateway_of(net)
            info = NetworkInfo(_new_id(), name, "bridge", ipam.format_subnet(net),
                               ipam.int_to_ip(gw), self._bridge_name(st), internal,
                               dict(labels or {}), _now())
            record = asdict(info)
            record.pop("containers")
            st["networks"][name] = record
            self.store.save(st)
        return info

    def _bridge_name(self, st: State) -> str:
        used = {d["bridge"] for d in st["networks"].values()}
        n = 1
        while f"{self.prefix}{n}" in used or devices.ifindex(f"{self.prefix}{n}"):
            n += 1
        return f"{self.prefix}{n}"

    def remove(self, name_or_id: str) -> None:
        with self.store.locked() as st:
            name = self._find(st, name_or_id)
            if name in self.predefined:
                raise ConflictError(f"{name} is a pre-defined network and cannot be removed")
            if st["endpoints"].get(name):
                raise ConflictError(f"network {name} has active endpoints")
            self._drop_bridge(st["networks"][name])
            del st["networks"][name]
            st["endpoints"].pop(name, None)
            st["last_ip"].pop(name, None)
            self.store.save(st)

    def _drop_bridge(self, net: dict[str, Any]) -> None:
        with Netlink() as nl:
            nl.delete_link(net["bridge"])
        batch = nft.Batch(self.table, create=False)
        batch.remove_all(nft.network_elements(net["bridge"], net["subnet"], net["internal"]))
        batch.run()

    # -- endpoints ---------------------------------------------------------------------

    def connect(self, network: str, container_id: str, netns_path: str, *, name: str,
                aliases: builtins.list[str] | None = None, ip: str = "") -> Endpoint:
        with self.store.locked() as st:
            if self._add_predefined(st):
                self.store.save(st)
            net_name = self._find(st, network)
            net = st["networks"][net_name]
            if net["driver"] != "bridge":
                raise ConflictError(f"container cannot be connected to network {net_name}: "
                                    f"driver {net['driver']} has no endpoints")
            eps: dict[str, Any] = st["endpoints"].setdefault(net_name, {})
            if container_id in eps:
                raise ConflictError(f"endpoint with name {eps[container_id]['name']} already "
                                    f"exists in network {net_name}")
            if name and net_name != self.default_name and \
                    any(e["name"] == name for e in eps.values()):
                raise ConflictError(f"endpoint with name {name} already exists in network "
                                    f"{net_name}")
            subnet = ipam.parse_cidr(net["subnet"])
            gw = ipam.ip_to_int(net["gateway"])
            used = {ipam.ip_to_int(e["ip"]) for e in eps.values()}
            if ip:
                addr = ipam.parse_ip(ip, "ip")
                ipam.check_static(subnet, gw, used, addr, ip)
            else:
                addr = ipam.allocate(subnet, gw, used, st["last_ip"].get(net_name, 0))
            mine = [e for n in st["endpoints"].values() for c, e in n.items()
                    if c == container_id]
            taken_if = {e["ifname"] for e in mine}
            ifname = next(f"eth{i}" for i in range(len(taken_if) + 1)
                          if f"eth{i}" not in taken_if)
            mac = devices.mac_for(addr)
            ep = Endpoint(net_name, container_id, name, ipam.int_to_ip(addr), subnet[1],
                          net["gateway"], devices.format_mac(mac), ifname,
                          devices.host_veth_name(self.veth_tag, container_id, net["id"]),
                          tuple(aliases or ()), net["id"])
            broadcast = ipam.int_to_ip(ipam.broadcast_of(subnet))
            with Netlink() as nl:
                br_index = self._bridge_up(nl, net, subnet, broadcast)
                devices.create_endpoint(nl, ep.host_ifname, br_index, netns_path, ifname, mac,
                                        ep.ip, ep.prefixlen, broadcast,
                                        None if mine else ep.gateway)
                try:
                    eps[container_id] = asdict(ep)
                    st["last_ip"][net_name] = addr
                    self.store.save(st)
                except BaseException:
                    nl.delete_link(ep.host_ifname)
                    raise
        return ep

    def _bridge_up(self, nl: Netlink, net: dict[str, Any], subnet: ipam.Subnet,
                   broadcast: str) -> int:
        """The bridge's index, creating the device and its nft elements when missing (first
        connect, after a reboot, after ``nft flush ruleset``)."""
        index = devices.ifindex(net["bridge"])
        if index and nft.table_exists(self.table):
            return index
        created = False
        if not index:
            index, created = devices.ensure_bridge(nl, net["bridge"], net["gateway"],
                                                   subnet[1], broadcast)
        batch = nft.Batch(self.table)
        batch.add_all(nft.network_elements(net["bridge"], net["subnet"], net["internal"]))
        try:
            batch.run()
        except SystemSetupError:
            if created:
                nl.delete_link(net["bridge"])
            raise
        return index

    def disconnect(self, network: str, container_id: str, netns_path: str = "", *,
                   keep_link: bool = False) -> None:
        """Detach the container (idempotent): delete the veth (which removes its peer in
        ``netns_path`` too), free the IP, drop the port rules on this network.

        ``keep_link=True`` leaves the veth for the kernel to destroy with the netns, which
        the caller deletes next: that happens asynchronously, while deleting a link here
        waits for RCU grace periods (about 17 ms). A later connect of the same container
        replaces a leftover link."""
        with self.store.locked() as st:
            try:
                net_name = self._find(st, network)
            except NotFoundError:
                return
            net = st["networks"][net_name]
            ep = st["endpoints"].get(net_name, {}).pop(container_id, None)
            host_if = ep["host_ifname"] if ep else \
                devices.host_veth_name(self.veth_tag, container_id, net["id"])
            batch = self._port_removal(st, container_id, lambda e: e["network"] == net_name)
            pending = batch.start() if batch else None
            try:
                if not keep_link:
                    with Netlink() as nl:
                        nl.delete_link(host_if)
            finally:
                if pending:
                    nft.finish(pending)
            if ep is not None or batch is not None:
                self.store.save(st)

    # -- ports -------------------------------------------------------------------------

    def publish(self, container_id: str, endpoint: Endpoint,
                ports: builtins.list[PortMapping]) -> builtins.list[PortMapping]:
        with self.store.locked() as st:
            taken = [PortMapping.from_dict(e) for lst in st["ports"].values() for e in lst]
            resolved, last = portalloc.assign(ports, taken, st["last_port"])
            if not resolved:
                return []
            batch = nft.Batch(self.table)
            net = st["networks"].get(endpoint.network)
            if net and net["bridge"]:
                batch.add_all(nft.network_elements(net["bridge"], net["subnet"],
                                                   net["internal"]))
            for p in resolved:
                batch.add_port(nft.port_element(p.host_ip, p.protocol, p.host_port,
                                                endpoint.ip, p.container_port))
            try:
                batch.run()
            except SystemSetupError as e:
                if "File exists" not in str(e):
                    raise
                self._drop_unrecorded_ports(st)  # a killed CLI's element holds the port
                batch.run()
            entries = st["ports"].setdefault(container_id, [])
            entries.extend({"network": endpoint.network, "ip": endpoint.ip, **asdict(p)}
                           for p in resolved)
            st["last_port"] = last
            self.store.save(st)
        return resolved

    def unpublish(self, container_id: str) -> None:
        with self.store.locked() as st:
            if st["ports"].get(container_id):
                self._remove_ports(st, container_id, lambda e: True)
                self.store.save(st)

    def _remove_ports(self, st: State, container_id: str, which: Any) -> None:
        batch = self._port_removal(st, container_id, which)
        if batch:
            batch.run()

    def _port_removal(self, st: State, container_id: str, which: Any) -> nft.Batch | None:
        """Forget the container's ports selected by ``which``; the batch deleting their
        elements (None when there are none)."""
        entries: builtins.list[dict[str, Any]] = st["ports"].get(container_id, [])
        gone = [e for e in entries if which(e)]
        if not gone:
            return None
        batch = nft.Batch(self.table, create=False)
        for e in gone:
            batch.remove_port(nft.port_element(e["host_ip"], e["protocol"], e["host_port"],
                                               e["ip"], e["container_port"]))
        rest = [e for e in entries if not which(e)]
        if rest:
            st["ports"][container_id] = rest
        else:
            st["ports"].pop(container_id, None)
        return batch

    def published(self, container_id: str) -> builtins.list[PortMapping]:
        return [PortMapping.from_dict(e) for e in self.store.load()["ports"].get(container_id, [])]

    # -- name resolution ---------------------------------------------------------------

    def hosts_entries(self, network: str) -> builtins.list[tuple[str, builtins.list[str]]]:
        """(ip, names) of every endpoint on a user-defined network, for /etc/hosts; the
        default bridge resolves no names (Docker's behaviour)."""
        st = self._read()
        name = self._find(st, network)
        if name in self.predefined:
            return []
        out = []
        for cid, e in st["endpoints"].get(name, {}).items():
            names = [n for n in (e["name"], *e.get("aliases", ()), cid[:12]) if n]
            out.append((e["ip"], list(dict.fromkeys(names))))
        return out

    def peers(self, container_id: str) -> set[str]:
        """Containers sharing a user-defined network with ``container_id``."""
        st = self.store.load()
        out: set[str] = set()
        for name, eps in st["endpoints"].items():
            if name not in self.predefined and container_id in eps:
                out.update(eps)
        out.discard(container_id)
        return out

    def endpoints(self, container_id: str) -> builtins.list[Endpoint]:
        st = self.store.load()
        return [Endpoint.from_dict(eps[container_id]) for eps in st["endpoints"].values()
                if container_id in eps]

    # -- housekeeping ------------------------------------------------------------------

    def cleanup_stale(self, live_container_ids: set[str]) -> builtins.list[str]:
        """Drop endpoints, veths, port rules and leases of containers not in the set, and
        veths of ours that no state refers to (a crash mid-connect). Returns the ids."""
        removed: set[str] = set()
        with self.store.locked() as st, Netlink() as nl:
            for eps in st["endpoints"].values():
                for cid in [c for c in eps if c not in live_container_ids]:
                    nl.delete_link(eps.pop(cid)["host_ifname"])
                    removed.add(cid)
            for cid in [c for c in st["ports"] if c not in live_container_ids]:
                self._remove_ports(st, cid, lambda e: True)
                removed.add(cid)
            known = {e["host_ifname"] for eps in st["endpoints"].values() for e in eps.values()}
            for link in devices.list_links(self.veth_tag):
                if link not in known and len(link) == devices.IFNAMSIZ:
                    nl.delete_link(link)
            self._drop_unrecorded_ports(st)
            self.store.save(st)
        return sorted(removed)

    def _drop_unrecorded_ports(self, st: State) -> None:
        """Port elements in the kernel that no state records: a CLI killed between adding
        them and saving the state. Left, the host port could never be published again."""
        recorded = {nft.port_element(e["host_ip"], e["protocol"], e["host_port"], e["ip"],
                                     e["container_port"])
                    for entries in st["ports"].values() for e in entries}
        def norm(e: tuple[str, str, str]) -> tuple[str, ...]:
            return (e[0], *(x.strip().lower() for x in f"{e[1]} . {e[2]}".split(".")))

        known = {norm(e) for e in recorded}
        # only elements read back in the form we write (numbers, tcp/udp): anything printed
        # otherwise (a service name, another nft's spelling) is left alone, never dropped
        def ours(e: tuple[str, str, str]) -> bool:
            key, value = e[1].split(" . "), e[2].split(" . ")
            return (len(key) >= 2 and key[-2] in ("tcp", "udp") and key[-1].isdigit()
                    and value[-1].isdigit())

        stray = [e for e in nft.port_elements(self.table) if norm(e) not in known and ours(e)]
        if stray:
            batch = nft.Batch(self.table, create=False)
            for elem in stray:
                batch.remove_port(elem)
            batch.run()

    def teardown(self) -> None:
        """Remove every device and rule this manager made (veths, bridges, the nft table)
        and forget all endpoints and ports; network definitions stay."""
        with self.store.locked() as st, Netlink() as nl:
            for eps in st["endpoints"].values():
                for e in eps.values():
                    nl.delete_link(e["host_ifname"])
            for net in st["networks"].values():
                if net["bridge"]:
                    nl.delete_link(net["bridge"])
            nft.delete_table(self.table)
            st["endpoints"], st["ports"] = {}, {}
            self.store.save(st)


def _new_id() -> str:
    return os.urandom(32).hex()


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
