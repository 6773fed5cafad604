"""Networks through `isobox serve`: the docker CLI's `network ls/create/inspect/connect/
disconnect/rm/prune`, docker-py's `networks.*`, containers on a user network reaching each
other by name, and Docker's status codes for bad requests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_helpers import ApiServer, Docker, message, raw
from engine_helpers import Isobox
from objects_helpers import client_fixture, objects_fixture  # noqa: F401

from harness import unique_id

pytestmark = [pytest.mark.engine, pytest.mark.net]


def test_cli_network_create_inspect_ls_rm(objects: Docker, isobox: Isobox) -> None:
    docker = objects
    name = unique_id("net")
    nid = docker("network", "create", "--subnet", "10.231.7.0/24", "--gateway", "10.231.7.254",
                 "--label", "team=api", "--internal", name).stdout.strip()
    assert len(nid) == 64
    info = json.loads(docker("network", "inspect", name).stdout)[0]
    assert (info["Name"], info["Id"], info["Driver"], info["Scope"]) == (name, nid, "bridge",
                                                                        "local")
    assert info["IPAM"]["Config"] == [{"Subnet": "10.231.7.0/24", "Gateway": "10.231.7.254"}]
    assert info["Internal"] is True and info["Labels"] == {"team": "api"}
    # the isobox CLI sees the same network, in the same shape
    assert json.loads(isobox("network", "inspect", name).stdout)[0]["Id"] == nid
    ls = docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.splitlines()
    assert {"bridge bridge", "host host", "none null", f"{name} bridge"} <= set(ls)
    only = docker("network", "ls", "-q", "--no-trunc", "--filter", "label=team=api").stdout
    assert only.split() == [nid]
    custom = docker("network", "ls", "--format", "{{.Name}}", "-f", "type=custom").stdout
    assert "bridge" not in custom.split() and name in custom.split()
    p = docker("network", "create", name, check=False)
    assert p.returncode == 1 and f"network with name {name} already exists" in p.stderr
    docker("network", "rm", nid[:12])
    p = docker("network", "inspect", name, check=False)
    assert p.returncode == 1 and "not found" in p.stderr
    p = docker("network", "rm", "bridge", check=False)
    assert p.returncode == 1 and "pre-defined network" in p.stderr


def test_cli_containers_on_a_user_network_reach_each_other_by_name(objects: Docker) -> None:
    docker = objects
    net, db = unique_id("net"), unique_id("db")
    docker("network", "create", net)
    docker("run", "-d", "--name", db, "--network", net, "--network-alias", "database",
           "busybox", "sleep", "60")
    for target in (db, "database"):
        p = docker("run", "--rm", "--network", net, "busybox", "ping", "-c", "1", "-W", "2",
                   target, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
    members = json.loads(docker("network", "inspect", net).stdout)[0]["Containers"]
    assert [m["Name"] for m in members.values()] == [db]
    # in use: 409 (the CLI prints the engine's message)
    p = docker("network", "rm", net, check=False)
    assert p.returncode == 1 and "active endpoints" in p.stderr
    docker("rm", "-f", db)
    docker("network", "rm", net)


def test_cli_connect_and_disconnect_a_running_container(objects: Docker) -> None:
    docker = objects
    net, name = unique_id("net"), unique_id("c")
    docker("network", "create", "--subnet", "10.231.9.0/24", net)
    docker("run", "-d", "--name", name, "busybox", "sleep", "60")
    docker("network", "connect", "--alias", "extra", net, name)
    addrs = docker("exec", name, "ip", "-o", "-4", "addr").stdout
    assert "10.231.9." in addrs
    nets = json.loads(docker("inspect", name).stdout)[0]["NetworkSettings"]["Networks"]
    assert set(nets) == {"bridge", net}
    p = docker("network", "connect", net, name, check=False)
    assert p.returncode == 1 and "already exists" in p.stderr
    docker("network", "disconnect", net, name)
    assert "10.231.9." not in docker("exec", name, "ip", "-o", "-4", "addr").stdout
    p = docker("network", "connect", net, "no-such-container-x", check=False)
    assert p.returncode == 1 and "no-such-container-x" in p.stderr
    docker("rm", "-f", name)
    docker("network", "rm", net)


def test_cli_network_prune_keeps_networks_in_use(objects: Docker) -> None:
    docker = objects
    used, idle, kept = unique_id("used"), unique_id("idle"), unique_id("kept")
    docker("network", "create", used)
    docker("network", "create", idle)
    docker("network", "create", "--label", "keep=1", kept)
    name = unique_id("c")
    docker("run", "-d", "--name", name, "--network", used, "busybox", "sleep", "60")
    out = docker("network", "prune", "-f", "--filter", "label!=keep").stdout
    assert idle in out and used not in out and kept not in out
    names = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert used in names and kept in names and idle not in names
    docker("rm", "-f", name)
    out = docker("network", "prune", "-f", "--filter", "until=1h").stdout
    assert used not in out  # made seconds ago
    out = docker("network", "prune", "-f").stdout
    assert used in out and kept in out


def test_api_create_validates_fields(api_server: ApiServer, isobox: Isobox) -> None:
    sock = api_server.socket_path
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({}, 400, "Name"),
        ({"Name": "x" + unique_id(), "EnableIPv6": True}, 400, "EnableIPv6"),
        ({"Name": "x" + unique_id(), "Driver": "overlay"}, 404, 'plugin "overlay" not found'),
        ({"Name": "x" + unique_id(), "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"},
                                                          {"Subnet": "10.2.0.0/24"}]}},
         400, "IPAM.Config"),
        ({"Name": "x" + unique_id(), "Options": {"com.docker.network.bridge.name": "br9"}},
         400, "Options.com.docker.network.bridge.name"),
        ({"Name": "x" + unique_id(), "Labels": {"a": 1}}, 400, "Labels"),
        ({"Name": "bad name!"}, 400, "invalid network name"),
        ({"Name": "x" + unique_id(), "IPAM": {"Config": [{"Subnet": "10.1.0.0/99"}]}}, 400,
         "10.1.0.0/99"),
    ]
    for body, status, text in cases:
        st, _, data = raw(sock, "POST", "/v1.41/networks/create", body)
        assert (st, text in message(data)) == (status, True), (body, st, data)
    assert raw(sock, "GET", "/v1.41/networks/nosuchnet")[0] == 404
    assert raw(sock, "DELETE", "/v1.41/networks/nosuchnet")[0] == 404
    st, _, data = raw(sock, "GET", "/v1.41/networks?filters=" + '{"colour":{"red":true}}')
    assert st == 400 and "invalid filter 'colour'" in message(data)
    st, _, data = raw(sock, "POST", "/v1.41/networks/bridge/connect", {"Container": ""})
    assert st == 400 and "Container" in message(data)
    st, _, data = raw(sock, "POST", "/v1.41/networks/bridge/connect",
                      {"Container": "nosuch-ctr",
                       "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.9.9.9"}}})
    assert st == 400 and "IPv4Address" in message(data)
    st, _, data = raw(sock, "POST", "/v1.41/containers/create",
                      {"Image": "busybox", "HostConfig": {"NetworkMode": "bridge"},
                       "NetworkingConfig": {"EndpointsConfig": {"bridge": {
                           "IPAMConfig": {"IPv4Address": "10.9.9.9"}}}}})
    assert st == 400 and "IPAMConfig.IPv4Address" in message(data)  # `run --ip`
    assert isobox.ids() == []
    nets = [n["Name"] for n in json.loads(raw(sock, "GET", "/v1.41/networks")[2])]
    assert not [n for n in nets if n.startswith("x")], nets  # nothing was created


def test_docker_py_networks(client: Any, isobox: Isobox) -> None:
    import docker

    name = unique_id("pynet")
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
        subnet="10.231.11.0/24", gateway="10.231.11.1")])
    net = client.networks.create(name, driver="bridge", ipam=ipam, labels={"k": "v"})
    assert net.name == name and net.attrs["IPAM"]["Config"][0]["Subnet"] == "10.231.11.0/24"
    assert client.networks.get(net.id[:12]).name == name
    assert [n.name for n in client.networks.list(names=[name])] == [name]
    assert name in [n.name for n in client.networks.list(filters={"label": "k=v"})]
    with pytest.raises(docker.errors.APIError) as e:
        client.networks.create(name)
    assert e.value.status_code == 409
    # containers created through the API on the network reach each other by name
    server = client.containers.run("busybox", "sleep 60", name=unique_id("srv"),
                                   network=name, detach=True)
    out = client.containers.run("busybox", f"ping -c 1 -W 2 {server.name}", network=name,
                                remove=True)
    assert b"1 packets received" in out
    other = client.containers.run("busybox", "sleep 60", detach=True)
    net.connect(other, aliases=["second"])
    net.reload()
    assert set(net.attrs["Containers"]) == {server.id, other.id}
    ping = server.exec_run("ping -c 1 -W 2 second")
    assert ping.exit_code == 0, ping.output
    net.disconnect(other)
    net.reload()
    assert set(net.attrs["Containers"]) == {server.id}
    with pytest.raises(docker.errors.APIError) as e:
        net.remove()
    assert e.value.status_code == 409
    server.remove(force=True)
    other.remove(force=True)
    net.remove()
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(name)
    idle = client.networks.create(unique_id("idle"))
    assert idle.name in client.networks.prune()["NetworksDeleted"]
