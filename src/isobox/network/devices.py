"""Bridges and veth pairs on the host, the container side of a veth, and their sysctls."""

from __future__ import annotations

import os
import socket
import zlib

from isobox.errors import SystemSetupError
from isobox.network.netlink import Netlink
from isobox.network.netns import in_netns

IFNAMSIZ = 15


def ifindex(name: str) -> int:
    """The index of ``name`` in the calling thread's netns; 0 when there is no such link."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise SystemSetupError(f"sysctl {key}={value}: {e.strerror}") from None


def ensure_bridge(nl: Netlink, name: str, gateway: str, prefixlen: int,
                  broadcast: str) -> tuple[int, bool]:
    """Create (or repair) bridge ``name`` with the gateway address, up, forwarding on, and
    ``route_localnet`` so DNATed 127.0.0.1 traffic may leave through it.
    Returns (ifindex, created)."""
    index = ifindex(name)
    created = not index
    try:
        if created:
            # A fixed MAC: a bridge otherwise takes its lowest port's, changing as
            # containers come and go (and peers' ARP caches go stale).
            nl.create_bridge(name, bytes([0x02]) + os.urandom(5))
            index = ifindex(name)
        nl.add_address(index, gateway, prefixlen, broadcast)
        nl.set_up(name)
    except OSError as e:
        if created:
            nl.delete_link(name)
        raise SystemSetupError(f"bridge {name}: {e.strerror}") from None
    write_sysctl(f"net.ipv4.conf.{name}.route_localnet", "1")
    write_sysctl("net.ipv4.ip_forward", "1")
    return index, created


def veth_tag(prefix: str) -> str:
    """The start of every host veth name of a bridge prefix: ``<prefix>v``, or for prefixes
    over 8 characters its first 4 and a hash of the rest, leaving 6 characters of hash."""
    if len(prefix) <= 8:
        return f"{prefix}v"
    return f"{prefix[:4]}{zlib.crc32(prefix.encode()):08x}"[:8] + "v"


def host_veth_name(tag: str, container_id: str, network_id: str) -> str:
    """``<tag><hash of container and network>``, exactly 15 characters: stable, so a
    crashed connect can be undone."""
    digest = f"{zlib.crc32(f'{container_id}/{network_id}'.encode()):08x}"
    digest += f"{zlib.crc32(f'{network_id}/{container_id}'.encode()):08x}"
    return tag + digest[:IFNAMSIZ - len(tag)]


def mac_for(ip: int) -> bytes:
    """A locally administered MAC derived from the IP (moby's 02:42:<ip>)."""
    return bytes([0x02, 0x42]) + ip.to_bytes(4, "big")


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def create_endpoint(nl: Netlink, host_ifname: str, bridge_index: int, netns_path: str,
                    ifname: str, mac: bytes, ip: str, prefixlen: int, broadcast: str,
                    gateway: str | None) -> None:
    """A veth pair: the host side on the bridge, ``ifname`` in the netns with its address
    (and the default route via ``gateway`` when given). All or nothing."""
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SystemSetupError(f"network namespace {netns_path}: {e.strerror}") from None
    try:
        try:
            nl.create_veth(host_ifname, bridge_index, ifname, fd, mac)
        except FileExistsError:
            # The name is unique to this container and network, and the caller holds the
            # lock: a leftover of a disconnect(keep_link=True) whose netns is still dying.
            nl.delete_link(host_ifname)
            nl.create_veth(host_ifname, bridge_index, ifname, fd, mac)
    except OSError as e:
        raise SystemSetupError(f"veth {host_ifname} into {netns_path}: {e.strerror}") from None
    finally:
        os.close(fd)

    def inside() -> None:
        with Netlink() as cnl:
            index = socket.if_nametoindex(ifname)
            cnl.add_address(index, ip, prefixlen, broadcast)
            cnl.set_up(ifname)
            if gateway:
                cnl.add_default_route(gateway, index)

    try:
        in_netns(netns_path, inside)
    except BaseException as e:
        nl.delete_link(host_ifname)
        if isinstance(e, OSError):
            raise SystemSetupError(f"configure {ifname} in {netns_path}: {e.strerror}") from None
        raise


def list_links(prefix: str) -> list[str]:
    """Host links whose name starts with ``prefix``."""
    return [name for _, name in socket.if_nameindex() if name.startswith(prefix)]
