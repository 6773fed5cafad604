"""Networking through the engine: the default bridge with NAT and published ports, user
networks where containers reach each other by name, and cleanup on stop."""

from __future__ import annotations

import socket
import subprocess

import pytest
from engine_helpers import NET_PREFIX, Isobox

from harness import wait_for

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
        assert "db" not in isobox("exec", "lonely", "cat", "/etc/hosts").stdout
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
