"""IPAM and port-assignment logic without the kernel."""

from __future__ import annotations

import pytest

from isobox.errors import ConfigError, ConflictError
from isobox.network import ipam
from isobox.network.models import PortMapping
from isobox.network.ports import normalise


def net(text: str) -> ipam.Subnet:
    return ipam.parse_cidr(text)


def test_choose_subnet_default_first() -> None:
    assert ipam.choose_subnet([], default=True) == net("10.88.0.0/16")
    assert ipam.choose_subnet([]) == net("10.89.0.0/16")


def test_choose_subnet_skips_host_routes_and_networks() -> None:
    routes = [("0.0.0.0", 0, 254), ("10.88.4.0", 24, 254), ("127.0.0.0", 8, 255),
              ("10.90.0.0", 15, 254), ("10.88.0.1", 32, 255)]
    taken = ipam.host_routes(routes)
    assert taken == [net("10.88.4.0/24"), net("10.90.0.0/15")]      # default, local: ignored
    assert ipam.choose_subnet(taken, default=True) == net("10.89.0.0/16")
    assert ipam.choose_subnet([*taken, net("10.89.0.0/16")]) == net("10.92.0.0/16")
    # A host route covering all of 10/8 moves on to 172.16.
    assert ipam.choose_subnet([net("10.0.0.0/8")]) == net("172.16.0.0/16")


def test_choose_subnet_exhausted() -> None:
    with pytest.raises(ConflictError, match="non-overlapping IPv4 address pool"):
        ipam.choose_subnet([net("0.0.0.0/1"), net("128.0.0.0/1")])


@pytest.mark.parametrize("bad", ["10.0.0.0", "10.0.0/16", "10.0.0.256/24", "a.b.c.d/8",
                                 "10.0.0.0/40", "10.0.0.0/-1", ""])
def test_parse_cidr_rejects(bad: str) -> None:
    with pytest.raises(ConfigError, match=f"subnet: invalid CIDR address: {bad}"):
        ipam.parse_cidr(bad)


def test_parse_cidr_host_bits() -> None:
    with pytest.raises(ConfigError, match=r"it should be 10\.1\.0\.0/16"):
        ipam.parse_cidr("10.1.2.3/16")


def test_allocate_sequential_and_wraps() -> None:
    s = net("10.5.0.0/29")           # hosts .1-.6, gateway .1
    gw = ipam.gateway_of(s)
    a = ipam.allocate(s, gw, set(), 0)
    assert ipam.int_to_ip(a) == "10.5.0.2"
    b = ipam.allocate(s, gw, {a}, a)
    assert ipam.int_to_ip(b) == "10.5.0.3"
    # After the last address it wraps and skips what is in use.
    last = ipam.ip_to_int("10.5.0.6")
    assert ipam.int_to_ip(ipam.allocate(s, gw, {a}, last)) == "10.5.0.3"
    full = {ipam.ip_to_int(f"10.5.0.{i}") for i in range(2, 7)}
    with pytest.raises(ConflictError, match="no available IPv4 addresses"):
        ipam.allocate(s, gw, full, 0)


def test_port_normalise() -> None:
    assert normalise(PortMapping(80, host_ip="0.0.0.0")).host_ip == ""
    for bad, msg in [(PortMapping(0), "invalid container port"),
                     (PortMapping(80, host_port=70000), "invalid host port"),
                     (PortMapping(80, "sctp"), "invalid protocol"),
                     (PortMapping(80, host_ip="::1"), "IPv6"),
                     (PortMapping(80, host_ip="1.2.3"), "invalid IP address")]:
        with pytest.raises(ConfigError, match=msg):
            normalise(bad)
