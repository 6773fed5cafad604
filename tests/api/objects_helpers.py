"""Fixtures of the network/volume/events/df API tests: the docker CLI (``objects``) and
docker-py (``client``) against `isobox serve`, and after each test a check that it left no
network or volume behind (the engine tests' leak checks cover containers, mounts, netns and
bridges, not these). Test modules import them as ``objects_fixture``/``client_fixture``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import ApiServer, Docker
from engine_helpers import Isobox


def objects_of(isobox: Isobox) -> set[str]:
    nets = isobox("network", "ls", "--format", "json").stdout.splitlines()
    out = {f"network {json.loads(n)['Name']}" for n in nets}
    return out | {f"volume {v}" for v in isobox("volume", "ls", "-q").stdout.split()}


def check_and_clean(isobox: Isobox, before: set[str]) -> None:
    isobox.remove_all_containers()
    found = sorted(objects_of(isobox) - before)
    for item in found:
        kind, name = item.split(" ", 1)
        isobox(kind, "rm", name, check=False)
    assert not found, f"left behind: {found}"


@pytest.fixture(name="objects")
def objects_fixture(api_server: ApiServer, isobox: Isobox) -> Iterator[Docker]:
    """The docker CLI bound to the server; no network or volume may outlive the test."""
    before = objects_of(isobox)
    yield Docker(api_server.socket_path)
    check_and_clean(isobox, before)


@pytest.fixture(name="client")
def client_fixture(api_server: ApiServer, isobox: Isobox) -> Iterator[Any]:
    """docker-py bound to the server; no network or volume may outlive the test."""
    docker = pytest.importorskip("docker")
    before = objects_of(isobox)
    c = docker.DockerClient(base_url=f"unix://{api_server.socket_path}", version="auto")
    yield c
    c.close()
    check_and_clean(isobox, before)
