"""Fixtures for real cgroup tests; cleanup always runs (see cg_helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cg_helpers import Children, kill_and_remove, sweep, unique

from isobox.cgroups import CgroupManager
from isobox.cgroups.layout import hierarchies


@pytest.fixture(scope="session", autouse=True)
def _final_sweep() -> Iterator[None]:
    yield
    sweep()


@pytest.fixture
def make_cg() -> Iterator[Callable[..., CgroupManager]]:
    """``make_cg(path=None, create=True, **kw)``: a manager, destroyed at teardown."""
    made: list[CgroupManager] = []

    def make(path: str | None = None, create: bool = True, **kw: Any) -> CgroupManager:
        mgr = CgroupManager(path or "/" + unique(), **kw)
        made.append(mgr)
        if create:
            mgr.create()
        return mgr

    yield make
    for mgr in reversed(made):
        kill_and_remove(mgr)


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    yield c
    c.cleanup()


@pytest.fixture
def unified_subtree() -> Iterator[None]:
    """Restore the unified root's ``cgroup.subtree_control`` after a test that enables a
    controller there (hybrid hosts: hugetlb; simulated pure v2)."""
    v2 = [h for h in hierarchies() if h.is_v2]
    if not v2:
        yield
        return
    path = f"{v2[0].mountpoint}/cgroup.subtree_control"
    with open(path) as f:
        before = set(f.read().split())
    yield
    sweep()
    with open(path) as f:
        after = set(f.read().split())
    for ctl in after - before:
        try:
            with open(path, "w") as f:
                f.write(f"-{ctl}")
        except OSError:
            pass
