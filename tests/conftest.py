"""Shared fixtures: a busybox rootfs built once per session, bundles, and a runtime driver
with its own ``--root`` that deletes whatever a test left and checks nothing leaked.

The helpers themselves live in ``harness.py`` (import them from there, not from conftest:
several test packages have a harness.py of their own)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine"))

from engine_helpers import NET_PREFIX, Isobox, leaks, remove_everything

from harness import (
    RUN_PREFIX,
    Bundle,
    Runtime,
    busybox_bundle,
    leftover_cgroups,
    mounts_under,
)


@pytest.fixture(scope="session")
def busybox_rootfs() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-rootfs-")
    rootfs = os.path.join(d, "rootfs")
    busybox_bundle.make_rootfs(rootfs)
    yield rootfs
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bundle(busybox_rootfs: str, tmp_path: Any) -> Bundle:
    path = str(tmp_path / "bundle")
    os.makedirs(path)
    busybox_bundle.make_bundle(path, ["true"], rootfs_from=busybox_rootfs)
    return Bundle(path)


@pytest.fixture
def runtime(tmp_path: Any) -> Iterator[Runtime]:
    root = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-root-")
    rt = Runtime(root)
    yield rt
    leftovers = rt.ids()
    for cid in leftovers:
        rt("delete", "--force", cid, check=False)
    remaining = rt.ids()
    shutil.rmtree(root, ignore_errors=True)
    mounts = mounts_under(str(tmp_path)) + mounts_under(root)
    cgroups = leftover_cgroups()
    assert not remaining, f"state left after delete --force: {remaining}"
    assert not mounts, f"mounts leaked on the host: {mounts}"
    assert not cgroups, f"cgroups leaked: {cgroups}"


# The engine's per-run root, here so that every test directory (engine, api, …) shares ONE:
# two roots with the same bridge/nft prefix would fight over the same bridge and table.
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
