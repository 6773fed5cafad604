"""Shared fixtures: a busybox rootfs built once per session, bundles, and a runtime driver
with its own ``--root`` that deletes whatever a test left and checks nothing leaked.

The helpers themselves live in ``harness.py`` (import them from there, not from conftest:
several test packages have a harness.py of their own)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

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
