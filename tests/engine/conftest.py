"""Fixtures of the engine tests: a private isobox root with a busybox image, the `isobox` CLI
bound to it, and after every test a check that nothing leaked (containers' mounts, cgroups,
monitors, network namespaces, bridges, nft tables)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from engine_helpers import NET_PREFIX, Isobox, leaks, remove_everything

from harness import RUN_PREFIX


@pytest.fixture(scope="session")
def engine_root() -> Iterator[str]:
    # short: conmon's attach socket lives at <root>/containers/<64 hex>/attach (108 bytes max)
    root = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}e", dir="/tmp")
    env = {**os.environ, "ISOBOX_ROOT": root, "ISOBOX_NET_PREFIX": NET_PREFIX}
    subprocess.run([Isobox.binary(), "image", "bootstrap", "busybox"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    yield root
    remove_everything(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def isobox(engine_root: str) -> Iterator[Isobox]:
    ib = Isobox(engine_root)
    yield ib
    ib.remove_all_containers()
    found = leaks(engine_root)
    if found:  # a monitor may still be finishing its exit command: give it a moment
        time.sleep(2)
        found = leaks(engine_root)
    assert not found, f"leaked: {found}"
