"""A minimal rtnetlink client: links, addresses and routes of one network namespace.

pyroute2 would do this, but ``import pyroute2.iproute`` imports the whole package (about
220 ms here, see docs in the package ``__init__``); the few messages isobox needs are a
couple of ``struct`` layouts. A socket belongs to the netns it was created in, so a socket
made inside a container's netns (see :mod:`isobox.network.netns`) configures that netns.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

# linux/netlink.h
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3

# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15

# linux/if_link.h, linux/if_addr.h, linux/veth.h
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4
IFF_UP = 0x1

_HDR = struct.Struct("=IHHII")          # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")      # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")       # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")    # rtmsg
_RTA = struct.Struct("=HH")


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    raw = _RTA.pack(_RTA.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            break
        out[kind & 0x3FFF] = data[offset + _RTA.size:offset + length]
        offset += (length + 3) & ~3
    return out


class Netlink:
    """A netlink socket (NETLINK_ROUTE unless told) in the calling thread's netns."""

    def __init__(self, protocol: int = socket.NETLINK_ROUTE) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  protocol)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self.seq += 1
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, flags | NLM_F_REQUEST,
                                 self.seq, 0) + body)
        return self.seq

    def _replies(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """(type, payload) of each reply to ``seq`` until DONE or the ACK; raises on error."""
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, _flags, mseq, _pid = _HDR.unpack_from(data, offset)
                payload = data[offset + _HDR.size:offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                yield kind, payload

    def request(self, kind: int, body: bytes, flags: int = 0) -> None:
        """Send one request and wait for its acknowledgement (OSError with the errno)."""
        for _ in self._replies(self._send(kind, flags | NLM_F_ACK, body)):
            pass

    def dump(self, kind: int, body: bytes) -> list[bytes]:
        return [p for _, p in self._replies(self._send(kind, NLM_F_DUMP, body))]

    # -- links -------------------------------------------------------------------------

    def create_bridge(self, name: str, mac: bytes) -> None:
        info = attr(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"))
        self.request(RTM_NEWLINK, ifinfomsg(flags=IFF_UP, change=IFF_UP)
                     + attr_str(IFLA_IFNAME, name) + attr(IFLA_ADDRESS, mac) + info,
                     NLM_F_CREATE | NLM_F_EXCL)

    def create_veth(self, host: str, master: int, peer: str, peer_netns_fd: int,
                    peer_mac: bytes) -> None:
        """A veth pair: ``host`` up and enslaved to ``master``; ``peer`` born in the netns."""
        peer_msg = (ifinfomsg() + attr_str(IFLA_IFNAME, peer)
                    + attr_u32(IFLA_NET_NS_FD, peer_netns_fd) + attr(IFLA_ADDRESS, peer_mac))
        info = attr(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth")
                    + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg)))
        self.request(RTM_NEWLINK, ifinfomsg(flags=IFF_UP, change=IFF_UP)
                     + attr_str(IFLA_IFNAME, host) + attr_u32(IFLA_MASTER, master) + info,
                     NLM_F_CREATE | NLM_F_EXCL)

    def set_up(self, name: str) -> None:
        self.request(RTM_NEWLINK, ifinfomsg(flags=IFF_UP, change=IFF_UP)
                     + attr_str(IFLA_IFNAME, name))

    def delete_link(self, name: str) -> bool:
        """Delete a link by name; False when there was none."""
        try:
            self.request(RTM_DELLINK, ifinfomsg() + attr_str(IFLA_IFNAME, name))
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    # -- addresses and routes ----------------------------------------------------------

    def add_address(self, index: int, addr: str, prefixlen: int, broadcast: str = "") -> None:
        raw = socket.inet_aton(addr)
        body = (_IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw))
        if broadcast:
            body += attr(IFA_BROADCAST, socket.inet_aton(broadcast))
        self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_REPLACE)

    def add_default_route(self, gateway: str, index: int) -> None:
        body = (_RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                            RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
                + attr(RTA_GATEWAY, socket.inet_aton(gateway)) + attr_u32(RTA_OIF, index))
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)

    def ipv4_routes(self) -> list[tuple[str, int, int]]:
        """(destination, prefix length, table) of every IPv4 route, all tables."""
        out = []
        for payload in self.dump(RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0,
                                                           0, 0)):
            _fam, dst_len, _s, _t, table, _p, _sc, _ty, _f = _RTMSG.unpack_from(payload)
            attrs = parse_attrs(payload, _RTMSG.size)
            if RTA_TABLE in attrs:
                (table,) = struct.unpack("=I", attrs[RTA_TABLE])
            dst = socket.inet_ntoa(attrs[RTA_DST]) if RTA_DST in attrs else "0.0.0.0"
            out.append((dst, dst_len, table))
        return out
