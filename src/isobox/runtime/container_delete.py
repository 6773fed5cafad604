"""``delete``: remove a stopped (or, with ``--force``, any) container and run poststop hooks.

Only the cgroups this runtime created are removed; the state directory goes last.
"""

from __future__ import annotations

import posix  # not os: see isobox.runtime.state

from isobox.errors import ConflictError, IsoboxError
from isobox.runtime.state import ContainerState, StateStore


def _wait_exit(pid: int, timeout: float) -> bool:
    import select

    try:
        pidfd = posix.pidfd_open(pid)
    except OSError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        posix.close(pidfd)


def destroy(store: StateStore, st: ContainerState) -> None:
    from isobox.cgroups import CgroupManager

    if st.data.get("creating"):  # its create was killed before it made anything to record
        store.remove(st.id)
        return
    mgr = CgroupManager.from_state(st.data["cgroup"])
    if st.init_alive():
        if st.frozen():
            mgr.thaw()
        try:
            mgr.kill_all(9)
        except (IsoboxError, OSError):
            pass
        try:
            posix.kill(st.pid, 9)
        except OSError:
            pass
        _wait_exit(st.pid, 10.0)
    elif mgr.pids():
        mgr.kill_all(9)
    mgr.destroy()
    if st.config.get("hooks", {}).get("poststop"):
        from isobox.runtime.hooks import run_hooks

        run_hooks(st.config, "poststop", st.oci_state("stopped"), warn=True)
    store.remove(st.id)


def delete(store: StateStore, cid: str, force: bool = False) -> None:
    st = store.load(cid)
    status = st.status()
    if status in ("running", "paused") and not force:
        raise ConflictError(f"cannot delete container {cid} that is not stopped: {status}")
    destroy(store, st)
