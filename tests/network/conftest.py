"""Fixtures for the network tests: a NetworkManager with per-run device and table names,
network namespaces standing in for containers, and a leak check after every test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from nethelpers import NETP, make_manager, our_links

from harness import wait_for
from isobox.network import NetworkManager, create_netns, delete_netns
from isobox.network.nft import table_exists


@pytest.fixture
def nm(tmp_path: Any) -> Iterator[NetworkManager]:
    m = make_manager(str(tmp_path / "netstate"))
    yield m
    m.teardown()
    # Veths whose netns was deleted die asynchronously in the kernel.
    wait_for(lambda: not our_links(m), timeout=5, what=f"links {our_links(m)} to go")
    assert not table_exists(NETP), f"nft table {NETP} left behind"


@pytest.fixture
def netns(tmp_path: Any) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def make(name: str) -> str:
        path = str(tmp_path / "netns" / name)
        create_netns(path)
        made.append(path)
        return path

    yield make
    for path in made:
        delete_netns(path)
        assert not os.path.exists(path)
