"""IPv4 address management: parse CIDRs, choose free subnets, lease addresses. Pure logic.

Addresses are handled as integers (the ``ipaddress`` module costs 4 ms to import, paid on
every ``isobox run``)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator

from isobox.errors import ConfigError, ConflictError

Subnet = tuple[int, int]            # (network address as int, prefix length)

DEFAULT_SUBNET = "10.88.0.0/16"


def ip_to_int(text: str) -> int:
    """Dotted quad to int; ValueError when ``text`` is not exactly one."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise ValueError(text)
    nums = [int(p) for p in parts]
    if any(n > 255 for n in nums):
        raise ValueError(text)
    return int(struct.unpack("!I", bytes(nums))[0])


def int_to_ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", value))


def mask(prefixlen: int) -> int:
    return (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF


def parse_cidr(text: str, where: str = "subnet") -> Subnet:
    """``10.1.0.0/16`` to a Subnet; host bits must be zero (moby's rule)."""
    addr, sep, plen = text.partition("/")
    try:
        if not sep or not plen.isdigit() or not 0 <= int(plen) <= 32:
            raise ValueError(text)
        net, prefixlen = ip_to_int(addr), int(plen)
    except ValueError:
        raise ConfigError(where, f"invalid CIDR address: {text}") from None
    if net & ~mask(prefixlen) & 0xFFFFFFFF:
        fixed = format_subnet((net & mask(prefixlen), prefixlen))
        raise ConfigError(where, f"invalid subnet {text}: it should be {fixed}")
    if prefixlen > 30:
        raise ConfigError(where, f"subnet {text} is too small: at least a /30 is needed")
    return net, prefixlen


def parse_ip(text: str, where: str) -> int:
    try:
        return ip_to_int(text)
    except ValueError:
        raise ConfigError(where, f"invalid IP address: {text}") from None


def format_subnet(subnet: Subnet) -> str:
    return f"{int_to_ip(subnet[0])}/{subnet[1]}"


def contains(subnet: Subnet, ip: int) -> bool:
    return ip & mask(subnet[1]) == subnet[0]


def overlaps(a: Subnet, b: Subnet) -> bool:
    plen = min(a[1], b[1])
    return a[0] & mask(plen) == b[0] & mask(plen)


#: Ranges a bridge must not take: its address would shadow the host's own (loopback) or
#: special-purpose addresses (RFC 6890).
RESERVED = (("0.0.0.0/8", "this-network"), ("127.0.0.0/8", "loopback"),
            ("169.254.0.0/16", "link-local"), ("224.0.0.0/4", "multicast"),
            ("240.0.0.0/4", "reserved"))


def check_usable(net: Subnet, where: str = "subnet") -> None:
    """A subnet asked for by name may be any private or public range, as Docker's, but not
    a special-purpose one."""
    for text, what in RESERVED:
        if overlaps(net, parse_cidr(text)):
            raise ConfigError(where, f"subnet {format_subnet(net)} overlaps the {what} "
                              f"range {text}")


def candidate_subnets(default: bool) -> Iterator[Subnet]:
    """Podman's order: 10.88.0.0/16 for the default network, then 10.89-10.255 /16, then
    172.16-172.31 /16 and 192.168.x.0/24."""
    if default:
        yield parse_cidr(DEFAULT_SUBNET)
    for b in range(89, 256):
        yield (10 << 24) | (b << 16), 16
    for b in range(16, 32):
        yield (172 << 24) | (b << 16), 16
    for c in range(256):
        yield (192 << 24) | (168 << 16) | (c << 8), 24


def choose_subnet(taken: Iterable[Subnet], default: bool = False) -> Subnet:
    """The first candidate overlapping none of ``taken`` (host routes, other networks)."""
    used = list(taken)
    for cand in candidate_subnets(default):
        if not any(overlaps(cand, t) for t in used):
            return cand
    raise ConflictError("could not find an available, non-overlapping IPv4 address pool "
                        "among the defaults to assign to the network")


def host_routes(routes: Iterable[tuple[str, int, int]]) -> list[Subnet]:
    """Routes that make a subnet unusable: every IPv4 route except defaults and the local
    table (which only repeats the host's own addresses and loopback)."""
    out = []
    for dst, plen, table in routes:
        if plen == 0 or table == 255:
            continue
        out.append((ip_to_int(dst) & mask(plen), plen))
    return out


def gateway_of(subnet: Subnet) -> int:
    return subnet[0] + 1


def broadcast_of(subnet: Subnet) -> int:
    return subnet[0] | (~mask(subnet[1]) & 0xFFFFFFFF)


def allocate(subnet: Subnet, gateway: int, used: set[int], last: int) -> int:
    """The next free host address after ``last`` (wrapping), skipping the network,
    broadcast and gateway addresses, like libnetwork's sequential allocator."""
    first, end = subnet[0] + 1, broadcast_of(subnet) - 1
    size = end - first + 1
    start = last + 1 if first <= last < end else first
    for i in range(size):
        ip = first + (start - first + i) % size
        if ip != gateway and ip not in used:
            return ip
    raise ConflictError(f"no available IPv4 addresses on network with subnet "
                        f"{format_subnet(subnet)}")


def check_static(subnet: Subnet, gateway: int, used: set[int], ip: int, text: str) -> None:
    if not contains(subnet, ip) or ip in (subnet[0], broadcast_of(subnet)):
        raise ConfigError("ip", f"no configured subnet contains IP address {text}")
    if ip == gateway or ip in used:
        raise ConflictError(f"Address already in use: {text}")
