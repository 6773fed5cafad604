"""Fixtures of the API tests: one `isobox serve` per session on a socket in /tmp, over the
run's isobox root (the `engine_root` and `isobox` fixtures of tests/conftest.py, with their
leak checks), and the real docker CLI pointed at it."""

from __future__ import annotations

import grp
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE_TESTS = os.path.join(os.path.dirname(HERE), "engine")
sys.path.insert(0, ENGINE_TESTS)
sys.path.insert(0, HERE)


from api_helpers import ApiServer, Docker  # noqa: E402

from harness import RUN_PREFIX  # noqa: E402


@pytest.fixture(scope="session")
def api_server(engine_root: str) -> Iterator[ApiServer]:
    try:
        grp.getgrnam("isobox")
        group_existed = True
    except KeyError:
        group_existed = False
    server = ApiServer.start(engine_root, f"/tmp/{RUN_PREFIX}-api.sock")
    yield server
    server.stop()
    assert not os.path.exists(server.socket_path), "the socket outlived the server"
    if not group_existed:  # `serve` created it: leave the host as it was
        subprocess.run(["groupdel", "isobox"], check=False)


@pytest.fixture
def docker(api_server: ApiServer, isobox: object) -> Docker:
    """The docker CLI against the server; `isobox` removes containers and checks leaks."""
    return Docker(api_server.socket_path)
