"""Forking the processes that enter a container, straight into its cgroups."""

from __future__ import annotations

import os

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

        fd = os.open(unified, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return fork_into_cgroup(fd), True
        except OSError:
            pass
        finally:
            os.close(fd)
    return os.fork(), False
