"""The cgroup v2 driver for real. On a hybrid host the unified hierarchy is driven as if it
were a pure-v2 host (only the controllers it has, e.g. hugetlb); the eBPF device filter,
``cgroup.freeze`` and ``cgroup.kill`` work there exactly as on pure v2."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cg_helpers import Children, unique, wait_for

from isobox.cgroups import CgroupManager
from isobox.cgroups.devices import DEFAULT_RULES
from isobox.cgroups.ebpf import query
from isobox.cgroups.layout import Hierarchy, hierarchies, parse_proc_cgroup
from isobox.errors import SystemSetupError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

MakeCg = Callable[..., CgroupManager]


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def make_v2(unified_subtree: None, make_cg: MakeCg) -> Iterator[MakeCg]:
    v2 = [h for h in hierarchies() if h.is_v2]
    if not v2:
        pytest.skip("no cgroup2 hierarchy")
    only = Hierarchy("", v2[0].mountpoint, "cgroup2", "", v2[0].root)

    def make(path: str | None = None, **kw: Any) -> CgroupManager:
        return make_cg(path or "/" + unique("v2"), hierarchies=[only], **kw)

    yield make


def _open(path: str) -> str:
    try:
        os.close(os.open(path, os.O_RDONLY))
        return "ok"
    except OSError as err:
        return err.strerror or ""


def test_v2_create_add_destroy(make_v2: MakeCg, children: Children) -> None:
    mgr = make_v2()
    assert mgr.layout == "v2"
    (d,) = mgr.dirs.values()
    p = children.gated("exec sleep 30")
    mgr.add(p.pid)
    assert parse_proc_cgroup(read(f"/proc/{p.pid}/cgroup"))[""] == mgr.path
    assert mgr.pids() == [p.pid]
    (m,) = mgr.hierarchies_for_mount()
    assert m["name"] == "" and m["fstype"] == "cgroup2" and m["path"] == d
    p.kill()
    p.wait()
    mgr.destroy()
    assert not os.path.exists(d)


def test_v2_ebpf_device_filter(make_v2: MakeCg, children: Children) -> None:
    mgr = make_v2()
    mgr.apply({"devices": [{"allow": False, "access": "rwm"},
                           {"allow": True, "type": "c", "major": 1, "minor": 3,
                            "access": "rwm"}]})
    r = children.run_in(mgr, "cat /dev/null && echo null-ok; head -c1 /dev/zero")
    assert "null-ok" in r.stdout
    assert "/dev/zero" in r.stderr and "Operation not permitted" in r.stderr


def test_v2_ebpf_access_bits_and_replacement(make_v2: MakeCg, children: Children) -> None:
    mgr = make_v2()
    mgr.apply({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 5,
                            "access": "r"}]})
    (d,) = mgr.dirs.values()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        first = query(fd)
        assert len(first) == 1
        mgr.apply({"devices": list(DEFAULT_RULES)})  # replaces, never stacks
        second = query(fd)
        assert len(second) == 1 and second != first
    finally:
        os.close(fd)
    r = children.run_in(mgr, "head -c1 /dev/zero | wc -c; echo x > /dev/full; "
                             "test -e /dev/loop0 && { head -c1 /dev/loop0 || true; }")
    assert r.stdout.split()[0] == "1"
    assert "echo" in r.stderr  # /dev/full opened for writing (allowed); the write fails
    assert not [ln for ln in r.stderr.splitlines() if "/dev/full" in ln]
    if os.path.exists("/dev/loop0"):
        assert "/dev/loop0" in r.stderr and "Operation not permitted" in r.stderr


def test_v2_ebpf_read_only_rule(make_v2: MakeCg, children: Children) -> None:
    mgr = make_v2()
    mgr.apply({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 5,
                            "access": "r"}]})
    p = children.gated(f"exec {sys.executable} -c \"import os, sys; "
                       "sys.exit(0 if os.open('/dev/zero', os.O_RDONLY) >= 0 else 1)\"")
    mgr.add(p.pid)
    children.release(p)
    assert p.wait(timeout=10) == 0
    r = children.run_in(mgr, "echo x > /dev/zero")
    assert "Operation not permitted" in r.stderr


def test_v2_freeze_thaw_and_kill(make_v2: MakeCg, children: Children, tmp_path: Any) -> None:
    mgr = make_v2()
    (d,) = mgr.dirs.values()
    f = str(tmp_path / "count")
    p = children.gated(f"i=0; while :; do i=$((i+1)); echo $i > {f}; done")
    mgr.add(p.pid)
    children.release(p)

    def count() -> int:
        try:
            return int(read(f) or "0")
        except (OSError, ValueError):
            return 0

    assert wait_for(lambda: count() > 10)
    mgr.freeze()
    assert mgr.freezer_state() == "FROZEN"
    assert "frozen 1" in read(f"{d}/cgroup.events")
    at = count()
    assert not wait_for(lambda: count() != at, timeout=0.3)
    mgr.thaw()
    assert mgr.freezer_state() == "THAWED"
    assert wait_for(lambda: count() > at + 10)
    mgr.kill_all(signal.SIGKILL)  # cgroup.kill
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert wait_for(lambda: not mgr.pids())


def test_v2_hugetlb_unified_and_stats(make_v2: MakeCg, children: Children) -> None:
    mgr = make_v2()
    if mgr.controller_dir("hugetlb") is None or not os.path.isdir(
            "/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no hugetlb on the unified hierarchy")
    (d,) = mgr.dirs.values()
    mgr.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
               "unified": {"cgroup.max.descendants": "7"}, "devices": list(DEFAULT_RULES)})
    assert read(f"{d}/hugetlb.2MB.max") == str(4 << 20)
    assert read(f"{d}/cgroup.max.descendants") == "7"
    p = children.gated("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 30")
    mgr.add(p.pid)
    children.release(p)
    assert wait_for(lambda: mgr.stats()["cpu"]["usage"]["total"] > 0)
    assert mgr.stats()["hugetlb"]["2MB"]["usage"] == 0


def test_v2_missing_controller_is_a_clear_error(make_v2: MakeCg) -> None:
    mgr = make_v2()
    if mgr.controller_dir("memory") is not None:
        pytest.skip("memory controller present")
    with pytest.raises(SystemSetupError, match="memory cgroup controller is not available"):
        mgr.apply({"memory": {"limit": 1 << 30}, "devices": list(DEFAULT_RULES)})
