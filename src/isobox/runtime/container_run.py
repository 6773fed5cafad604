"""``run``: create + start, and in the foreground wait for the exit and delete."""

from __future__ import annotations

from isobox.linux import syscalls as sc
from isobox.runtime.container_create import CreateOptions, create
from isobox.runtime.container_start import start
from isobox.runtime.state import StateStore


def run(store: StateStore, cid: str, opts: CreateOptions, detach: bool = False,
        keep: bool = False) -> int:
    if not detach:
        # The init's parent (stage A) exits during create: as subreaper we inherit it.
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    st = create(store, cid, opts)
    try:
        start(store, cid)
    except BaseException:
        from isobox.runtime.container_delete import destroy

        destroy(store, st)
        raise
    if detach:
        return 0
    from isobox.runtime.waiting import wait_forwarding_signals

    code = wait_forwarding_signals(st.pid)
    if not keep:
        from isobox.runtime.container_delete import destroy

        destroy(store, store.load(cid))
    return code
