"""``events``: resource stats (once with ``--stats``, else every interval) and oom events."""

from __future__ import annotations

import sys
import time

from isobox import fastjson
from isobox.runtime.state import StateStore


def events(store: StateStore, cid: str, stats_only: bool, interval: float) -> None:
    from isobox.cgroups import CgroupManager

    st = store.load(cid)
    mgr = CgroupManager.from_state(st.data["cgroup"])
    if stats_only:
        sys.stdout.write(fastjson.dumps({"type": "stats", "id": cid, "data": mgr.stats()}) + "\n")
        return
    ooms = mgr.oom_kill_count()
    next_stats = 0.0
    while st.init_alive():
        now = time.monotonic()
        count = mgr.oom_kill_count()
        if count > ooms:
            ooms = count
            sys.stdout.write(fastjson.dumps({"type": "oom", "id": cid}) + "\n")
        if now >= next_stats:
            sys.stdout.write(fastjson.dumps({"type": "stats", "id": cid,
                                             "data": mgr.stats()}) + "\n")
            next_stats = now + interval
        sys.stdout.flush()
        time.sleep(min(0.2, interval))
    if mgr.oom_kill_count() > ooms:
        sys.stdout.write(fastjson.dumps({"type": "oom", "id": cid}) + "\n")
        sys.stdout.flush()
