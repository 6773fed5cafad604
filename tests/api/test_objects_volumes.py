"""Volumes through `isobox serve`: the docker CLI's `volume ls/create/inspect/rm/prune` and
`run -v named:/data`, docker-py's `volumes.*`, and Docker's status codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_helpers import ApiServer, Docker, message, raw
from engine_helpers import Isobox
from objects_helpers import client_fixture, objects_fixture  # noqa: F401

from harness import unique_id

pytestmark = pytest.mark.engine


def test_cli_volume_create_inspect_ls_rm(objects: Docker, isobox: Isobox) -> None:
    docker = objects
    name = unique_id("vol")
    assert docker("volume", "create", "--label", "tier=db", name).stdout.strip() == name
    info = json.loads(docker("volume", "inspect", name).stdout)[0]
    assert (info["Name"], info["Driver"], info["Scope"], info["Labels"]) == \
        (name, "local", "local", {"tier": "db"})
    assert info["Mountpoint"].endswith(f"/volumes/{name}/_data")
    assert json.loads(isobox("volume", "inspect", name).stdout)[0] == info  # one engine
    assert name in docker("volume", "ls", "-q").stdout.split()
    assert docker("volume", "ls", "-q", "--filter", "label=tier=db").stdout.split() == [name]
    assert docker("volume", "ls", "-q", "--filter", "label=tier=web").stdout.split() == []
    assert name in docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.split()
    p = docker("volume", "create", "-d", "nfs-plugin", unique_id("v"), check=False)
    assert p.returncode == 1 and 'plugin "nfs-plugin" not found' in p.stderr
    docker("volume", "rm", name)
    p = docker("volume", "inspect", name, check=False)
    assert p.returncode == 1 and "no such volume" in p.stderr
    p = docker("volume", "rm", name, check=False)
    assert p.returncode == 1 and "no such volume" in p.stderr
    docker("volume", "rm", "-f", name)  # force: a missing volume is fine


def test_cli_run_with_a_named_volume_keeps_data_and_refuses_rm_in_use(objects: Docker) -> None:
    docker = objects
    vol, name = unique_id("data"), unique_id("c")
    docker("run", "--rm", "-v", f"{vol}:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    assert vol in docker("volume", "ls", "-q").stdout.split()  # made on first use
    out = docker("run", "--rm", "-v", f"{vol}:/data:ro", "busybox", "cat", "/data/f").stdout
    assert out == "kept\n"
    docker("run", "-d", "--name", name, "-v", f"{vol}:/data", "busybox", "sleep", "60")
    mounts = json.loads(docker("inspect", name).stdout)[0]["Mounts"]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == \
        [("volume", vol, "/data")]
    for args in (("rm",), ("rm", "-f")):  # in use: 409, with force too (as dockerd)
        p = docker("volume", *args, vol, check=False)
        assert p.returncode == 1 and "volume is in use" in p.stderr
    assert docker("volume", "ls", "-q", "-f", "dangling=true").stdout.split().count(vol) == 0
    docker("rm", "-f", name)
    docker("volume", "rm", vol)


def test_cli_volume_prune_removes_unused_volumes(objects: Docker) -> None:
    docker = objects
    used, idle, kept = unique_id("used"), unique_id("idle"), unique_id("kept")
    for v in (used, idle):
        docker("volume", "create", v)
    docker("volume", "create", "--label", "keep", kept)
    name = unique_id("c")
    docker("run", "-d", "--name", name, "-v", f"{used}:/u", "busybox", "sleep", "60")
    docker("run", "--rm", "-v", f"{idle}:/i", "busybox", "sh", "-c",
           "head -c 5000 /dev/zero > /i/z")
    # API 1.41 (what the CLI negotiates): every unused volume, named ones too, as dockerd
    out = docker("volume", "prune", "-f", "--filter", "label!=keep").stdout
    assert idle in out and used not in out and kept not in out
    assert "Total reclaimed space: 5kB" in out
    left = docker("volume", "ls", "-q").stdout.split()
    assert used in left and kept in left and idle not in left
    docker("rm", "-f", name)
    docker("volume", "rm", used, kept)


def test_api_volume_create_and_prune_at_1_41(api_server: ApiServer, objects: Docker) -> None:
    sock = api_server.socket_path
    named = unique_id("named")
    st, _, body = raw(sock, "POST", "/v1.41/volumes/create", {"Name": named})
    assert st == 201 and json.loads(body)["Name"] == named
    st, _, body = raw(sock, "POST", "/v1.41/volumes/create", {})  # anonymous
    anon = json.loads(body)["Name"]
    assert st == 201 and len(anon) == 64
    assert json.loads(body)["Labels"] == {"com.docker.volume.anonymous": ""}
    st, _, body = raw(sock, "POST", "/volumes/prune")
    # unversioned = 1.41 here: all unused volumes go
    assert st == 200 and set(json.loads(body)["VolumesDeleted"]) >= {named, anon}


def test_api_volume_errors(api_server: ApiServer, objects: Docker) -> None:
    sock = api_server.socket_path
    st, _, body = raw(sock, "GET", "/v1.41/volumes/nosuchvol")
    assert (st, message(body)) == (404, "get nosuchvol: no such volume")
    st, _, body = raw(sock, "POST", "/v1.41/volumes/create", {"Name": "a/../../etc"})
    assert st == 400 and "invalid characters" in message(body)
    st, _, body = raw(sock, "POST", "/v1.41/volumes/create", {"Name": unique_id("v"),
                                                             "DriverOpts": {"type": "nfs"}})
    assert st == 400 and "type" in message(body)
    st, _, body = raw(sock, "POST", "/v1.41/volumes/create", {"Labels": ["x"]})
    assert st == 400 and message(body).startswith("Labels:")
    st, _, body = raw(sock, "GET", "/v1.41/volumes?filters=" + '{"colour":["red"]}')
    assert st == 400 and "invalid filter 'colour'" in message(body)
    st, _, body = raw(sock, "POST", "/v1.41/volumes/prune?filters=" + '{"until":["1h"]}')
    assert st == 400 and "invalid filter 'until'" in message(body)
    st, _, body = raw(sock, "GET", "/v1.41/volumes")
    assert st == 200 and json.loads(body)["Warnings"] == []


def test_docker_py_volumes(client: Any) -> None:
    import docker

    name = unique_id("pyvol")
    vol = client.volumes.create(name, labels={"a": "b"})
    assert vol.name == name and vol.attrs["Labels"] == {"a": "b"}
    assert client.volumes.get(name).attrs["Mountpoint"] == vol.attrs["Mountpoint"]
    assert name in [v.name for v in client.volumes.list()]
    assert [v.name for v in client.volumes.list(filters={"label": "a=b"})] == [name]
    out = client.containers.run("busybox", "sh -c 'echo hi > /v/x; cat /v/x'",
                                volumes={name: {"bind": "/v", "mode": "rw"}}, remove=True)
    assert out == b"hi\n"
    ct = client.containers.run("busybox", "sleep 60", volumes=[f"{name}:/v"], detach=True)
    with pytest.raises(docker.errors.APIError) as e:
        vol.remove()
    assert e.value.status_code == 409
    ct.remove(force=True)
    vol.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(name)
    client.volumes.create(unique_id("idle"))
    # docker-py 7 speaks 1.41 to this server: prune removes every unused volume
    pruned = client.volumes.prune()
    assert len(pruned["VolumesDeleted"]) >= 1 and pruned["SpaceReclaimed"] >= 0
