"""cgroups: one interface over v1, v2 and hybrid hierarchies.

Typical use by the runtime::

    mgr = CgroupManager(resolve_path(spec_cgroups_path, container_id))
    mgr.create(); mgr.apply(resources); mgr.add(init_pid)   # state: mgr.to_state()
    ...
    CgroupManager.from_state(saved).destroy()

Only :mod:`os`-level imports happen here; host detection (``layout``), path resolution, the
v1/v2 drivers, statistics and the eBPF device filter (``ctypes``) are imported when first
used: ``isobox-runtime delete`` needs only the manager rebuilt from its state.
"""

from isobox.cgroups.manager import CgroupManager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from isobox.cgroups.layout import detect_layout
    from isobox.cgroups.paths import resolve_path

__all__ = ["CgroupManager", "detect_layout", "resolve_path"]


def __getattr__(name: str) -> object:
    if name == "detect_layout":
        from isobox.cgroups.layout import detect_layout

        return detect_layout
    if name == "resolve_path":
        from isobox.cgroups.paths import resolve_path

        return resolve_path
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
