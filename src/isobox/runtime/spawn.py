"""Forking the processes that enter a container, straight into its cgroups."""

from __future__ import annotations

import posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from isobox.cgroups import CgroupManager


def fork_in_cgroup(mgr: CgroupManager) -> tuple[int, bool]:
    """fork(), with the child born in the container's cgroup2 directory when the kernel can
    (no cgroup.procs write, so no RCU grace period); (pid, whether it was born there).

    The child then calls ``mgr.add_self(skip_unified=born_there)`` for the v1 hierarchies.
    """
    unified = mgr.unified_dir()
    if unified:
        from isobox.linux.clone import fork_into_cgroup

        fd = posix.open(unified, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        try:
            return fork_into_cgroup(fd), True
        except OSError:
            pass
        finally:
            posix.close(fd)
    return posix.fork(), False


def clone_init(mgr: CgroupManager, new_ns: list[str]) -> int | None:
    """Create the container's init directly: clone3 with its new namespaces, born in its
    cgroup2 directory. 0 in the child, its pid in the parent, None when this shortcut does
    not apply (a user or time namespace, which need set-up between unshare and fork, or no
    cgroup2 hierarchy) or the kernel refuses it; the caller then goes through stage A.

    The cgroup namespace is left out: stage B creates it once it is in all its cgroups.
    """
    unified = mgr.unified_dir()
    if not unified or "user" in new_ns or "time" in new_ns:
        return None
    from isobox.linux.clone import fork_into_cgroup
    from isobox.runtime.namespaces import NS_FLAGS

    flags = 0
    for t in new_ns:
        if t != "cgroup":
            flags |= NS_FLAGS[t]
    fd = posix.open(unified, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        return fork_into_cgroup(fd, flags)
    except OSError:
        return None
    finally:
        posix.close(fd)
