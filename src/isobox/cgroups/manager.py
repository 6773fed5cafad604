"""The cgroup of one container across every hierarchy of the host.

The manager keeps, per hierarchy key (``cpu``, ``memory``, ``systemd``, ``unified``; ``""`` on
pure v2), the container's directory, and per controller the hierarchy that owns it. v1
controllers win on hybrid hosts; controllers only the unified hierarchy has (``hugetlb`` on
some hybrid hosts) are driven through it with v2 semantics. Everything needed later is in
:meth:`to_state`, so :meth:`from_state` touches no file.
"""

from __future__ import annotations

import errno
import posix  # not os: ``isobox-runtime delete`` never imports it (1.5-2 ms)

from isobox.cgroups import fs
from isobox.errors import ConfigError, SystemSetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from isobox.cgroups.layout import Hierarchy

_STATE_VERSION = 1
DESTROY_WAIT = 5.0  # seconds a busy container cgroup is retried by destroy()
PARENT_RETRIES = 5  # times create() makes a path again whose parent another delete removed
_SIGKILL = 9  # not signal.SIGKILL: importing signal imports enum (start-up time)


class CgroupManager:
    """Create, limit, freeze, signal, measure and remove one cgroup on every hierarchy.

    ``path`` is :func:`~isobox.cgroups.resolve_path`'s result: absolute (the same path in
    every hierarchy) or relative (under the calling process's own cgroup, per hierarchy).
    ``hierarchies`` overrides host detection (tests use it to drive the unified hierarchy of a
    hybrid host as if it were a pure-v2 host).
    """

    __slots__ = ("_created", "_ctl", "_dirs", "_mounts", "_v2key", "layout", "path")

    def __init__(self, path: str, *, hierarchies: list[Hierarchy] | None = None) -> None:
        from isobox.cgroups import layout as lay
        from isobox.cgroups.paths import _clean

        clean = _clean(path, path)
        if not clean:
            raise ConfigError("config.json: linux.cgroupsPath", "must not be the root cgroup")
        hiers = lay.hierarchies() if hierarchies is None else hierarchies
        self.layout = lay.layout_of(hiers)
        self.path = "/" + clean if path.startswith("/") else clean
        own: dict[str, str] = {}
        if not path.startswith("/"):
            with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
                own = lay.parse_proc_cgroup(f.read())
        self._dirs: dict[str, str] = {}
        self._ctl: dict[str, str] = {}
        self._mounts: dict[str, list[Any]] = {}
        self._v2key: str | None = None
        self._created: list[str] = []
        for h in hiers:
            base = "/" + clean
            if own:
                parent = lay.own_cgroup(h, own).rstrip("/")
                base = parent + base
            self._dirs[h.key] = h.mountpoint.rstrip("/") + base
            self._mounts[h.key] = h.to_list()
            if h.is_v2:
                self._v2key = h.key
            for c in h.controllers:
                self._ctl.setdefault(c, h.key)
        if self._v2key is not None:
            mp = self._mounts[self._v2key][1]
            for c in (fs.read_opt(f"{mp}/cgroup.controllers") or "").split():
                self._ctl.setdefault(c, self._v2key)

    # -- state ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "path": self.path, "layout": self.layout,
                "dirs": dict(self._dirs), "controllers": dict(self._ctl),
                "mounts": dict(self._mounts), "v2": self._v2key,
                "created": list(self._created)}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> CgroupManager:
        """Rebuild from :meth:`to_state` output without reading any file."""
        self = cls.__new__(cls)
        try:
            if data["version"] != _STATE_VERSION:
                raise ValueError(f"version {data['version']}")
            self.path = str(data["path"])
            self.layout = str(data["layout"])
            self._dirs = {str(k): str(v) for k, v in data["dirs"].items()}
            self._ctl = {str(k): str(v) for k, v in data["controllers"].items()}
            self._mounts = {str(k): list(v) for k, v in data["mounts"].items()}
            v2key = data["v2"]
            self._v2key = None if v2key is None else str(v2key)
            self._created = [str(d) for d in data["created"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SystemSetupError(f"corrupt cgroup state: {exc}") from None
        return self

    @property
    def dirs(self) -> dict[str, str]:
        """Hierarchy key → the container's directory on the host."""
        return dict(self._dirs)

    def exists(self) -> bool:
        from isobox.linux.pathnames import isdir

        return all(isdir(d) for d in self._dirs.values())

    def hierarchies_for_mount(self) -> list[dict[str, Any]]:
        """What the runtime needs to give a container its cgroupfs, one dict per hierarchy:

        * ``name``: relative name under ``/sys/fs/cgroup`` (``cpu,cpuacct``, ``systemd``,
          ``unified``; ``""`` on pure v2, mounted on ``/sys/fs/cgroup`` itself);
        * ``mountpoint``: the host's mount; ``fstype``: ``cgroup`` or ``cgroup2``;
        * ``options``: ``-o`` data for a fresh mount (``cpu,cpuacct``, ``name=systemd``,
          ``""``), used inside a new cgroup namespace;
        * ``path``: the container's directory on the host (source of a bind mount otherwise);
        * ``links``: symlinks to create beside a co-mounted hierarchy (``cpu`` and
          ``cpuacct`` → ``cpu,cpuacct``), as runc does.
        """
        out = []
        for key, raw in self._mounts.items():
            _, mountpoint, fstype, options, _, ctls = raw
            links = [c for c in ctls if c != key] if "," in key else []
            out.append({"name": key, "mountpoint": mountpoint, "fstype": fstype,
                        "options": options, "path": self._dirs[key], "links": links})
        return out

    # -- lifecycle -----------------------------------------------------------------------

    def create(self) -> None:
        """``mkdir -p`` in every hierarchy, remembering only the directories made here.

        v1 ``cpuset`` directories get their parent's cpus/mems; on pure v2 every available
        controller is enabled down to the new cgroup's parent (as runc). On failure, what
        was made is removed again."""
        try:
            for key, d in self._dirs.items():
                mountpoint = self._mounts[key][1].rstrip("/")
                cpuset = "cpuset" in self._mounts[key][5] and key != self._v2key
                for attempt in range(PARENT_RETRIES, -1, -1):
                    try:
                        self._make_path(mountpoint, d, cpuset)
                        break
                    except FileNotFoundError as err:
                        # A parent found existing was removed before our child went in: the
                        # delete of the last container under it, racing (its runtime removes
                        # the parents it made once they are empty). Make the path again.
                        if attempt == 0:
                            raise SystemSetupError(f"cannot create cgroup {d}: "
                                                   f"{err.strerror}") from None
            if self.layout == "v2" and self._v2key is not None:
                from isobox.cgroups.v2 import enable_controllers

                enable_controllers(self._mounts[self._v2key][1].rstrip("/"),
                                   self._dirs[self._v2key])
        except BaseException:
            try:
                self.destroy()
            except SystemSetupError:
                pass
            raise

    def _make_path(self, mountpoint: str, d: str, cpuset: bool) -> None:
        """``mkdir -p`` of ``d`` below ``mountpoint``; FileNotFoundError when a parent went
        away meanwhile."""
        cur = mountpoint
        for comp in d[len(mountpoint):].strip("/").split("/"):
            parent, cur = cur, f"{cur}/{comp}"
            try:
                posix.mkdir(cur, 0o755)
            except FileExistsError:
                pass
            except FileNotFoundError:
                raise
            except OSError as err:
                raise SystemSetupError(f"cannot create cgroup {cur}: {err.strerror}") from None
            else:
                self._created.append(cur)
            if cpuset:  # existing ones too: another create may have made it just now, and
                from isobox.cgroups.v1 import copy_cpuset  # not filled it yet

                copy_cpuset(parent, cur)

    def add(self, pid: int) -> None:
        """Move ``pid`` (a whole process) into the cgroup in every hierarchy."""
        value = str(pid)
        for d in self._dirs.values():
            fs.write(f"{d}/cgroup.procs", value)

    def unified_dir(self) -> str | None:
        """The container's directory on the cgroup2 hierarchy (None without one): a child
        can be created right in it with clone3(CLONE_INTO_CGROUP)."""
        return None if self._v2key is None else self._dirs[self._v2key]

    def add_self(self, skip_unified: bool = False) -> None:
        """Move the calling *single-threaded* process into every hierarchy.

        On v1 it writes "0" to ``tasks``: moving only the current thread skips the kernel's
        global threadgroup lock, whose first taker waits an RCU grace period (~15 ms).
        ``skip_unified`` when the process was born in its cgroup2 directory.
        """
        for key, d in self._dirs.items():
            if key == self._v2key:
                if not skip_unified:
                    fs.write(f"{d}/cgroup.procs", "0")
            else:
                fs.write(f"{d}/tasks", "0")

    def destroy(self) -> None:
        """Remove the directories :meth:`create` made, deepest first; never others.

        The container's own directories are retried on EBUSY for up to 5 s (processes still
        exiting: a killed init on a loaded 2-core host has been seen to take over 2 s) and lose
        their sub-cgroups first (made inside the container). A created parent that is busy
        holds other cgroups now and is left alone."""
        import time

        leaves = set(self._dirs.values())
        left: list[str] = []
        deadline = time.monotonic() + DESTROY_WAIT  # for all directories together
        for d in reversed(self._created):
            if not _rmdir(d, d in leaves, deadline):
                left.append(d)
        self._created = left[::-1]
        busy = [d for d in left if d in leaves]
        if busy:
            raise SystemSetupError(f"cannot remove cgroup {busy[0]}: still busy after "
                                   f"{DESTROY_WAIT:g} s (processes left in it?)")

    # -- resources -----------------------------------------------------------------------

    def apply(self, resources: dict[str, Any]) -> None:
        """Apply an OCI ``linux.resources`` object. Device rules always start from deny-all
        (the runtime appends :data:`isobox.cgroups.devices.DEFAULT_RULES` itself)."""
        self._set(resources, update=False)

    def update(self, resources: dict[str, Any]) -> None:
        """Apply only the fields present, as ``runc update``. Device rules are ignored (runc
        too): re-writing them could open a window, and an update may never widen them."""
        self._set(resources, update=True)

    def controller_dir(self, ctl: str) -> tuple[str, bool] | None:
        """``(directory, is_v2)`` of the hierarchy that owns controller ``ctl``, or None."""
        key = self._ctl.get(ctl)
        if key is None:
            return None
        return self._dirs[key], key == self._v2key

    def _target(self, ctl: str, what: str) -> tuple[str, bool]:
        found = self.controller_dir(ctl)
        if found is None:
            raise SystemSetupError(f"cannot set {what}: the {ctl} cgroup controller is not "
                                   "available on this host")
        d, is_v2 = found
        if is_v2 and self.layout == "hybrid" and self._v2key is not None:
            from isobox.cgroups.v2 import enable_controllers

            enable_controllers(self._mounts[self._v2key][1].rstrip("/"), d, {ctl})
        return found

    def _set(self, res: dict[str, Any], update: bool) -> None:
        from isobox.cgroups import v1, v2
        from isobox.cgroups.resources import R, validate

        validate(res)
        cpu = res.get("cpu") or {}
        if cpu.get("cpus") or cpu.get("mems"):
            d, is_v2 = self._target("cpuset", "linux.resources.cpu.cpus/mems")
            (v2 if is_v2 else v1).set_cpuset(d, cpu)
        if not update:
            self._set_devices(res.get("devices") or [])
        mem = res.get("memory") or {}
        if any(mem.get(k) for k in ("limit", "reservation", "swap", "kernel", "kernelTCP",
                                    "disableOOMKiller")) or mem.get("swappiness") is not None:
            d, is_v2 = self._target("memory", "linux.resources.memory")
            (v2 if is_v2 else v1).set_memory(d, mem, update)
        if any(cpu.get(k) for k in ("shares", "quota", "period", "realtimeRuntime",
                                    "realtimePeriod")) or any(
                cpu.get(k) is not None for k in ("idle", "burst")):
            d, is_v2 = self._target("cpu", "linux.resources.cpu")
            (v2 if is_v2 else v1).set_cpu(d, cpu)
        pids = res.get("pids") or {}
        if pids.get("limit") is not None:
            d, is_v2 = self._target("pids", "linux.resources.pids")
            (v2 if is_v2 else v1).set_pids(d, pids)
        bio = res.get("blockIO") or {}
        if any(bio.values()):
            found = self.controller_dir("blkio")
            if found is not None and not found[1]:
                v1.set_blkio(found[0], bio)
            else:
                d, _ = self._target("io", "linux.resources.blockIO")
                v2.set_io(d, bio)
        huge = res.get("hugepageLimits") or []
        if huge:
            d, is_v2 = self._target("hugetlb", "linux.resources.hugepageLimits")
            (v2 if is_v2 else v1).set_hugetlb(d, huge)
        net = res.get("network") or {}
        # net_cls / net_prio exist on v1 only; without them the settings are ignored (runc).
        found = self.controller_dir("net_cls")
        if net.get("classID") is not None and found and not found[1]:
            v1.set_net_cls(found[0], net)
        found = self.controller_dir("net_prio")
        if net.get("priorities") and found and not found[1]:
            v1.set_net_prio(found[0], net)
        rdma = res.get("rdma") or {}
        if rdma:
            d, is_v2 = self._target("rdma", "linux.resources.rdma")
            (v2 if is_v2 else v1).set_rdma(d, rdma)
        unified = res.get("unified") or {}
        if unified:
            if self._v2key is None:
                raise ConfigError(f"{R}.unified", "needs cgroup v2 (this host has v1 only)")
            v2.set_unified(self._dirs[self._v2key], unified)

    def _set_devices(self, raw: list[Any]) -> None:
        from isobox.cgroups import devices

        rules = devices.normalize(raw, "config.json: linux.resources.devices")
        found = self.controller_dir("devices")
        if found is not None and not found[1]:
            devices.apply_v1(found[0], rules)
        elif self._v2key is not None:
            from isobox.cgroups.ebpf import attach_device_filter

            attach_device_filter(self._dirs[self._v2key], rules)
        else:
            raise SystemSetupError("cannot restrict device access: no devices cgroup "
                                   "controller and no cgroup v2 hierarchy")

    # -- freezer, processes, signals -----------------------------------------------------

    def _freezer(self) -> tuple[str, bool]:
        found = self.controller_dir("freezer")
        if found is not None:
            return found
        if self._v2key is not None:
            return self._dirs[self._v2key], True
        raise SystemSetupError("cannot freeze: no freezer cgroup controller on this host")

    def freeze(self) -> None:
        """Freeze every process and return once the kernel reports FROZEN."""
        from isobox.cgroups import v1, v2

        d, is_v2 = self._freezer()
        (v2 if is_v2 else v1).freeze(d)

    def thaw(self) -> None:
        from isobox.cgroups import v1, v2

        d, is_v2 = self._freezer()
        (v2 if is_v2 else v1).thaw(d)

    def freezer_state(self) -> str:
        """``FROZEN`` or ``THAWED`` (one file read)."""
        d, is_v2 = self._freezer()
        if is_v2:
            value = fs.read_opt(f"{d}/cgroup.freeze")
            return "FROZEN" if value is not None and value.strip() == "1" else "THAWED"
        state = fs.read_opt(f"{d}/freezer.state")
        return "THAWED" if state is None or state.strip() == "THAWED" else "FROZEN"

    def _procs_dir(self) -> str:
        for ctl in ("freezer", "pids", "devices", "memory"):
            key = self._ctl.get(ctl)
            if key is not None:
                return self._dirs[key]
        if self._v2key is not None:
            return self._dirs[self._v2key]
        return next(iter(self._dirs.values()))

    def pids(self) -> list[int]:
        """Every process in the cgroup and its sub-cgroups (empty if it does not exist)."""
        out: list[int] = []
        _collect_pids(self._procs_dir(), out)
        return out

    def kill_all(self, sig: int) -> None:
        """Send ``sig`` to every process: freeze, signal, thaw (so nothing forks past the
        signal). On pure v2 SIGKILL goes through ``cgroup.kill`` (atomic). A container
        frozen before stays frozen unless the signal is SIGKILL."""
        if sig == _SIGKILL and self.layout == "v2" and self._v2key is not None:
            try:
                fs.write(f"{self._dirs[self._v2key]}/cgroup.kill", "1")
                return
            except fs.CgroupWriteError as exc:
                if exc.errno != errno.ENOENT:  # kernel < 5.14: fall back
                    raise
        was_frozen = self.freezer_state() == "FROZEN"
        try:
            self.freeze()
            frozen = True
        except SystemSetupError:
            frozen = False  # best effort, as runc
        try:
            for pid in self.pids():
                try:
                    posix.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if frozen and (not was_frozen or sig == _SIGKILL):
                self.thaw()

    def oom_kill_count(self) -> int:
        """How many processes the OOM killer killed in this cgroup (0 without memcg)."""
        from isobox.cgroups import v1, v2

        found = self.controller_dir("memory")
        if found is None:
            return 0
        count: int = (v2 if found[1] else v1).oom_kill_count(found[0])
        return count

    def stats(self) -> dict[str, Any]:
        from isobox.cgroups import stats as st

        out = st.empty()
        cpu, cpuacct = self.controller_dir("cpu"), self.controller_dir("cpuacct")
        if self.layout == "v2" and self._v2key is not None:
            st.cpu_v2(out, self._dirs[self._v2key])  # cpu.stat is a core file on v2
        else:
            st.cpu_v1(out, cpu[0] if cpu else None, cpuacct[0] if cpuacct else None)
        if found := self.controller_dir("memory"):
            (st.memory_v2 if found[1] else st.memory_v1)(out, found[0])
        if found := self.controller_dir("pids"):
            st.pids(out, found[0])
        if (found := self.controller_dir("blkio")) and not found[1]:
            st.blkio_v1(out, found[0])
        elif found := self.controller_dir("io"):
            st.io_v2(out, found[0])
        if found := self.controller_dir("hugetlb"):
            st.hugetlb(out, found[0], found[1])
        return out


def _collect_pids(d: str, out: list[int]) -> None:
    text = fs.read_opt(f"{d}/cgroup.procs")
    if text is None:
        return
    out.extend(int(x) for x in text.split())
    try:
        with posix.scandir(d) as it:
            subdirs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for sub in subdirs:
        _collect_pids(sub, out)


def _remove_tree(d: str) -> None:
    """Remove the sub-cgroups of ``d``, deepest first (errors ignored: retried by caller)."""
    try:
        with posix.scandir(d) as it:
            subdirs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for sub in subdirs:
        _remove_tree(sub)
        try:
            posix.rmdir(sub)
        except OSError:
            pass


def _rmdir(d: str, own: bool, deadline: float) -> bool:
    """rmdir ``d``; True when it is gone. ``own`` (the container's directory): remove
    sub-cgroups and retry EBUSY until ``deadline``; else EBUSY means "shared now, keep"."""
    import time

    delay = 0.001
    while True:
        try:
            posix.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError as err:
            if err.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise SystemSetupError(f"cannot remove cgroup {d}: {err.strerror}") from None
            if not own:
                return True  # another cgroup lives in it now: not ours to remove any more
        _remove_tree(d)
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
