"""linux.resources and linux.cgroupsPath through the real binary, checked in the host's
cgroup files (hybrid host: v1 controllers, hugetlb on the unified hierarchy)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from rt_helpers import cgroup_dirs_matching, expect_failure, read

from harness import RUN_PREFIX, Bundle, Runtime, unique_id
from isobox.cgroups.layout import hierarchies, own_cgroup, parse_proc_cgroup

V1 = "/sys/fs/cgroup"


def init_cgroups(pid: int) -> dict[str, str]:
    """controller (or ``""`` for cgroup2) -> path of ``pid``."""
    out = {}
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        _, ctls, path = line.split(":", 2)
        for c in ctls.split(",") if ctls else [""]:
            out[c] = path
    return out


def ctl_dir(pid: int, ctl: str) -> str:
    path = init_cgroups(pid)[ctl]
    base = f"{V1}/unified" if ctl == "" else f"{V1}/{ctl}"
    return base + path


def start_sleeper(runtime: Runtime, bundle: Bundle) -> tuple[str, int]:
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    return cid, runtime.state(cid)["pid"]


def has_v1(ctl: str) -> bool:
    return any(h.key == ctl and not h.is_v2 for h in hierarchies())


pytestmark = pytest.mark.skipif(not has_v1("memory"), reason="written for a hybrid host")


def test_cpu_memory_pids_cpuset_limits(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["resources"].update({
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swappiness": 10},
        "pids": {"limit": 42},
    })
    cid, pid = start_sleeper(runtime, bundle)
    cpu = ctl_dir(pid, "cpu")
    assert cid in cpu
    assert read(f"{cpu}/cpu.shares").strip() == "512"
    assert read(f"{cpu}/cpu.cfs_quota_us").strip() == "50000"
    assert read(f"{cpu}/cpu.cfs_period_us").strip() == "100000"
    mem = ctl_dir(pid, "memory")
    assert read(f"{mem}/memory.limit_in_bytes").strip() == str(64 << 20)
    assert read(f"{mem}/memory.soft_limit_in_bytes").strip() == str(32 << 20)
    assert read(f"{mem}/memory.swappiness").strip() == "10"
    assert read(f"{ctl_dir(pid, 'pids')}/pids.max").strip() == "42"
    cpuset = ctl_dir(pid, "cpuset")
    assert read(f"{cpuset}/cpuset.cpus").strip() == "0"
    assert read(f"{cpuset}/cpuset.mems").strip() == "0"
    assert read(f"/proc/{pid}/status").count("Cpus_allowed_list:\t0\n") == 1
    runtime("delete", "--force", cid)
    assert not cgroup_dirs_matching(cid)


def test_pids_limit_is_enforced(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["resources"]["pids"] = {"limit": 4}
    bundle.set_args("sh", "-c", "for i in 1 2 3 4 5 6; do sleep 5 & done 2>&1; "
                    "echo started $(jobs -p | wc -l); kill $(jobs -p) 2>/dev/null; true")
    res = runtime("run", "--bundle", bundle.path, unique_id(), check=False)
    assert "can't fork" in res.out or "Resource temporarily unavailable" in res.out, res
    assert "started 6" not in res.out


def test_memory_limit_oom_kills(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}
    bundle.config["mounts"].append({"destination": "/big", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["size=64m"]})
    bundle.set_args("sh", "-c", "head -c 48m /dev/zero > /big/f; echo survived")
    res = runtime("run", "--bundle", bundle.path, unique_id(), check=False)
    assert res.code == 137 or "survived" not in res.out or "No space" in res.err, res


def test_blkio_throttle_and_weight(runtime: Runtime, bundle: Bundle) -> None:
    major, minor = (int(x) for x in read("/sys/block/vda/dev").split(":"))
    bundle.config["linux"]["resources"]["blockIO"] = {
        "weight": 300,
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
    }
    cid, pid = start_sleeper(runtime, bundle)
    d = ctl_dir(pid, "blkio")
    assert f"{major}:{minor} 1048576" in read(f"{d}/blkio.throttle.read_bps_device")
    assert f"{major}:{minor} 100" in read(f"{d}/blkio.throttle.write_iops_device")
    weight = next(f for f in ("blkio.weight", "blkio.bfq.weight") if os.path.exists(f"{d}/{f}"))
    assert read(f"{d}/{weight}").split()[-1] == "300"
    runtime("delete", "--force", cid)


def test_device_cgroup_rules(runtime: Runtime, bundle: Bundle) -> None:
    # runc's default config denies everything; allow reading /dev/kmsg (1:11) only
    bundle.config["linux"]["resources"]["devices"] += [
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}]
    caps = bundle.config["process"]["capabilities"]
    for k in ("bounding", "effective", "permitted"):
        caps[k] += ["CAP_MKNOD", "CAP_SYSLOG"]
    bundle.set_args("sh", "-c", "mknod /dev/kmsg2 c 1 11 && mknod /dev/mem2 c 1 1 && "
                    "head -c0 /dev/kmsg2 && echo kmsg-ok; head -c1 /dev/mem2 2>&1; "
                    "(echo x > /dev/kmsg2) 2>&1; true")
    res = runtime("run", "--bundle", bundle.path, unique_id())
    lines = res.out.splitlines()
    assert lines[0] == "kmsg-ok", res
    assert "Operation not permitted" in lines[1]
    assert "Operation not permitted" in lines[2]  # allowed for reading only
    cid, pid = start_sleeper(runtime, bundle)
    allowed = read(f"{ctl_dir(pid, 'devices')}/devices.list").splitlines()
    assert "c 1:11 r" in allowed and "c 1:3 rwm" in allowed and "a *:* rwm" not in allowed
    runtime("delete", "--force", cid)


def test_hugetlb_limit(runtime: Runtime, bundle: Bundle) -> None:
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no 2 MB huge pages")
    bundle.config["linux"]["resources"]["hugepageLimits"] = [
        {"pageSize": "2MB", "limit": 4 << 21}]
    cid, _ = start_sleeper(runtime, bundle)
    found = cgroup_dirs_matching(cid)
    files = [f"{d}/hugetlb.2MB.max" for d in found if os.path.exists(f"{d}/hugetlb.2MB.max")]
    files += [f"{d}/hugetlb.2MB.limit_in_bytes" for d in found
              if os.path.exists(f"{d}/hugetlb.2MB.limit_in_bytes")]
    assert files and read(files[0]).strip() == str(4 << 21)
    runtime("delete", "--force", cid)


def test_unsupported_page_size_is_an_error(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["resources"]["hugepageLimits"] = [{"pageSize": "3MB", "limit": 0}]
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle="hugepageLimits[0].pageSize")


def test_absolute_cgroups_path(runtime: Runtime, bundle: Bundle) -> None:
    path = f"/{RUN_PREFIX}-abs/{unique_id('g')}"
    bundle.config["linux"]["cgroupsPath"] = path
    cid, pid = start_sleeper(runtime, bundle)
    cg = init_cgroups(pid)
    for ctl in ("memory", "cpu", "pids", "freezer", "devices", "name=systemd", ""):
        assert cg[ctl] == path, (ctl, cg)
    runtime("delete", "--force", cid)
    assert not cgroup_dirs_matching(f"{RUN_PREFIX}-abs"), "delete left the parent it made"


def test_relative_cgroups_path_is_under_the_callers_cgroup(runtime: Runtime,
                                                           bundle: Bundle) -> None:
    rel = f"{RUN_PREFIX}-rel/{unique_id('g')}"
    bundle.config["linux"]["cgroupsPath"] = rel
    cid, pid = start_sleeper(runtime, bundle)
    own = parse_proc_cgroup(read("/proc/self/cgroup"))
    cg = init_cgroups(pid)
    for h in hierarchies():
        if h.is_v2:
            continue
        ctl = h.controllers[0] if h.controllers else h.options
        parent = own_cgroup(h, own).rstrip("/")
        assert cg[ctl] == f"{parent}/{rel}", (ctl, cg[ctl])
    runtime("delete", "--force", cid)
    assert not cgroup_dirs_matching(f"{RUN_PREFIX}-rel")


def test_default_cgroups_path_is_the_id(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"].pop("cgroupsPath", None)
    cid, pid = start_sleeper(runtime, bundle)
    assert init_cgroups(pid)["pids"].rsplit("/", 1)[1] == cid
    runtime("delete", "--force", cid)


def test_systemd_cgroups_path(runtime: Runtime, bundle: Bundle) -> None:
    name = unique_id("s")
    bundle.config["linux"]["cgroupsPath"] = f"{RUN_PREFIX}.slice:isobox:{name}"
    cid, pid = start_sleeper(runtime, bundle)
    assert init_cgroups(pid)["memory"] == f"/{RUN_PREFIX}.slice/isobox-{name}.scope"
    runtime("delete", "--force", cid)
    assert not cgroup_dirs_matching(f"{RUN_PREFIX}.slice")


@pytest.fixture
def existing_parent() -> Iterator[str]:
    name = f"{RUN_PREFIX}-parent"
    made = []
    for h in hierarchies():
        d = f"{h.mountpoint}/{name}"
        if not os.path.isdir(d):
            os.mkdir(d)
            made.append(d)
            if "cpuset" in h.controllers:
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(f"{d}/{f}", "w") as out:
                        out.write(read(f"{h.mountpoint}/{f}").strip())
    yield name
    for d in made:
        for sub, _, _ in sorted(os.walk(d), key=lambda w: -len(w[0])):
            os.rmdir(sub)


def test_delete_removes_only_the_cgroups_it_made(runtime: Runtime, bundle: Bundle,
                                                 existing_parent: str) -> None:
    bundle.config["linux"]["cgroupsPath"] = f"/{existing_parent}/{unique_id('g')}"
    cid, pid = start_sleeper(runtime, bundle)
    leaf = ctl_dir(pid, "memory")
    assert os.path.isdir(leaf)
    runtime("delete", "--force", cid)
    assert not os.path.exists(leaf)
    assert os.path.isdir(f"{V1}/memory/{existing_parent}")
    assert os.path.isdir(f"{V1}/unified/{existing_parent}")


def test_parent_cgroup_shared_by_two_containers_is_kept(
        runtime: Runtime, bundle: Bundle, existing_parent: str) -> None:
    """Deleting one container never removes a cgroup that another one still uses (the
    parent made by the first stays; nobody removes it then, as with runc's leaf-only
    removal: the fixture does)."""
    group = f"/{existing_parent}/{unique_id('g')}"
    bundle.config["linux"]["cgroupsPath"] = f"{group}/a"
    first, _ = start_sleeper(runtime, bundle)
    bundle.config["linux"]["cgroupsPath"] = f"{group}/b"
    second, pid2 = start_sleeper(runtime, bundle)
    runtime("delete", "--force", first)
    assert os.path.isdir(ctl_dir(pid2, "memory"))
    assert not os.path.exists(f"{V1}/memory{group}/a")
    runtime("delete", "--force", second)
    assert not os.path.exists(f"{V1}/memory{group}/b")


@pytest.mark.skipif(not has_v1("cpuset"), reason="needs a cgroup v1 cpuset hierarchy")
def test_existing_parent_with_an_empty_cpuset_is_filled(runtime: Runtime,
                                                        bundle: Bundle) -> None:
    """The moment of a race between two creates sharing a new parent: one has made the
    parent's cpuset directory and not yet copied cpus/mems into it, the other finds it
    and makes its container's cgroup under it. Without filling the existing parent, the
    init cannot join (ENOSPC, seen with 32 concurrent `isobox run`)."""
    parent = f"{V1}/cpuset/{RUN_PREFIX}-emptycpuset"
    os.mkdir(parent)  # as the other create left it: cpus and mems still empty
    try:
        assert read(f"{parent}/cpuset.cpus").strip() == ""
        bundle.config["linux"]["cgroupsPath"] = f"/{RUN_PREFIX}-emptycpuset/{unique_id('g')}"
        cid, pid = start_sleeper(runtime, bundle)
        assert read(f"{parent}/cpuset.cpus").strip() == read(f"{V1}/cpuset/cpuset.cpus").strip()
        assert read(f"{ctl_dir(pid, 'cpuset')}/cpuset.mems").strip() != ""
        runtime("delete", "--force", cid)
    finally:
        for sub, _, _ in sorted(os.walk(parent), key=lambda w: -len(w[0])):
            os.rmdir(sub)
    assert not cgroup_dirs_matching(f"{RUN_PREFIX}-emptycpuset")


@pytest.mark.parametrize(("path", "needle"), [
    ("/../escape", "linux.cgroupsPath"),
    ("a:b", "linux.cgroupsPath"),
    ("bad.slice:x:y:z", "linux.cgroupsPath"),
])
def test_bad_cgroups_path(runtime: Runtime, bundle: Bundle, path: str, needle: str) -> None:
    bundle.config["linux"]["cgroupsPath"] = path
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid, needle=needle)


@pytest.mark.parametrize(("resources", "needle"), [
    ({"memory": {"limit": "lots"}}, "linux.resources.memory.limit"),
    ({"cpu": {"cpus": "zero"}}, "linux.resources.cpu.cpus"),
    ({"cpu": {"cpus": "63"}}, "cpuset.cpus"),
    ({"pids": {"limit": 1.5}}, "linux.resources.pids.limit"),
    ({"devices": [{"allow": True, "type": "x", "access": "rwm"}]},
     "linux.resources.devices[0].type"),
])
def test_bad_resources(runtime: Runtime, bundle: Bundle, resources: dict[str, Any],
                       needle: str) -> None:
    bundle.config["linux"]["resources"].update(resources)
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid, needle=needle)
