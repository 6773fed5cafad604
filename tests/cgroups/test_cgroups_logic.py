"""Pure logic: path resolution, mountinfo parsing, rule emulation, validation, conversions."""

from __future__ import annotations

import os
import posix
from typing import Any

import pytest

from isobox import fastjson
from isobox.cgroups import CgroupManager, resolve_path
from isobox.cgroups.devices import DEFAULT_RULES, emulate, normalize
from isobox.cgroups.ebpf import build_program
from isobox.cgroups.layout import (
    Hierarchy,
    layout_of,
    own_cgroup,
    parse_mountinfo,
    parse_proc_cgroup,
)
from isobox.cgroups.resources import pids_value, validate
from isobox.cgroups.v2 import blkio_to_io_weight, shares_to_weight, swap_value
from isobox.errors import ConfigError, SystemSetupError

WHERE = "config.json: linux.cgroupsPath"

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
90 23 0:32 /docker /mnt/memory\\040copy rw - cgroup cgroup rw,memory
"""

V1_COMOUNT = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/net_cls,net_prio rw shared:12 - cgroup cgroup rw,net_cls,net_prio
30 25 0:27 / /sys/fs/cgroup/pids rw shared:13 - cgroup cgroup rw,pids
"""

V2 = """\
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
27 22 0:24 / /sys/fs/cgroup/weird rw - cgroup cgroup rw,name=systemd
"""


# -- resolve_path -----------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "want"), [
    ("/a/b", "/a/b"),
    ("/a//b/./c/", "/a/b/c"),
    ("a/b", "a/b"),
    (None, "abc"),
    ("", "abc"),
    ("system.slice:isobox:abc", "/system.slice/isobox-abc.scope"),
    (":isobox:abc", "/system.slice/isobox-abc.scope"),
    ("a-b.slice:isobox:abc", "/a.slice/a-b.slice/isobox-abc.scope"),
    ("a-b-c.slice::abc", "/a.slice/a-b.slice/a-b-c.slice/abc.scope"),
    ("-.slice:isobox:abc", "/isobox-abc.scope"),
    ("machine.slice:isobox:", "/machine.slice/isobox-abc.scope"),
    ("user.slice:x:my.slice", "/user.slice/my.slice"),
])
def test_resolve_path(given: str | None, want: str) -> None:
    assert resolve_path(given, "abc") == want


@pytest.mark.parametrize("bad", [
    "/a/../b", "../x", "a/..", "/", "//", "a:b", "a:b:c:d", "x.slic:isobox:abc",
    "a--b.slice:p:n", "-a.slice:p:n", ".slice:p:n", "system.slice:p:a/b", "/a\0b",
])
def test_resolve_path_rejects(bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_path(bad, "abc")
    assert exc.value.where == WHERE


def test_resolve_path_bad_container_id() -> None:
    with pytest.raises(ConfigError):
        resolve_path(None, "..")


# -- mountinfo ------------------------------------------------------------------------------

def test_parse_hybrid() -> None:
    hiers = parse_mountinfo(HYBRID)
    assert [h.key for h in hiers] == ["cpu", "cpuacct", "memory", "systemd", "unified"]
    assert layout_of(hiers) == "hybrid"
    by = {h.key: h for h in hiers}
    assert by["systemd"].options == "name=systemd"
    assert by["systemd"].controllers == ()
    assert by["memory"].mountpoint == "/sys/fs/cgroup/memory"  # the bind mount is dropped
    assert by["unified"].fstype == "cgroup2" and by["unified"].options == ""


def test_parse_bind_mount_escaped_name() -> None:
    text = "90 23 0:32 /docker /mnt/memory\\040copy rw - cgroup cgroup rw,memory\n"
    (h,) = parse_mountinfo(text)
    assert h.mountpoint == "/mnt/memory copy" and h.root == "/docker"


def test_parse_v1_comounted() -> None:
    hiers = parse_mountinfo(V1_COMOUNT)
    assert layout_of(hiers) == "v1"
    assert [h.key for h in hiers] == ["cpu,cpuacct", "net_cls,net_prio", "pids"]
    assert hiers[0].controllers == ("cpu", "cpuacct")


def test_parse_pure_v2_ignores_named_v1() -> None:
    hiers = parse_mountinfo(V2)
    assert layout_of(hiers) == "v2"
    assert len(hiers) == 1 and hiers[0].key == "" and hiers[0].mountpoint == "/sys/fs/cgroup"


def test_no_cgroups() -> None:
    with pytest.raises(SystemSetupError):
        layout_of(parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/vda rw\n"))


def test_own_cgroup() -> None:
    own = parse_proc_cgroup("9:name=systemd:/s\n4:memory:/docker/x\n1:cpuacct,cpu:/c\n0::/u\n")
    hiers = {h.key: h for h in parse_mountinfo(HYBRID + V1_COMOUNT)}
    assert own_cgroup(hiers["systemd"], own) == "/s"
    assert own_cgroup(hiers["memory"], own) == "/docker/x"
    assert own_cgroup(hiers["unified"], own) == "/u"
    assert own_cgroup(hiers["cpu,cpuacct"], own) == "/c"  # controller order does not matter
    bound = Hierarchy("memory", "/mnt/m", "cgroup", "memory", "/docker", ("memory",))
    assert own_cgroup(bound, own) == "/x"  # relative to the bind mount's root


def test_manager_dirs_and_mounts() -> None:
    hiers = parse_mountinfo(HYBRID)
    mgr = CgroupManager("/x/y", hierarchies=hiers)
    assert mgr.dirs["systemd"] == "/sys/fs/cgroup/systemd/x/y"
    assert mgr.dirs["unified"] == "/sys/fs/cgroup/unified/x/y"
    mounts = {m["name"]: m for m in mgr.hierarchies_for_mount()}
    assert mounts["systemd"]["options"] == "name=systemd"
    assert mounts["unified"]["fstype"] == "cgroup2"
    assert mounts["memory"]["path"] == "/sys/fs/cgroup/memory/x/y"
    comount = CgroupManager("/x", hierarchies=parse_mountinfo(V1_COMOUNT))
    links = {m["name"]: m["links"] for m in comount.hierarchies_for_mount()}
    assert links == {"cpu,cpuacct": ["cpu", "cpuacct"], "net_cls,net_prio":
                     ["net_cls", "net_prio"], "pids": []}


def test_manager_rejects_dotdot_and_root() -> None:
    with pytest.raises(ConfigError):
        CgroupManager("/a/../b", hierarchies=parse_mountinfo(HYBRID))
    with pytest.raises(ConfigError):
        CgroupManager("/", hierarchies=parse_mountinfo(HYBRID))


def test_state_round_trip_touches_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = CgroupManager("/x/y", hierarchies=parse_mountinfo(HYBRID))
    text = fastjson.dumps(mgr.to_state())

    def no_files(*args: Any, **kw: Any) -> Any:
        raise AssertionError("from_state opened a file")

    monkeypatch.setattr(os, "open", no_files)
    monkeypatch.setattr(posix, "open", no_files)  # the cgroups package calls posix directly
    monkeypatch.setattr("builtins.open", no_files)
    again = CgroupManager.from_state(fastjson.loads(text))
    monkeypatch.undo()
    assert again.to_state() == mgr.to_state()
    assert again.hierarchies_for_mount() == mgr.hierarchies_for_mount()
    with pytest.raises(SystemSetupError):
        CgroupManager.from_state({"version": 1})


# -- devices --------------------------------------------------------------------------------

def test_normalize_splits_type_a() -> None:
    rules = normalize([{"allow": True, "major": 1, "minor": 3, "access": "wr"},
                       {"allow": False, "access": "rwm"}, {"allow": True, "access": "m"}])
    assert [r.cgroup_string() for r in rules] == [
        "c 1:3 rw", "b 1:3 rw", "a", "c *:* m", "b *:* m"]


@pytest.mark.parametrize(("rule", "field"), [
    ({"access": "rwm"}, "[0].allow"),
    ({"allow": True, "type": "x"}, "[0].type"),
    ({"allow": True, "access": "rwx"}, "[0].access"),
    ({"allow": True, "major": -2}, "[0].major"),
    ({"allow": True, "minor": "1"}, "[0].minor"),
])
def test_normalize_errors(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        normalize([rule])
    assert exc.value.where == f"config.json: linux.resources.devices{field}"


def test_emulate() -> None:
    allow, exc = emulate(normalize([*DEFAULT_RULES]))
    assert not allow
    assert "c 1:3 rwm" in [r.cgroup_string() for r in exc]
    assert all(r.allow for r in exc)
    # deny after allow removes access bits from the identical exception only
    allow, exc = emulate(normalize([{"allow": True, "type": "c", "major": 1, "minor": 5},
                                    {"allow": False, "type": "c", "major": 1, "minor": 5,
                                     "access": "w"},
                                    {"allow": False, "type": "c", "major": 1, "access": "r"}]))
    assert [r.cgroup_string() for r in exc] == ["c 1:5 rm"]
    # allow-all then a deny: an allow default with one denied exception
    allow, exc = emulate(normalize([{"allow": True}, {"allow": False, "type": "b"}]))
    assert allow and [(r.allow, r.cgroup_string()) for r in exc] == [(False, "b *:* rwm")]


def test_build_program_shape() -> None:
    prog = build_program(normalize([{"allow": True, "type": "c", "major": 1, "minor": 3,
                                     "access": "rw"}]))
    assert len(prog) % 8 == 0
    assert prog[-8] == 0x95  # ends with exit
    assert len(prog) // 8 == 6 + 8 + 2


# -- validation and conversions -------------------------------------------------------------

R = "config.json: linux.resources"


@pytest.mark.parametrize(("res", "where"), [
    ({"memory": {"limit": -2}}, f"{R}.memory.limit"),
    ({"memory": {"limit": "1"}}, f"{R}.memory.limit"),
    ({"memory": {"swappiness": 101}}, f"{R}.memory.swappiness"),
    ({"memory": {"limit": 100, "swap": 50}}, f"{R}.memory.swap"),
    ({"memory": {"disableOOMKiller": 1}}, f"{R}.memory.disableOOMKiller"),
    ({"cpu": {"quota": -5}}, f"{R}.cpu.quota"),
    ({"cpu": {"shares": -1}}, f"{R}.cpu.shares"),
    ({"cpu": {"cpus": "0-1;rm"}}, f"{R}.cpu.cpus"),
    ({"cpu": {"idle": 2}}, f"{R}.cpu.idle"),
    ({"pids": {"limit": True}}, f"{R}.pids.limit"),
    ({"blockIO": {"weight": 5}}, f"{R}.blockIO.weight"),
    ({"blockIO": {"weightDevice": [{"major": 8}]}}, f"{R}.blockIO.weightDevice[0].minor"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}},
     f"{R}.blockIO.throttleReadBpsDevice[0].rate"),
    ({"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}, f"{R}.hugepageLimits[0].pageSize"),
    ({"network": {"priorities": [{"name": "a b", "priority": 1}]}},
     f"{R}.network.priorities[0].name"),
    ({"unified": {"../x": "1"}}, f'{R}.unified["../x"]'),
    ({"unified": {"memory.max": 1}}, f'{R}.unified["memory.max"]'),
    ({"devices": [{"allow": True, "access": "q"}]}, f"{R}.devices[0].access"),
    ([], R),
])
def test_validate_names_the_field(res: Any, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        validate(res)
    assert exc.value.where == where


def test_validate_accepts_full_document() -> None:
    validate({
        "memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": 2 << 30, "kernel": -1,
                   "kernelTCP": -1, "swappiness": 0, "disableOOMKiller": False,
                   "checkBeforeUpdate": True},
        "cpu": {"shares": 1024, "quota": -1, "period": 100000, "realtimeRuntime": 0,
                "realtimePeriod": 0, "cpus": "0-1", "mems": "0", "idle": 0, "burst": 0},
        "pids": {"limit": -1},
        "blockIO": {"weight": 500, "leafWeight": 10,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 100}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
        "unified": {"memory.high": "max"},
        "devices": list(DEFAULT_RULES),
        "somethingNew": {"x": 1},
    })


def test_conversions() -> None:
    assert pids_value(5) == "5" and pids_value(0) == "1" and pids_value(-1) == "max"
    assert [shares_to_weight(s) for s in (0, 2, 1024, 262144)] == [0, 1, 100, 10000]
    assert 1 < shares_to_weight(512) < 100 < shares_to_weight(2048) < 10000
    assert blkio_to_io_weight(10) == 1 and blkio_to_io_weight(1000) == 10000
    assert blkio_to_io_weight(500) == 1 + 490 * 9999 // 990
    assert swap_value(0, -1) == -1 and swap_value(-1, 100) == -1 and swap_value(0, 100) == 0
    assert swap_value(300, 100) == 200 and swap_value(100, 100) == 0
    with pytest.raises(ConfigError):
        swap_value(300, 0)
