"""`GET /events` (since/until/filters, Docker's event JSON), `GET /system/df` and the filters
of `POST /containers/prune`, through the docker CLI and docker-py."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from api_helpers import ApiServer, Docker, message, raw
from engine_helpers import Isobox
from objects_helpers import client_fixture, objects_fixture  # noqa: F401

from harness import unique_id

pytestmark = pytest.mark.engine


def _events(docker: Docker, since: float, until: float, *filters: str) -> list[dict[str, Any]]:
    args = ["events", "--since", f"{since:.9f}", "--until", f"{until:.9f}", "--format",
            "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    return [json.loads(line) for line in docker(*args, timeout=30).stdout.splitlines()]


def test_cli_events_since_until_and_filters(objects: Docker) -> None:
    docker = objects
    net, vol, name = unique_id("net"), unique_id("vol"), unique_id("ev")
    t0 = time.time()
    docker("network", "create", net)
    docker("volume", "create", vol)
    docker("run", "--name", name, "--label", "app=ev", "--network", "none", "busybox", "true")
    docker("rm", name)
    docker("network", "rm", net)
    docker("volume", "rm", vol)
    t1 = time.time()
    started = time.monotonic()
    every = _events(docker, t0, t1)
    assert time.monotonic() - started < 10  # ends at --until, no waiting for more
    kinds = [(e["Type"], e["Action"]) for e in every]
    for want in [("network", "create"), ("volume", "create"), ("container", "create"),
                 ("container", "start"), ("container", "die"), ("container", "destroy"),
                 ("network", "destroy"), ("volume", "destroy")]:
        assert want in kinds, (want, kinds)
    assert kinds.index(("container", "create")) < kinds.index(("container", "start")) < \
        kinds.index(("container", "die")) < kinds.index(("container", "destroy"))
    nets = _events(docker, t0, t1, "type=network")
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in nets] == \
        [("create", net), ("destroy", net)]
    assert nets[0]["Actor"]["ID"] == nets[1]["Actor"]["ID"] and len(nets[0]["Actor"]["ID"]) == 64
    starts = _events(docker, t0, t1, f"container={name}", "event=start")
    assert len(starts) == 1
    e = starts[0]
    assert (e["status"], e["from"], e["Actor"]["Attributes"]["image"]) == \
        ("start", "busybox", "busybox")
    assert e["id"] == e["Actor"]["ID"] and e["Actor"]["Attributes"]["name"] == name
    assert t0 <= e["time"] + 1 and e["timeNano"] // 10**9 == e["time"]
    labelled = _events(docker, t0, t1, "label=app=ev")
    assert labelled and all(e["Type"] == "container" for e in labelled)
    assert _events(docker, t0, t1, "label=app=other") == []
    assert len(_events(docker, t0, t1, "type=volume", "event=destroy")) == 1
    assert [e["Action"] for e in _events(docker, t0, t1, f"network={net}")] == \
        ["create", "destroy"]
    assert [e["Action"] for e in _events(docker, t0, t1, f"volume={vol}")] == \
        ["create", "destroy"]
    by_image = _events(docker, t0, t1, "image=busybox")
    assert {e["Actor"]["Attributes"]["name"] for e in by_image} == {name}
    p = docker("events", "--since", "1s", "--until", "0s", "--filter", "colour=red",
               check=False)
    assert p.returncode != 0 and "invalid filter 'colour'" in p.stderr


def test_docker_py_events_decode(client: Any) -> None:
    t0 = time.time()
    vol = client.volumes.create(unique_id("pyev"))
    vol.remove()
    t1 = time.time()
    got = list(client.events(since=t0, until=t1, filters={"type": "volume"}, decode=True))
    assert [(e["Type"], e["Action"], e["Actor"]["ID"]) for e in got] == \
        [("volume", "create", vol.name), ("volume", "destroy", vol.name)]
    # a followed stream delivers events as they happen
    stream = client.events(filters={"type": "network"}, decode=True)
    try:
        net = client.networks.create(unique_id("pyev"))
        first = next(stream)
        assert (first["Action"], first["Actor"]["ID"]) == ("create", net.id)
        net.remove()
        assert next(stream)["Action"] == "destroy"
    finally:
        stream.close()


def test_cli_system_df(objects: Docker) -> None:
    docker = objects
    vol, name = unique_id("dfv"), unique_id("df")
    docker("run", "--name", name, "-v", f"{vol}:/d", "--network", "none", "busybox", "sh",
           "-c", "head -c 200000 /dev/zero > /d/z; head -c 30000 /dev/zero > /w")
    rows = {r["Type"]: r for r in (json.loads(line) for line in
                                   docker("system", "df", "--format", "{{json .}}")
                                   .stdout.splitlines())}
    assert set(rows) == {"Images", "Containers", "Local Volumes", "Build Cache"}
    assert int(rows["Images"]["TotalCount"]) >= 1 and int(rows["Images"]["Active"]) >= 1
    assert rows["Containers"]["TotalCount"] == "1" and rows["Containers"]["Active"] == "0"
    assert rows["Containers"]["Size"] == "30kB"  # the exited container's writable layer
    assert rows["Local Volumes"]["Size"] == "200kB"
    verbose = docker("system", "df", "-v").stdout
    assert vol in verbose and name in verbose and "busybox" in verbose
    docker("rm", name)
    docker("volume", "rm", vol)


def test_api_system_df_shape_and_types(api_server: ApiServer, client: Any) -> None:
    df = client.df()
    assert set(df) == {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"}
    busybox = [i for i in df["Images"] if "busybox:latest" in i["RepoTags"]]
    assert busybox and busybox[0]["Id"].startswith("sha256:")
    assert busybox[0]["Size"] > 0 and df["LayersSize"] >= busybox[0]["Size"]
    st, _, body = raw(api_server.socket_path, "GET", "/v1.41/system/df?type=volumes")
    assert st == 200 and set(json.loads(body)) == {"Volumes"}
    st, _, body = raw(api_server.socket_path, "GET", "/v1.41/system/df?type=disks")
    assert st == 400 and "disks" in message(body)


def test_container_prune_filters(objects: Docker, isobox: Isobox) -> None:
    docker = objects
    a, b, c = unique_id("pa"), unique_id("pb"), unique_id("pc")
    docker("create", "--name", a, "--label", "prune=yes", "busybox", "true")
    docker("create", "--name", b, "--label", "prune=no", "busybox", "true")
    docker("run", "-d", "--name", c, "--label", "prune=yes", "busybox", "sleep", "60")
    out = docker("container", "prune", "-f", "--filter", "until=1h").stdout
    assert a not in out and "Total reclaimed space" in out  # all made seconds ago
    out = docker("container", "prune", "-f", "--filter", "label=prune=yes").stdout
    ids = {docker("inspect", "-f", "{{.Id}}", n).stdout.strip() for n in (b, c)}
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert a not in names and b in names and c in names  # c runs: never pruned
    assert all(i not in out for i in ids)
    out = docker("container", "prune", "-f", "--filter", "label!=prune=no").stdout
    assert b in docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    p = docker("container", "prune", "-f", "--filter", "colour=red", check=False)
    assert p.returncode != 0 and "invalid filter 'colour'" in p.stderr
    st, _, body = raw(docker.socket_path, "POST",
                      "/v1.41/containers/prune?filters=" + '{"until":["yesterday"]}')
    assert st == 400 and "until" in message(body)
    docker("rm", "-f", b, c)
