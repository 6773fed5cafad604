"""``kill``: a signal to the init process, or with ``--all`` to every process of the cgroup."""

from __future__ import annotations

import os

from isobox.errors import ConflictError
from isobox.runtime.state import StateStore


def kill(store: StateStore, cid: str, sig: int, all_processes: bool = False) -> None:
    st = store.load(cid)
    if st.status(check_frozen=False) == "stopped":
        raise ConflictError("container not running")
    if all_processes:
        from isobox.cgroups import CgroupManager

        CgroupManager.from_state(st.data["cgroup"]).kill_all(sig)
        return
    try:
        os.kill(st.pid, sig)
    except ProcessLookupError:
        raise ConflictError("container not running") from None
