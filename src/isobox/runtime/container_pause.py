"""``pause`` and ``resume`` through the freezer."""

from __future__ import annotations

from isobox.errors import ConflictError
from isobox.runtime.state import StateStore


def pause(store: StateStore, cid: str) -> None:
    from isobox.cgroups import CgroupManager

    st = store.load(cid)
    status = st.status()
    if status != "running":
        raise ConflictError(f"container {cid} is not running (status: {status})")
    CgroupManager.from_state(st.data["cgroup"]).freeze()


def resume(store: StateStore, cid: str) -> None:
    from isobox.cgroups import CgroupManager

    st = store.load(cid)
    status = st.status()
    if status != "paused":
        raise ConflictError(f"container {cid} is not paused (status: {status})")
    CgroupManager.from_state(st.data["cgroup"]).thaw()
