"""isobox's own endpoints (`/isobox/v1`) through `isobox serve`: snapshots of containers, system
VMs (create/ls/inspect/resize/rm without booting; a booted one under `vm`), host information,
the served OpenAPI document, and Docker-shaped errors (400 naming the field, 404, 409, 501)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer, message, raw
from engine_helpers import Isobox

from harness import unique_id
from isobox.api.client import Client
from isobox.api.client_errors import BadRequest, Conflict, NotFound, Unavailable
from isobox.api.openapi import document
from isobox.errors import ConfigError, ConflictError, NotFoundError

pytestmark = pytest.mark.engine
V1 = "/isobox/v1"
IMAGE = "busybox"  # has /sbin/init (busybox init): a system VM boots it


@pytest.fixture
def client(api_server: ApiServer, isobox: Isobox) -> Iterator[Client]:
    with Client(f"unix://{api_server.socket_path}") as c:
        yield c


def test_openapi_served_and_info(api_server: ApiServer, client: Client, isobox: Isobox) -> None:
    status, headers, body = raw(api_server.socket_path, "GET", V1 + "/openapi.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == document()
    info = client.info()
    local = json.loads(isobox("system", "info", "--format", "json").stdout)
    for key in ("Cgroups", "KVM", "CRIU", "Conmon", "VMAccelerator", "RunDir"):
        assert info["Isobox"][key] == local["Isobox"][key], key
    assert info["Runtimes"] == local["Runtimes"] and info["Isobox"]["Cgroups"]["layout"]
    # the versioned prefix works too (a Docker client's base URL)
    assert raw(api_server.socket_path, "GET", "/v1.41" + V1 + "/info")[0] == 200


def test_container_snapshots_through_the_api(client: Client, isobox: Isobox) -> None:
    name = unique_id("ns")
    isobox("run", "-d", "--name", name, "busybox", "sh", "-c", "echo one > /f; sleep 60")
    isobox("stop", "-t", "0", name)
    snap = client.snapshot_create(name, "s1")
    assert (snap.name, snap.kind, snap.memory) == ("s1", "container", False)
    assert [s.name for s in client.snapshots(name)] == ["s1"]
    assert isobox("snapshot", "ls", "-q", name).stdout == "s1\n"  # one engine
    with pytest.raises(Conflict, match=r'snapshot "s1" of .* already exists'):
        client.snapshot_create(name, "s1")
    with pytest.raises(Unavailable, match="CRIU"):
        client.snapshot_create(name, "m1", memory=True)
    with pytest.raises(BadRequest, match="invalid snapshot name") as e:
        client.snapshot_create(name, "../x")
    assert isinstance(e.value, ConfigError)
    isobox("start", name)
    with pytest.raises(ConflictError):  # a running container cannot be restored
        client.snapshot_restore(name, "s1")
    isobox("stop", "-t", "0", name)
    assert client.snapshot_restore(name, "s1").name == "s1"
    client.snapshot_remove(name, "s1")
    assert client.snapshots(name) == []
    with pytest.raises(NotFound, match="No such snapshot: s1"):
        client.snapshot_remove(name, "s1")
    with pytest.raises(NotFoundError):
        client.snapshots("nosuch-instance")


def test_bad_bodies_are_400s_naming_the_field(api_server: ApiServer, isobox: Isobox) -> None:
    sock = api_server.socket_path
    cases = [
        ("POST", V1 + "/vms", {"Name": "x", "Cpus": "two"}, "Cpus: expected an integer"),
        ("POST", V1 + "/vms", {"Name": "x", "Memory": -1}, "Memory: must not be negative"),
        ("POST", V1 + "/vms", {"Name": "x", "Ports": "80"}, "Ports: expected an array"),
        ("POST", V1 + "/vms", {"Name": "x", "Image": "busybox", "Ports": ["x:y"]}, "Ports: "),
        ("POST", V1 + "/vms", {"Name": "xvm"}, "exactly one of --image IMAGE or --disk FILE"),
        ("POST", V1 + "/vms", [1], "expected a JSON object"),
        ("POST", V1 + "/vms", b"{nope", "malformed JSON"),
        ("POST", V1 + "/vms/x/exec", {"Cmd": []}, "Cmd: no command given"),
        ("POST", V1 + "/vms/x/save", {"File": "rel/path"}, "File: an absolute path"),
        ("POST", V1 + "/instances/x/snapshots", {"Memory": True}, "Name: a snapshot needs"),
    ]
    before = isobox.ids()
    for method, path, body, text in cases:
        status, _, out = raw(sock, method, path, body)
        assert status == 400, (path, body, out)
        assert text in message(out), (path, body, message(out))
    assert isobox.ids() == before
    status, _, out = raw(sock, "GET", V1 + "/vms/nosuch")
    assert (status, message(out)) == (404, "No such VM: nosuch")
    status, _, out = raw(sock, "GET", V1 + "/nothing-here")
    assert status == 404
    status, _, out = raw(sock, "PUT", V1 + "/vms")
    assert status == 405


def test_system_vm_create_list_inspect_resize_remove(client: Client, isobox: Isobox) -> None:
    name = unique_id("vm")
    vid = client.vm_create(name, image=IMAGE, memory=256 << 20, cpus=1,
                           network="none", disk_size=512 << 20)
    [vm] = [v for v in client.vms() if v.name == name]
    assert (vm.id, vm.state, vm.cpus, vm.memory, vm.image) == (vid, "created", 1, 256 << 20,
                                                               IMAGE)
    doc = client.vm_inspect(name)
    assert doc == json.loads(isobox("vm", "inspect", name).stdout)[0]
    assert doc["Disk"]["Mode"] == "overlay" and doc["Disk"]["SizeBytes"] == 512 << 20
    lines = client.vm_resize(name, memory=384 << 20)
    assert lines == ["memory: 384 MiB at next boot"]
    assert client.vm_inspect(name)["MemoryMiB"] == 384
    with pytest.raises(BadRequest, match="nothing to resize"):
        client.vm_resize(name)
    with pytest.raises(Conflict, match="not running"):
        client.vm_exec(name, ["true"])
    with pytest.raises(NotFound, match="a container or micro-VM of that name"):
        cname = unique_id("c")
        isobox("create", "--name", cname, "busybox", "true")
        client.vm_inspect(cname)
    client.vm_remove(name)
    assert name not in isobox("vm", "ls").stdout
    with pytest.raises(NotFound, match=f"No such VM: {name}"):
        client.vm_remove(name)


@pytest.mark.vm
@pytest.mark.slow
def test_system_vm_boot_exec_stop(client: Client, isobox: Isobox) -> None:
    name = unique_id("vmb")
    client.vm_create(name, image=IMAGE, memory=256 << 20, network="none")
    client.vm_start(name)
    deadline = time.monotonic() + 120
    while True:
        try:
            result = client.vm_exec(name, ["sh", "-c", "read x; echo got $x; echo e >&2; "
                                           "exit 5"], stdin="hello\n")
            break
        except ConflictError:
            assert time.monotonic() < deadline
            time.sleep(1)
    assert (result.exit_code, result.stdout, result.stderr) == (5, b"got hello\n", b"e\n")
    assert [v.state for v in client.vms() if v.name == name] == ["running"]
    client.vm_stop(name, timeout=2)
    assert [v.state for v in client.vms() if v.name == name] == ["exited"]
    client.vm_remove(name)
    assert subprocess.run(["pgrep", "-f", name], capture_output=True).stdout == b""
