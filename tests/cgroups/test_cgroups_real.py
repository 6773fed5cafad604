"""Real cgroups on this host (v1, hybrid or v2), as root: limits hold, freezing freezes,
killing kills, and only what was created is removed."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import pytest
from cg_helpers import Children, unique, wait_for

from isobox.cgroups import CgroupManager, detect_layout
from isobox.cgroups.devices import DEFAULT_RULES
from isobox.cgroups.layout import hierarchies, own_cgroup, parse_proc_cgroup
from isobox.errors import ConfigError, SystemSetupError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

DEV = list(DEFAULT_RULES)
MiB = 1 << 20
MakeCg = Callable[..., CgroupManager]


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def ctl_dir(mgr: CgroupManager, ctl: str, v1: bool = True) -> str:
    found = mgr.controller_dir(ctl)
    if found is None or (v1 and found[1]):
        pytest.skip(f"no {'v1 ' if v1 else ''}{ctl} controller on this host")
    return found[0]


def proc_cgroups(pid: int) -> dict[str, str]:
    return parse_proc_cgroup(read(f"/proc/{pid}/cgroup"))


def expected_lines(mgr: CgroupManager) -> dict[str, str]:
    out = {}
    for m in mgr.hierarchies_for_mount():
        key = m["options"] if m["fstype"] == "cgroup" else ""
        out[key] = m["path"][len(m["mountpoint"].rstrip("/")):]
    return out


def block_device() -> str | None:
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith(("zram", "ram")) and os.path.exists(f"/sys/block/{name}/dev"):
            return read(f"/sys/block/{name}/dev")
    return None


# -- create / add / destroy ---------------------------------------------------------------

def test_add_joins_every_hierarchy(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    assert mgr.exists()
    procs = [children.gated("exec sleep 30") for _ in range(2)]
    for p in procs:
        mgr.add(p.pid)
    want = expected_lines(mgr)
    assert len(want) == len(hierarchies())
    if detect_layout() == "hybrid":
        assert "" in want  # the 0:: unified line is joined too (CATALOGUE case 26)
    for p in procs:
        got = proc_cgroups(p.pid)
        for key, path in want.items():
            line = got.get(key)
            if line is None:  # the kernel may order co-mounted controllers differently
                line = next(v for k, v in got.items() if set(k.split(",")) == set(key.split(",")))
            assert line == path, (key, got)
    assert proc_cgroups(procs[0].pid) == proc_cgroups(procs[1].pid)
    assert sorted(mgr.pids()) == sorted(p.pid for p in procs)


def test_relative_path_nests_under_own_cgroup(make_cg: MakeCg) -> None:
    name = unique("rel")
    mgr = make_cg(name)
    own = parse_proc_cgroup(read("/proc/self/cgroup"))
    for h in hierarchies():
        parent = own_cgroup(h, own).rstrip("/")
        assert mgr.dirs[h.key] == f"{h.mountpoint}{parent}/{name}"
        assert os.path.isdir(mgr.dirs[h.key])


def test_destroy_removes_only_created_dirs(make_cg: MakeCg) -> None:
    parent = "/" + unique("parent")
    outer = make_cg(parent)
    inner = make_cg(parent + "/a/b")
    created = inner.to_state()["created"]
    assert len(created) == 2 * len(hierarchies())
    assert all(d.endswith(("/a", "/a/b")) for d in created)
    sibling = make_cg(parent + "/a/c")
    assert all(d.endswith("/a/c") for d in sibling.to_state()["created"])
    inner.destroy()
    for d in inner.dirs.values():
        assert not os.path.exists(d)
        assert os.path.isdir(os.path.dirname(d))  # a/ holds the sibling: left alone
    sibling.destroy()
    assert all(os.path.isdir(d) for d in outer.dirs.values())  # pre-existing: untouched
    outer.destroy()  # removes its leaf with the leftover a/ inside
    assert not any(os.path.exists(d) for d in outer.dirs.values())


def test_destroy_waits_for_exiting_processes(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    p = children.gated("exec sleep 30")
    mgr.add(p.pid)
    children.release(p)
    os.kill(p.pid, signal.SIGKILL)
    mgr.destroy()
    assert not any(os.path.exists(d) for d in mgr.dirs.values())
    assert mgr.to_state()["created"] == []


@pytest.mark.slow
def test_destroy_refuses_live_cgroup(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    p = children.gated("exec sleep 30")
    mgr.add(p.pid)
    with pytest.raises(SystemSetupError, match="still busy"):
        mgr.destroy()
    assert mgr.exists()
    p.kill()
    p.wait()
    mgr.destroy()
    assert not any(os.path.exists(d) for d in mgr.dirs.values())


def test_create_remakes_a_parent_removed_meanwhile(make_cg: MakeCg,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Two containers under a parent that the first one's create made: the second finds the
    parent (EEXIST), the first one's delete removes it (empty, and made by that create), then
    the second's mkdir of its own cgroup fails with ENOENT. It makes the path again."""
    import posix

    import isobox.cgroups.manager as manager

    parent = "/" + unique("parent")
    first = make_cg(parent + "/first")
    second = make_cg(parent + "/second", create=False)
    removed: list[bool] = []

    class RacingPosix:
        def __getattr__(self, name: str) -> Any:
            return getattr(posix, name)

        def mkdir(self, path: str, mode: int = 0o777) -> None:
            if path.endswith("/second") and not removed:
                removed.append(True)
                first.destroy()  # the other container's delete, just now
                assert not any(os.path.exists(os.path.dirname(d)) for d in first.dirs.values())
            posix.mkdir(path, mode)

    monkeypatch.setattr(manager, "posix", RacingPosix())
    second.create()
    assert removed
    assert all(os.path.isdir(d) for d in second.dirs.values())
    second.destroy()  # it made the parent again, so removes it too
    assert not any(os.path.exists(os.path.dirname(d)) for d in second.dirs.values())


def test_create_rolls_back_on_failure(make_cg: MakeCg) -> None:
    mgr = make_cg(create=False)
    mgr._dirs["bogus"] = "/proc/self/isobox-nope"  # mkdir fails with EPERM/ENOENT
    mgr._mounts["bogus"] = ["bogus", "/proc/self", "cgroup", "", "/", []]
    with pytest.raises(SystemSetupError, match="cannot create cgroup"):
        mgr.create()
    del mgr._dirs["bogus"]
    assert not any(os.path.exists(d) for d in mgr.dirs.values())


def test_hierarchies_for_mount(make_cg: MakeCg) -> None:
    mgr = make_cg()
    mounts = mgr.hierarchies_for_mount()
    assert {m["mountpoint"] for m in mounts} == {h.mountpoint for h in hierarchies()}
    for m in mounts:
        assert os.path.isdir(m["path"]) and m["path"].startswith(m["mountpoint"])
        assert m["fstype"] in ("cgroup", "cgroup2")
        if m["fstype"] == "cgroup":
            assert m["name"] == os.path.basename(m["mountpoint"]) and m["options"]
    if any(m["name"] == "systemd" for m in mounts):
        assert next(m for m in mounts if m["name"] == "systemd")["options"] == "name=systemd"


# -- limits ------------------------------------------------------------------------------

def test_apply_limits_read_back(make_cg: MakeCg) -> None:
    if detect_layout() == "v2":
        pytest.skip("v1 files")
    mgr = make_cg()
    dev = block_device()
    bio: dict[str, Any] = {"weight": 300}
    if dev:
        major, minor = (int(x) for x in dev.split(":"))
        bio["throttleReadBpsDevice"] = [{"major": major, "minor": minor, "rate": MiB}]
    mgr.apply({
        "memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 128 * MiB,
                   "swappiness": 10, "kernel": 64 * MiB, "kernelTCP": 16 * MiB},
        "pids": {"limit": 42},
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "burst": 1000, "idle": 0,
                "cpus": "0", "mems": "0"},
        "blockIO": bio,
        "devices": DEV,
    })
    mem = ctl_dir(mgr, "memory")
    assert read(f"{mem}/memory.limit_in_bytes") == str(64 * MiB)
    assert read(f"{mem}/memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert read(f"{mem}/memory.soft_limit_in_bytes") == str(32 * MiB)
    assert read(f"{mem}/memory.swappiness") == "10"
    assert read(f"{mem}/memory.kmem.tcp.limit_in_bytes") == str(16 * MiB)
    assert read(f"{ctl_dir(mgr, 'pids')}/pids.max") == "42"
    cpu = ctl_dir(mgr, "cpu")
    assert read(f"{cpu}/cpu.shares") == "512"
    assert read(f"{cpu}/cpu.cfs_quota_us") == "20000"
    assert read(f"{cpu}/cpu.cfs_period_us") == "100000"
    assert read(f"{cpu}/cpu.cfs_burst_us") == "1000"
    assert read(f"{ctl_dir(mgr, 'cpuset')}/cpuset.cpus") == "0"
    blkio = ctl_dir(mgr, "blkio")
    weight = next(f for f in ("blkio.weight", "blkio.bfq.weight")
                  if os.path.exists(f"{blkio}/{f}"))
    assert read(f"{blkio}/{weight}").split()[-1] == "300"
    if dev:
        assert f"{dev} {MiB}" in read(f"{blkio}/blkio.throttle.read_bps_device")
    listing = read(f"{ctl_dir(mgr, 'devices')}/devices.list").splitlines()
    assert "c 1:3 rwm" in listing and "a *:* rwm" not in listing


def test_cpuset_copied_from_parent(make_cg: MakeCg, children: Children) -> None:
    cpuset = ctl_dir(make_cg(), "cpuset")
    assert read(f"{cpuset}/cpuset.cpus") == read(f"{os.path.dirname(cpuset)}/cpuset.cpus")
    assert read(f"{cpuset}/cpuset.mems")


def test_pids_limit_stops_forks(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    mgr.apply({"pids": {"limit": 5}, "devices": DEV})
    r = children.run_in(mgr, "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait")
    # dash gives up at the first failed fork ("Cannot fork"); bash would go on.
    assert "fork" in r.stderr.lower() or "temporarily unavailable" in r.stderr, r.stderr
    pids = ctl_dir(mgr, "pids", v1=False)
    events = dict(ln.split() for ln in read(f"{pids}/pids.events").splitlines())
    assert int(events["max"]) >= 1  # the kernel refused at least one fork
    if os.path.exists(f"{pids}/pids.peak"):
        assert int(read(f"{pids}/pids.peak")) == 5
    assert mgr.stats()["pids"]["limit"] == 5


def test_pids_zero_means_one_and_negative_means_max(make_cg: MakeCg) -> None:
    mgr = make_cg()
    pids = ctl_dir(mgr, "pids", v1=False)
    mgr.apply({"pids": {"limit": 0}, "devices": DEV})
    assert read(f"{pids}/pids.max") == "1"
    mgr.update({"pids": {"limit": -1}})
    assert read(f"{pids}/pids.max") == "max"


def test_memory_update_order(make_cg: MakeCg) -> None:
    mgr = make_cg()
    mem = ctl_dir(mgr, "memory")
    if not os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):
        pytest.skip("no swap accounting")
    mgr.apply({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}, "devices": DEV})

    def limits() -> tuple[int, int]:
        return (int(read(f"{mem}/memory.limit_in_bytes")),
                int(read(f"{mem}/memory.memsw.limit_in_bytes")))

    assert limits() == (32 * MiB, 32 * MiB)
    mgr.update({"memory": {"limit": 64 * MiB, "swap": 64 * MiB}})  # memsw must go first
    assert limits() == (64 * MiB, 64 * MiB)
    mgr.update({"memory": {"limit": 16 * MiB, "swap": 16 * MiB}})  # limit must go first
    assert limits() == (16 * MiB, 16 * MiB)
    with pytest.raises(SystemSetupError, match=r"memory\.swap"):
        mgr.update({"memory": {"limit": 128 * MiB}})
    mgr.update({"memory": {"limit": -1}})  # unlimited, and memsw follows
    lim, sw = limits()
    assert lim > 1 << 40 and sw > 1 << 40


def test_check_before_update(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    mgr.apply({"memory": {"limit": 256 * MiB}, "devices": DEV})
    p = children.gated("exec sleep 30")
    mgr.add(p.pid)
    children.release(p)
    assert wait_for(lambda: mgr.stats()["memory"]["usage"]["usage"] > 4096)
    with pytest.raises(SystemSetupError, match="rejecting memory limit 4096"):
        mgr.update({"memory": {"limit": 4096, "checkBeforeUpdate": True}})


def test_bad_value_writes_nothing(make_cg: MakeCg) -> None:
    mgr = make_cg()
    pids = ctl_dir(mgr, "pids", v1=False)
    with pytest.raises(ConfigError) as exc:
        mgr.apply({"pids": {"limit": 5}, "memory": {"limit": -2}})
    assert exc.value.where == "config.json: linux.resources.memory.limit"
    assert read(f"{pids}/pids.max") == "max"


def test_kernel_refusal_names_file_and_value(make_cg: MakeCg) -> None:
    mgr = make_cg()
    cpu = ctl_dir(mgr, "cpu")
    with pytest.raises(SystemSetupError) as exc:
        mgr.apply({"cpu": {"period": 10}, "devices": DEV})
    assert str(exc.value) == f'cannot write "10" to {cpu}/cpu.cfs_period_us: Invalid argument'
    with pytest.raises(SystemSetupError, match=r'cannot write "4095" to .*cpuset\.cpus'):
        mgr.apply({"cpu": {"cpus": "4095"}, "devices": DEV})


def test_shares_out_of_range(make_cg: MakeCg) -> None:
    mgr = make_cg()
    ctl_dir(mgr, "cpu")
    with pytest.raises(ConfigError, match="maximum allowed cpu-shares is 262144"):
        mgr.apply({"cpu": {"shares": 1 << 20}, "devices": DEV})


def test_unified_map_on_hybrid(make_cg: MakeCg) -> None:
    if detect_layout() != "hybrid":
        pytest.skip("hybrid only")
    mgr = make_cg()
    mgr.apply({"unified": {"cgroup.max.depth": "3"}, "devices": DEV})
    unified = next(m["path"] for m in mgr.hierarchies_for_mount() if m["fstype"] == "cgroup2")
    assert read(f"{unified}/cgroup.max.depth") == "3"
    with pytest.raises(ConfigError) as exc:
        mgr.apply({"unified": {"memory.max": "1"}, "devices": DEV})
    assert exc.value.where == 'config.json: linux.resources.unified["memory.max"]'


def test_hugetlb(unified_subtree: None, make_cg: MakeCg) -> None:
    mgr = make_cg()
    found = mgr.controller_dir("hugetlb")
    if found is None or not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no hugetlb controller or no 2MB pages")
    mgr.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 * 2 * MiB}], "devices": DEV})
    name = "hugetlb.2MB.max" if found[1] else "hugetlb.2MB.limit_in_bytes"
    assert read(f"{found[0]}/{name}") == str(4 * MiB)
    assert "2MB" in mgr.stats()["hugetlb"]
    with pytest.raises(ConfigError) as exc:
        mgr.apply({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}], "devices": DEV})
    assert exc.value.where == "config.json: linux.resources.hugepageLimits[0].pageSize"


# -- devices (v1) ----------------------------------------------------------------------------

def test_devices_v1_deny_all_allow_null(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    devices = ctl_dir(mgr, "devices")
    mgr.apply({"devices": [{"allow": False, "access": "rwm"},
                           {"allow": True, "type": "c", "major": 1, "minor": 3,
                            "access": "rwm"}]})
    assert read(f"{devices}/devices.list") == "c 1:3 rwm"
    r = children.run_in(mgr, "cat /dev/null && echo null-ok; head -c1 /dev/zero")
    assert "null-ok" in r.stdout
    assert "/dev/zero" in r.stderr and "Operation not permitted" in r.stderr


def test_devices_v1_type_a_rule_is_not_allow_all(make_cg: MakeCg) -> None:
    mgr = make_cg()
    devices = ctl_dir(mgr, "devices")
    mgr.apply({"devices": [{"allow": True, "access": "m"}]})
    assert sorted(read(f"{devices}/devices.list").splitlines()) == ["b *:* m", "c *:* m"]


def test_update_never_touches_devices(make_cg: MakeCg) -> None:
    mgr = make_cg()
    devices = ctl_dir(mgr, "devices")
    mgr.apply({"devices": DEV})
    before = read(f"{devices}/devices.list")
    mgr.update({"devices": [{"allow": True, "access": "rwm"}], "pids": {"limit": 9}})
    assert read(f"{devices}/devices.list") == before


# -- freezer, kill, stats, oom --------------------------------------------------------------

def _counter(path: str) -> int:
    try:
        return int(read(path) or "0")
    except (OSError, ValueError):
        return 0


def test_freeze_and_thaw(make_cg: MakeCg, children: Children, tmp_path: Any) -> None:
    mgr = make_cg()
    f = tmp_path / "count"
    p = children.gated(f"i=0; while :; do i=$((i+1)); echo $i > {f}; done")
    mgr.add(p.pid)
    children.release(p)
    assert wait_for(lambda: _counter(str(f)) > 10)
    mgr.freeze()
    assert mgr.freezer_state() == "FROZEN"
    frozen_at = _counter(str(f))
    assert not wait_for(lambda: _counter(str(f)) != frozen_at, timeout=0.3)
    mgr.thaw()
    assert mgr.freezer_state() == "THAWED"
    assert wait_for(lambda: _counter(str(f)) > frozen_at + 10)


def test_kill_all(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    p = children.gated("sleep 30 & sleep 30 & sleep 30 & wait")
    mgr.add(p.pid)
    children.release(p)
    assert wait_for(lambda: len(mgr.pids()) == 4)
    mgr.kill_all(signal.SIGKILL)
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert wait_for(lambda: not mgr.pids())
    assert mgr.freezer_state() == "THAWED"


def test_kill_all_keeps_a_paused_container_paused(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    p = children.gated("exec sleep 30")
    mgr.add(p.pid)
    children.release(p)
    assert wait_for(lambda: read(f"/proc/{p.pid}/comm") == "sleep")
    mgr.freeze()
    mgr.kill_all(signal.SIGTERM)
    assert mgr.freezer_state() == "FROZEN"
    assert p.poll() is None
    mgr.thaw()
    assert p.wait(timeout=5) == -signal.SIGTERM


def test_stats(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    mgr.apply({"pids": {"limit": 10}, "memory": {"limit": 256 * MiB}, "devices": DEV})
    p = children.gated("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 30")
    mgr.add(p.pid)
    children.release(p)

    def ready() -> bool:
        s = mgr.stats()
        return bool(s["cpu"]["usage"]["total"] > 0 and s["memory"]["usage"]["usage"] > 0
                    and read(f"/proc/{p.pid}/comm") == "sleep")

    assert wait_for(ready)
    s = mgr.stats()
    assert s["pids"] == {"current": 1, "limit": 10}
    assert s["memory"]["usage"]["limit"] == 256 * MiB
    assert s["memory"]["raw"]
    assert s["cpu"]["usage"]["user"] + s["cpu"]["usage"]["kernel"] > 0
    q = children.gated("exec sleep 30")
    mgr.add(q.pid)
    assert mgr.stats()["pids"]["current"] == 2


def test_oom_kill_is_counted(make_cg: MakeCg, children: Children) -> None:
    mgr = make_cg()
    mem = mgr.controller_dir("memory")
    if mem is None:
        pytest.skip("no memory controller")
    swap = 32 * MiB if (mem[1] or os.path.exists(f"{mem[0]}/memory.memsw.limit_in_bytes")) else 0
    mgr.apply({"memory": {"limit": 32 * MiB, "swap": swap}, "devices": DEV})
    assert mgr.oom_kill_count() == 0
    r = children.run_in(mgr, f"exec {sys.executable} -c 'x = b\"x\" * (256 << 20)'", timeout=30)
    assert r.returncode == -signal.SIGKILL
    assert mgr.oom_kill_count() >= 1


def test_realtime_and_partial_update(make_cg: MakeCg) -> None:
    mgr = make_cg()
    cpu = ctl_dir(mgr, "cpu")
    if not os.path.exists(f"{cpu}/cpu.rt_runtime_us"):
        pytest.skip("no CONFIG_RT_GROUP_SCHED")
    mgr.apply({"cpu": {"shares": 256, "realtimePeriod": 1000000, "realtimeRuntime": 10000},
               "devices": DEV})
    assert read(f"{cpu}/cpu.rt_period_us") == "1000000"
    assert read(f"{cpu}/cpu.rt_runtime_us") == "10000"
    mgr.update({"cpu": {"quota": 50000, "period": 100000}})
    assert read(f"{cpu}/cpu.cfs_quota_us") == "50000"
    assert read(f"{cpu}/cpu.shares") == "256"  # untouched by a partial update
    mgr.update({"cpu": {"quota": -1}})
    assert read(f"{cpu}/cpu.cfs_quota_us") == "-1"
