"""Host ports for publishing: validation, conflicts, and Docker's ephemeral allocation."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from isobox.errors import ConfigError, ConflictError
from isobox.network.ipam import parse_ip
from isobox.network.models import PortMapping

__all__ = ["PortMapping", "assign", "bind_free", "normalise"]

EPHEMERAL_FIRST = 32768          # Docker's (and Linux's default) ephemeral range
EPHEMERAL_LAST = 60999


def normalise(p: PortMapping) -> PortMapping:
    """Check one mapping; "0.0.0.0" host_ip becomes "" (every address)."""
    where = f"ports: {p.host_ip + ':' if p.host_ip else ''}{p.host_port}:{p.container_port}"
    if p.protocol not in ("tcp", "udp"):
        raise ConfigError(where, f'invalid protocol "{p.protocol}": want tcp or udp')
    if not 1 <= p.container_port <= 65535:
        raise ConfigError(where, f"invalid container port: {p.container_port}")
    if not 0 <= p.host_port <= 65535:
        raise ConfigError(where, f"invalid host port: {p.host_port}")
    host_ip = "" if p.host_ip in ("", "0.0.0.0") else p.host_ip
    if host_ip:
        if ":" in host_ip:
            raise ConfigError(where, f"IPv6 host address {host_ip} is not supported")
        parse_ip(host_ip, where)
    return PortMapping(p.container_port, p.protocol, host_ip, p.host_port)


def _clash(a: PortMapping, b: PortMapping) -> bool:
    return (a.protocol == b.protocol and a.host_port == b.host_port
            and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip))


def allocated_error(p: PortMapping) -> ConflictError:
    return ConflictError(f"Bind for {p.host_ip or '0.0.0.0'}:{p.host_port} failed: "
                         "port is already allocated")


def bind_free(p: PortMapping) -> bool:
    """Whether a host process could bind the port now (nobody else holds it)."""
    kind = socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            # Ignore TIME_WAIT leftovers; a listener still makes bind fail.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((p.host_ip or "0.0.0.0", p.host_port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            if e.errno == errno.EADDRNOTAVAIL:
                raise ConfigError("ports", f"listen {p.protocol}4 {p.host_ip}:{p.host_port}: "
                                  "bind: cannot assign requested address") from None
            raise
    return True


def assign(wanted: Iterable[PortMapping], taken: list[PortMapping],
           last: int) -> tuple[list[PortMapping], int]:
    """Host ports for ``wanted`` given the ports isobox already published (``taken``);
    returns the resolved mappings and the last ephemeral port handed out."""
    out: list[PortMapping] = []
    for raw in wanted:
        p = normalise(raw)
        if p.host_port:
            if any(_clash(p, t) for t in (*taken, *out)) or not bind_free(p):
                raise allocated_error(p)
        else:
            p, last = _ephemeral(p, [*taken, *out], last)
        out.append(p)
    return out, last


def _ephemeral(p: PortMapping, taken: list[PortMapping],
               last: int) -> tuple[PortMapping, int]:
    size = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
    start = last + 1 if EPHEMERAL_FIRST <= last < EPHEMERAL_LAST else EPHEMERAL_FIRST
    for i in range(size):
        port = EPHEMERAL_FIRST + (start - EPHEMERAL_FIRST + i) % size
        cand = PortMapping(p.container_port, p.protocol, p.host_ip, port)
        if not any(_clash(cand, t) for t in taken) and bind_free(cand):
            return cand, port
    raise ConflictError(f"no available ports for {p.protocol} {p.host_ip or '0.0.0.0'} in "
                        f"{EPHEMERAL_FIRST}-{EPHEMERAL_LAST}")
