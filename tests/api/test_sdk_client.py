"""`isobox.api.client` against `isobox serve`: typed results for containers, exec, logs, images,
networks and volumes; status codes mapped to exceptions that are also isobox.errors types."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer
from engine_helpers import Isobox
from objects_helpers import check_and_clean, objects_of

from harness import unique_id
from isobox.api.client import Client, RunResult
from isobox.api.client_errors import BadRequest, Conflict, ConnectError, NotFound
from isobox.api.client_types import ContainerSummary, Port
from isobox.errors import ConfigError, ConflictError, NotFoundError

pytestmark = pytest.mark.engine


@pytest.fixture
def client(api_server: ApiServer, isobox: Isobox) -> Iterator[Client]:
    before = objects_of(isobox)
    with Client(f"unix://{api_server.socket_path}") as c:
        yield c
    check_and_clean(isobox, before)


def test_run_collects_output_and_exit_code(client: Client, isobox: Isobox) -> None:
    result = client.run("busybox", ["sh", "-c", "echo out; echo err >&2; exit 3"],
                        remove=True, env=("A=1",))
    assert isinstance(result, RunResult)
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert isobox.ids() == []
    with pytest.raises(NotFound, match="No such image: nosuch-image-x") as e:
        client.create("nosuch-image-x:1")
    assert isinstance(e.value, NotFoundError)


def test_container_lifecycle_exec_logs(client: Client, isobox: Isobox) -> None:
    name = unique_id("sdk")
    cid = client.run("busybox", ["sh", "-c", "echo hello; sleep 60"], detach=True, name=name,
                     labels={"k": "v"}, ports=())
    assert isinstance(cid, str) and isobox.record(name)["id"] == cid
    [row] = client.containers(filters={"name": [name]})
    assert isinstance(row, ContainerSummary)
    assert (row.id, row.name, row.image, row.state, row.labels, row.isolation) == \
        (cid, name, "busybox", "running", {"k": "v"}, "container")
    assert row.command == "sh -c echo hello; sleep 60" and row.status.startswith("Up ")
    res = client.exec(name, ["sh", "-c", "cat; echo e >&2; exit 2"], stdin=b"piped\n")
    assert (res.exit_code, res.stdout, res.stderr) == (2, b"piped\n", b"e\n")
    deadline = time.monotonic() + 10
    while not b"".join(c.data for c in client.logs(name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [(c.stream, c.data) for c in client.logs(name)] == [("stdout", b"hello\n")]
    assert client.inspect(name)["Config"]["Labels"] == {"k": "v"}
    assert client.instance_inspect(name)["HostConfig"]["LogConfig"]["Type"] == "k8s-file"
    with pytest.raises(Conflict, match="stop the container before") as e:
        client.remove(name)
    assert isinstance(e.value, ConflictError)
    client.stop(name, timeout=0)
    assert client.containers(filters={"name": [name]}) == []
    assert client.containers(all=True, filters={"name": [name]})[0].state == "exited"
    with pytest.raises(Conflict, match="is not running"):
        client.exec(name, ["true"])
    client.remove(name)
    with pytest.raises(NotFound):
        client.inspect(name)


def test_published_ports_are_typed(client: Client) -> None:
    from isobox.engine.options import PortSpec

    name = unique_id("sdkp")
    client.run("busybox", ["sleep", "60"], detach=True, name=name,
               ports=(PortSpec(80, "tcp", "127.0.0.1", 0),))
    [row] = client.containers(filters={"name": [name]})
    [port] = row.ports
    assert isinstance(port, Port)
    assert (port.private_port, port.type, port.ip) == (80, "tcp", "127.0.0.1")
    assert port.public_port > 0
    client.remove(name, force=True)


def test_images_networks_volumes(client: Client, isobox: Isobox) -> None:
    images = client.images()
    busybox = next(i for i in images if "busybox:latest" in i.repo_tags)
    assert busybox.id.startswith("sha256:") and busybox.size > 0
    tag = f"{unique_id('sdkimg')}:v1"
    client.tag("busybox", tag)
    assert tag in isobox("images").stdout.replace("   ", ":").replace(" ", "")
    assert client.remove_image(tag) == [{"Untagged": tag}]
    with pytest.raises(BadRequest) as e:
        client.tag("busybox", "UPPER:case")
    assert isinstance(e.value, ConfigError)
    net = unique_id("sdknet")
    nid = client.network_create(net, subnet="10.231.9.0/24", labels={"a": "b"})
    [n] = client.networks(filters={"name": [net]})
    assert (n.id, n.driver, n.subnet, n.labels) == (nid, "bridge", "10.231.9.0/24",
                                                    {"a": "b"})
    with pytest.raises(Conflict, match="already exists"):
        client.network_create(net)
    client.network_remove(net)
    vol = client.volume_create(unique_id("sdkvol"), labels={"x": "y"})
    assert [v.name for v in client.volumes(filters={"label": ["x=y"]})] == [vol.name]
    assert client.volume_inspect(vol.name)["Mountpoint"] == vol.mountpoint
    client.volume_remove(vol.name)
    with pytest.raises(NotFound, match="no such volume"):
        client.volume_remove(vol.name)


def test_unreachable_server() -> None:
    with Client("unix:///nonexistent/isobox.sock") as c, pytest.raises(ConnectError):
        c.ping()
    with pytest.raises(ConfigError, match="tcp://HOST:PORT"):
        Client("ftp://x")
