"""Networking through the engine: the default bridge with NAT and published ports, user
networks where containers reach each other by name, and cleanup on stop."""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from engine_helpers import NET_PREFIX, Isobox

from harness import unique_id, wait_for

pytestmark = [pytest.mark.engine, pytest.mark.net]


def _get(port: int, path: str = "/index.html") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode(errors="replace")


def test_published_tcp_port_and_random_host_port(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "web", "-p", "127.0.0.1::80", "busybox", "sh", "-c",
           "echo hello-web > /tmp/index.html; exec httpd -f -p 80 -h /tmp")
    out = isobox("port", "web").stdout.strip()
    assert out.startswith("80/tcp -> 127.0.0.1:"), out
    port = int(out.rsplit(":", 1)[1])
    assert 32768 <= port <= 60999
    body = wait_for(lambda: "hello-web" in _get(port) and _get(port), what="http answer")
    assert "hello-web" in body
    ip = isobox.record("web")["network"]["endpoints"]["bridge"]["ip"]
    assert ip.startswith("10.")
    isobox("stop", "-t", "1", "web")
    with pytest.raises(OSError):
        _get(port)
    isobox("rm", "web")


def test_user_network_resolves_names(isobox: Isobox) -> None:
    isobox("network", "create", "appnet")
    try:
        isobox("run", "-d", "--name", "db", "--network", "appnet", "busybox", "sleep", "60")
        isobox("run", "-d", "--name", "api", "--network", "appnet", "busybox", "sleep", "60")
        hosts = isobox("exec", "api", "cat", "/etc/hosts").stdout
        assert " db" in hosts or "\tdb" in hosts
        ping = isobox("exec", "api", "ping", "-c", "1", "-W", "2", "db", check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # the default bridge does not resolve names
        isobox("run", "-d", "--name", "lonely", "busybox", "sleep", "60")
        hosts_words = isobox("exec", "lonely", "cat", "/etc/hosts").stdout.split()
        assert "db" not in hosts_words  # as a word: its own hex id may contain "db"
        p = isobox("network", "rm", "appnet", check=False)
        assert p.returncode != 0 and "active endpoints" in p.stderr
    finally:
        isobox.remove_all_containers()
        isobox("network", "rm", "appnet", check=False)


def test_network_none_and_host(isobox: Isobox) -> None:
    out = isobox("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert "lo" in out and "eth0" not in out
    with open("/proc/sys/kernel/hostname") as f:
        host_name = f.read().strip()
    out = isobox("run", "--rm", "--network", "host", "busybox", "hostname").stdout.strip()
    assert out == host_name


def _nft_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    return set(out.stdout.split("\n"))


def test_exit_hook_releases_ports_in_the_roots_own_table(isobox: Isobox) -> None:
    """The exit hook (started by conmon, without the caller's environment) uses the root's
    network names: its published port is released from the root's nft table, no default
    `isobox` table appears, and a restart by the policy gets its port again."""
    before = _nft_tables()
    port = _free_port()
    isobox("run", "-d", "--name", "brief", "-p", f"127.0.0.1:{port}:80", "busybox",
           "sh", "-c", "sleep 1")
    wait_for(lambda: isobox.record("brief")["status"] == "exited", timeout=15,
             what="the exit recorded by the exit hook")
    ours = {f"table ip {NET_PREFIX}"}
    assert _nft_tables() - before - ours == set()  # (`table ip isobox` before the fix)
    assert str(port) not in _nft_ruleset(NET_PREFIX)
    isobox("rm", "brief")
    isobox("run", "-d", "--name", "again", "--restart", "on-failure:1", "-p",
           f"127.0.0.1:{port}:80", "busybox", "sh", "-c", "sleep 1; exit 3")
    wait_for(lambda: isobox.record("again")["restart_count"] == 1
             and isobox.record("again")["status"] == "exited", timeout=20,
             what="one restart by the exit hook, then the end")
    assert _nft_tables() - before - ours == set()
    assert str(port) not in _nft_ruleset(NET_PREFIX)
    isobox("rm", "again")


def _nft_ruleset(table: str) -> str:
    return subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                          text=True).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- network connect / disconnect, own names, per-network aliases ------------------------
# Subnets of their own per run: other runs (other roots, other prefixes) may be up at once.
_Y = random.SystemRandom().randrange(1, 250)


@pytest.fixture
def nets(isobox: Isobox) -> Iterator[list[str]]:
    """Two user networks (10.234.Y.0/24, 10.235.Y.0/24); every container goes after."""
    names = [unique_id("net"), unique_id("net")]
    isobox("network", "create", "--subnet", f"10.234.{_Y}.0/24", names[0])
    isobox("network", "create", "--subnet", f"10.235.{_Y}.0/24", names[1])
    try:
        yield names
    finally:
        isobox.remove_all_containers()
        for n in names:
            isobox("network", "rm", n, check=False)


def _networks(isobox: Isobox, name: str) -> dict[str, Any]:
    doc = json.loads(isobox("inspect", name).stdout)[0]
    return dict(doc["NetworkSettings"]["Networks"])


def _resolves(isobox: Isobox, container: str, target: str) -> bool:
    p = isobox("exec", container, "ping", "-c", "1", "-W", "2", target, check=False)
    return p.returncode == 0


def _links(isobox: Isobox, name: str) -> list[str]:
    out = isobox("exec", name, "ip", "-o", "link").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def test_disconnect_from_the_last_network_keeps_a_namespace(isobox: Isobox,
                                                            nets: list[str]) -> None:
    """Docker keeps the sandbox: the container runs with only lo, starts again, and can be
    connected again, running or stopped. Its own /etc/hosts forgets the peers it left
    (before the fix: mode "none", start failed on the missing netns, connect refused)."""
    net = nets[0]
    a, peer = unique_id("a"), unique_id("peer")
    isobox("run", "-d", "--name", peer, "--network", net, "busybox", "sleep", "300")
    isobox("run", "-d", "--name", a, "--network", net, "busybox", "sleep", "300")
    assert peer in isobox("exec", a, "cat", "/etc/hosts").stdout
    isobox("network", "disconnect", net, a)
    assert _links(isobox, a) == ["lo"]
    assert peer not in isobox("exec", a, "cat", "/etc/hosts").stdout
    assert a not in isobox("exec", peer, "cat", "/etc/hosts").stdout
    assert _networks(isobox, a) == {}
    assert isobox("inspect", "-f", "{{.HostConfig.NetworkMode}}", a).stdout.strip() == net
    isobox("stop", "-t", "0", a)
    isobox("start", a)
    assert _links(isobox, a) == ["lo"]
    isobox("network", "connect", net, a)  # running
    assert _resolves(isobox, a, peer) and _resolves(isobox, peer, a)
    isobox("network", "disconnect", net, a)
    isobox("stop", "-t", "0", a)
    isobox("network", "connect", net, a)  # stopped: at the next start
    assert list(_networks(isobox, a)) == [net]
    isobox("start", a)
    assert _resolves(isobox, a, peer) and _resolves(isobox, peer, a)


def test_container_resolves_its_own_name_and_aliases(isobox: Isobox,
                                                     nets: list[str]) -> None:
    """Its own /etc/hosts line carries its hostname, name and aliases (before the fix: only
    the hostname, so `ping <own name>` said bad address)."""
    name = unique_id("self")
    isobox("run", "-d", "--name", name, "--network", nets[0], "--network-alias", "selfalias",
           "busybox", "sleep", "300")
    for target in (name, "selfalias"):
        assert _resolves(isobox, name, target), target
    isobox("network", "connect", "--alias", "otheralias", nets[1], name)
    out = isobox("exec", name, "ping", "-c", "1", "-W", "2", "otheralias").stdout
    assert f"(10.235.{_Y}." in out, out  # its address on that network


def test_connect_alias_is_kept_per_network(isobox: Isobox, nets: list[str]) -> None:
    """`network connect --alias` is stored with that network: it survives a restart, one
    given while stopped is applied at start, and inspect shows each network's own aliases
    (before the fix: lost on restart, never applied when stopped, --network-alias shown
    for every network)."""
    net1, net2 = nets
    x, p1, p2 = unique_id("x"), unique_id("p"), unique_id("p")
    isobox("run", "-d", "--name", x, "--network", net1, "--network-alias", "primaryalias",
           "busybox", "sleep", "300")
    isobox("run", "-d", "--name", p1, "--network", net1, "busybox", "sleep", "300")
    isobox("run", "-d", "--name", p2, "--network", net2, "busybox", "sleep", "300")
    isobox("network", "connect", "--alias", "myalias", net2, x)
    assert _resolves(isobox, p2, "myalias")
    isobox("restart", "-t", "0", x)
    assert _resolves(isobox, p2, "myalias")
    assert not _resolves(isobox, p2, "primaryalias")
    found = _networks(isobox, x)
    assert found[net1]["Aliases"] == ["primaryalias"]
    assert found[net2]["Aliases"] == ["myalias"]
    assert "myalias" in found[net2]["DNSNames"]
    isobox("network", "disconnect", net2, x)
    isobox("stop", "-t", "0", x)
    isobox("network", "connect", "--alias", "stopalias", net2, x)
    assert _networks(isobox, x)[net2]["Aliases"] == ["stopalias"]
    isobox("start", x)
    assert _resolves(isobox, p2, "stopalias") and _resolves(isobox, p1, "primaryalias")
    assert not _resolves(isobox, p2, "myalias")
    # ps --filter network= knows every network a container joins, not only its first
    on_net2 = isobox("ps", "--filter", f"network={net2}", "--format", "{{.Names}}").stdout
    assert sorted(on_net2.split()) == sorted([x, p2])


def test_connect_alias_on_the_default_bridge_is_refused(isobox: Isobox,
                                                        nets: list[str]) -> None:
    name = unique_id("c")
    isobox("run", "-d", "--name", name, "--network", nets[0], "busybox", "sleep", "300")
    p = isobox("network", "connect", "--alias", "nope", "bridge", name, check=False)
    assert p.returncode != 0 and "alias" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert list(_networks(isobox, name)) == [nets[0]]


def test_record_without_per_network_aliases_still_starts(isobox: Isobox,
                                                          nets: list[str]) -> None:
    """A record written before per-network aliases (``extra_networks``, no
    ``network_endpoints``) still starts on all its networks and inspects."""
    net1, net2 = nets
    name, peer = unique_id("old"), unique_id("p")
    isobox("create", "--name", name, "--network", net1, "--network-alias", "oldalias",
           "busybox", "sleep", "300")
    isobox("run", "-d", "--name", peer, "--network", net2, "busybox", "sleep", "300")
    cid = isobox.record(name)["id"]
    options = isobox.record(name)["options"]
    options.pop("network_endpoints", None)
    options["extra_networks"] = [net2]
    conn = sqlite3.connect(os.path.join(isobox.root, "containers.db"))
    try:
        with conn:
            conn.execute("UPDATE containers SET options=? WHERE id=?",
                         (json.dumps(options), cid))
    finally:
        conn.close()
    assert set(_networks(isobox, name)) == {net1, net2}
    isobox("start", name)
    assert _resolves(isobox, peer, name) and _resolves(isobox, name, "oldalias")
    assert _networks(isobox, name)[net1]["Aliases"] == ["oldalias"]


def test_ports_go_with_the_network_they_were_published_on(isobox: Isobox,
                                                          nets: list[str]) -> None:
    name = unique_id("pub")
    isobox("run", "-d", "--name", name, "--network", nets[0], "-p", "127.0.0.1::80",
           "busybox", "sleep", "300")
    assert isobox("port", name).stdout.startswith("80/tcp -> 127.0.0.1:")
    isobox("network", "disconnect", nets[0], name)
    assert isobox("port", name).stdout == ""  # (was: the released port still listed)
    assert isobox.record(name)["network"].get("ports") == []
