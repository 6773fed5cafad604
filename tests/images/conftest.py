"""Fixtures of the image tests: a private store root per test, checked for leaks."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from harness import RUN_PREFIX, mounts_under
from isobox.images.store import ImageStore


@pytest.fixture
def store_root() -> Iterator[str]:
    root = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-store-")
    yield root
    leaked = [line.split()[4] for line in mounts_under(root)]
    for m in sorted(leaked, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    shutil.rmtree(root, ignore_errors=True)
    _remove_empty_run_dir(root)
    assert not leaked, f"mounts leaked: {leaked}"


def _remove_empty_run_dir(root: str) -> None:
    """An engine command on the root (``system df``, a build) made its run directory: remove
    it when it holds nothing but empty directories (anything else is a leak, left to see)."""
    import os

    from isobox.engine.layout import default_run_dir

    run_dir = default_run_dir(root)
    for dirpath, _dirs, files in os.walk(run_dir, topdown=False):
        if files:
            return
        try:
            os.rmdir(dirpath)
        except OSError:
            return


@pytest.fixture
def store(store_root: str) -> Iterator[ImageStore]:
    s = ImageStore(store_root)
    yield s
    s.close()
