"""cgroups: one interface over v1, v2 and hybrid hierarchies.

Typical use by the runtime::

    mgr = CgroupManager(resolve_path(spec_cgroups_path, container_id))
    mgr.create(); mgr.apply(resources); mgr.add(init_pid)   # state: mgr.to_state()
    ...
    CgroupManager.from_state(saved).destroy()

Only :mod:`os`-level imports happen here; v1/v2 drivers, statistics and the eBPF device
filter (``ctypes``) are imported when first used.
"""

from isobox.cgroups.layout import detect_layout
from isobox.cgroups.manager import CgroupManager
from isobox.cgroups.paths import resolve_path

__all__ = ["CgroupManager", "detect_layout", "resolve_path"]
