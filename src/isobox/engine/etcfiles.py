"""``/etc/hostname``, ``/etc/hosts`` and ``/etc/resolv.conf`` as Docker writes them.

The files live in the container's directory and are bind-mounted over the image's. They are
rewritten in place (truncate + write), never replaced by rename: a bind mount pins the inode,
so a renamed-over file would no longer be what the container sees.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

HOSTS_HEADER = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
# Docker's fallback when the host only has loopback resolvers (unreachable from a netns).
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def write_in_place(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def hosts_text(*, hostname: str, ip: str = "", names: Iterable[str] = (),
               add_hosts: Iterable[tuple[str, str]] = (),
               peers: Iterable[tuple[str, Iterable[str]]] = (), host_network: bool = False
               ) -> str:
    """``ip`` (the container's own address) gets the last line: ``hostname`` and ``names``
    (its name and aliases); ``peers`` are (address, names) lines before it."""
    if host_network:
        try:
            with open("/etc/hosts") as f:
                base = f.read()
        except OSError:
            base = HOSTS_HEADER
        lines = [base.rstrip("\n")]
    else:
        lines = [HOSTS_HEADER.rstrip("\n")]
    for name, addr in add_hosts:
        lines.append(f"{addr}\t{name}")
    for addr, peer_names in peers:
        lines.append(f"{addr}\t{' '.join(peer_names)}")
    if ip and not host_network:
        lines.append(f"{ip}\t{' '.join(dict.fromkeys([hostname, *names]))}")
    return "\n".join(lines) + "\n"


def resolv_text(*, dns: Iterable[str] = (), search: Iterable[str] = (),
                options: Iterable[str] = (), host_network: bool = False,
                host_resolv: str = "/etc/resolv.conf") -> str:
    try:
        with open(host_resolv) as f:
            host = f.read()
    except OSError:
        host = ""
    if host_network and not (list(dns) or list(search) or list(options)):
        return host
    servers = list(dns)
    searches = list(search)
    opts = list(options)
    for line in host.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and len(parts) > 1 and not dns:
            addr = parts[1]
            if host_network or not _is_loopback(addr):
                servers.append(addr)
        elif parts[0] == "search" and not searches:
            searches = parts[1:]
        elif parts[0] == "options" and not opts:
            opts = parts[1:]
    if not servers:
        servers = list(FALLBACK_NAMESERVERS)
    out = [f"nameserver {s}" for s in servers]
    if searches:
        out.append("search " + " ".join(searches))
    if opts:
        out.append("options " + " ".join(opts))
    return "\n".join(out) + "\n"


def _is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"


def host_hostname() -> str:
    return socket.gethostname()
