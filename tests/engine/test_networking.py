"""Networking through the engine: the default bridge with NAT and published ports, user
networks where containers reach each other by name, and cleanup on stop."""

from __future__ import annotations

import socket

import pytest
from engine_helpers import Isobox

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
