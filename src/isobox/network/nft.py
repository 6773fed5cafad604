"""NAT and isolation rules in one nftables table, driven through ``nft -f -``.

The chains hold a fixed set of rules that look things up in sets and maps; everything
per-network or per-container is an *element*:

* ``pub_any`` / ``pub_addr``: published ports (``proto . port`` or ``addr . proto . port``
  → ``container ip . port``); DNAT in prerouting (traffic to a host address) and output
  (locally originated, including 127.0.0.1);
* ``bridges``, ``nat_nets``: masquerade of container subnets leaving through a non-isobox
  device, and of 127.0.0.0/8 sources DNATed into a bridge (needs ``route_localnet``);
* ``internal``, ``bridge_self``: no routing between isobox networks nor out of internal ones.

When the table is missing (first use, ``nft flush ruleset``, a reboot) a batch starts with
:func:`ensure_script`, which creates the table, sets, chains and fixed rules in the same
transaction; the table therefore exists only complete. Rewriting the rules on every batch
would be simpler but costs 15 ms of RCU grace periods per change. Deleting an element is
written ``add`` then ``delete`` in the same transaction, which makes it idempotent on
nft 1.0.6 (no ``destroy`` yet).
"""

from __future__ import annotations

import errno
import socket
import subprocess
from collections.abc import Iterable

from isobox.errors import SystemSetupError
from isobox.network.netlink import Netlink, attr_str

NFT = "/usr/sbin/nft"

_SETS = (
    ("map", "pub_any", "type inet_proto . inet_service : ipv4_addr . inet_service;"),
    ("map", "pub_addr",
     "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;"),
    ("set", "bridges", "type ifname;"),
    ("set", "internal", "type ifname;"),
    ("set", "bridge_self", "type ifname . ifname;"),
    ("set", "nat_nets", "type ipv4_addr; flags interval;"),
)

_CHAINS = {
    "prerouting": (
        "type nat hook prerouting priority dstnat; policy accept;",
        ["fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub_addr",
         "fib daddr type local dnat ip to meta l4proto . th dport map @pub_any"],
    ),
    "output": (
        "type nat hook output priority -100; policy accept;",
        ["fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub_addr",
         "fib daddr type local dnat ip to meta l4proto . th dport map @pub_any"],
    ),
    "postrouting": (
        "type nat hook postrouting priority srcnat; policy accept;",
        ["ip saddr 127.0.0.0/8 oifname @bridges masquerade",
         "ip saddr @nat_nets oifname != @bridges masquerade"],
    ),
    "forward": (
        "type filter hook forward priority filter; policy accept;",
        ["iifname @bridges oifname @bridges iifname . oifname != @bridge_self drop",
         "iifname @internal iifname . oifname != @bridge_self drop",
         "oifname @internal iifname . oifname != @bridge_self drop"],
    ),
}


def ensure_script(table: str) -> list[str]:
    lines = [f"add table ip {table}"]
    for kind, name, spec in _SETS:
        lines.append(f"add {kind} ip {table} {name} {{ {spec} }}")
    for chain, (spec, rules) in _CHAINS.items():
        lines.append(f"add chain ip {table} {chain} {{ {spec} }}")
        lines.append(f"flush chain ip {table} {chain}")
        lines.extend(f"add rule ip {table} {chain} {rule}" for rule in rules)
    return lines


def _quote(name: str) -> str:
    return f'"{name}"'


def network_elements(bridge: str, subnet: str, internal: bool) -> list[tuple[str, str]]:
    """(set, element) pairs that wire one network's bridge into the rules."""
    out = [("bridges", _quote(bridge)), ("bridge_self", f"{_quote(bridge)} . {_quote(bridge)}")]
    out.append(("internal", _quote(bridge)) if internal else ("nat_nets", subnet))
    return out


def port_element(host_ip: str, protocol: str, host_port: int, ip: str,
                 container_port: int) -> tuple[str, str, str]:
    """(map, key, value) of one published port; host_ip "" = every host address."""
    value = f"{ip} . {container_port}"
    if host_ip:
        return "pub_addr", f"{host_ip} . {protocol} . {host_port}", value
    return "pub_any", f"{protocol} . {host_port}", value


def port_elements(table: str) -> list[tuple[str, str, str]]:
    """The published-port elements the kernel holds in ``table``, as :func:`port_element`
    writes them; [] when the table is not there."""
    import json

    out: list[tuple[str, str, str]] = []
    for name in ("pub_any", "pub_addr"):
        proc = subprocess.run([NFT, "-j", "list", "map", "ip", table, name],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            continue
        try:
            objs = json.loads(proc.stdout).get("nftables", [])
        except (ValueError, AttributeError):
            continue
        for obj in objs:
            for key, value in (obj.get("map") or {}).get("elem") or []:
                out.append((name, " . ".join(str(k) for k in key["concat"]),
                            " . ".join(str(v) for v in value["concat"])))
    return out


class Batch:
    """One nft transaction: all of it applies, or none."""

    def __init__(self, table: str, *, create: bool = True) -> None:
        """``create=False``: for removals only; when the table is missing there is nothing
        to remove and the batch does nothing (rather than make a table to delete from)."""
        self.table = table
        exists = table_exists(table)
        self.noop = not exists and not create
        self.lines = [] if exists or self.noop else ensure_script(table)

    def add(self, set_name: str, element: str) -> None:
        if self.noop:
            return
        self.lines.append(f"add element ip {self.table} {set_name} {{ {element} }}")

    def remove(self, set_name: str, element: str, key: str | None = None) -> None:
        """Idempotent delete: ``element`` is the full element (key : value for maps)."""
        if self.noop:
            return
        self.add(set_name, element)
        self.lines.append(
            f"delete element ip {self.table} {set_name} {{ {key or element} }}")

    def add_port(self, elem: tuple[str, str, str]) -> None:
        self.add(elem[0], f"{elem[1]} : {elem[2]}")

    def remove_port(self, elem: tuple[str, str, str]) -> None:
        self.remove(elem[0], f"{elem[1]} : {elem[2]}", elem[1])

    def add_all(self, elems: Iterable[tuple[str, str]]) -> None:
        for s, e in elems:
            self.add(s, e)

    def remove_all(self, elems: Iterable[tuple[str, str]]) -> None:
        for s, e in elems:
            self.remove(s, e)

    def run(self) -> None:
        if self.lines:
            run_script(self.script())

    def start(self) -> subprocess.Popen[str] | None:
        return start_script(self.script()) if self.lines else None

    def script(self) -> str:
        return "\n".join(self.lines) + "\n"


NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_GETTABLE = 1
_NFTA_TABLE_NAME = 1


def table_exists(table: str) -> bool:
    """Ask the kernel over nfnetlink (0.1 ms, where ``nft list`` costs a process)."""
    body = bytes([socket.AF_INET, 0, 0, 0]) + attr_str(_NFTA_TABLE_NAME, table)  # nfgenmsg
    with Netlink(NETLINK_NETFILTER) as nl:
        try:
            nl.request(_NFNL_SUBSYS_NFTABLES << 8 | _NFT_MSG_GETTABLE, body)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise SystemSetupError(f"nftables: table ip {table}: {e.strerror}") from None
    return True


def start_script(script: str) -> subprocess.Popen[str]:
    """Start ``nft -f -`` on ``script``; :func:`finish` waits for it. Lets a caller overlap
    the kernel's RCU grace periods of element deletion with other work."""
    try:
        proc = subprocess.Popen([NFT, "-f", "-"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise SystemSetupError(f"cannot run {NFT}: {e.strerror} (install nftables)") from None
    assert proc.stdin is not None
    proc.stdin.write(script)
    proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    if proc.wait() != 0:
        msg = err.strip().splitlines()
        raise SystemSetupError(f"nft: {msg[0] if msg else f'exit status {proc.returncode}'}")


def run_script(script: str) -> None:
    finish(start_script(script))


def delete_table(table: str) -> None:
    """Remove the whole table; no error when it does not exist."""
    run_script(f"add table ip {table}\ndelete table ip {table}\n")
