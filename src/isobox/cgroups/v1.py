"""cgroup v1 controllers: one function per controller, each given its hierarchy's directory.

Values follow runc's fs driver: 0 means "leave alone" for limits, -1 means unlimited.
"""

from __future__ import annotations

import errno

from isobox.cgroups import fs
from isobox.cgroups.fs import CgroupWriteError
from isobox.cgroups.resources import R, pids_value, rdma_lines
from isobox.errors import ConfigError, SystemSetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def copy_cpuset(parent: str, child: str) -> None:
    """A new v1 cpuset cgroup starts with empty ``cpus``/``mems`` and would refuse tasks:
    copy the parent's (as runc does)."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not fs.read(f"{child}/{name}").strip():
            value = fs.read(f"{parent}/{name}").strip()
            if value:
                fs.write(f"{child}/{name}", value)


def set_cpuset(d: str, cpu: dict[str, Any]) -> None:
    # mems first: a CPU list may only be valid with the matching memory nodes.
    if cpu.get("mems"):
        fs.write(f"{d}/cpuset.mems", cpu["mems"])
    if cpu.get("cpus"):
        fs.write(f"{d}/cpuset.cpus", cpu["cpus"])


def _pair_write(d: str, period_file: str, period: int, value_file: str, value: int) -> None:
    """Write a period, then a quota/runtime. Shrinking the period first can fail (EINVAL)
    because old quota / new period exceeds the parent's; then retry it after the value."""
    pending = ""
    if period:
        try:
            fs.write(f"{d}/{period_file}", str(period))
        except CgroupWriteError as exc:
            if exc.errno != errno.EINVAL or not value:
                raise
            pending = str(period)
    if value:
        fs.write(f"{d}/{value_file}", str(value))
        if pending:
            fs.write(f"{d}/{period_file}", pending)


def set_cpu(d: str, cpu: dict[str, Any]) -> None:
    where = f"{R}.cpu"
    shares = cpu.get("shares") or 0
    if shares:
        fs.write(f"{d}/cpu.shares", str(shares))
        got = fs.read_uint(f"{d}/cpu.shares")
        if got != shares:
            bound = "maximum" if shares > got else "minimum"
            raise ConfigError(f"{where}.shares", f"the {bound} allowed cpu-shares is {got}")
    _pair_write(d, "cpu.cfs_period_us", cpu.get("period") or 0,
                "cpu.cfs_quota_us", cpu.get("quota") or 0)
    if cpu.get("burst") is not None:
        fs.write(f"{d}/cpu.cfs_burst_us", str(cpu["burst"]))
    if cpu.get("idle") is not None:
        fs.write(f"{d}/cpu.idle", str(cpu["idle"]))
    rt_period, rt_runtime = cpu.get("realtimePeriod") or 0, cpu.get("realtimeRuntime") or 0
    if (rt_period or rt_runtime) and not fs.exists(f"{d}/cpu.rt_runtime_us"):
        raise SystemSetupError("real-time group scheduling (cpu.rt_runtime_us) is not "
                               "supported by this kernel")
    _pair_write(d, "cpu.rt_period_us", rt_period, "cpu.rt_runtime_us", rt_runtime)


def _write_limit(d: str, value: int) -> None:
    path = f"{d}/memory.limit_in_bytes"
    try:
        fs.write(path, str(value))
    except CgroupWriteError as exc:
        if exc.errno == errno.EBUSY:
            usage = fs.read_uint(f"{d}/memory.usage_in_bytes")
            peak = fs.read_uint(f"{d}/memory.max_usage_in_bytes")
            raise SystemSetupError(f"unable to set memory limit to {value} (current usage: "
                                   f"{usage}, peak usage: {peak})") from None
        raise


def _write_swap(d: str, value: int) -> None:
    path = f"{d}/memory.memsw.limit_in_bytes"
    if value == -1 and not fs.exists(path):
        return  # no swap accounting: "unlimited" is already true
    fs.write(path, str(value))


def set_memory(d: str, mem: dict[str, Any], update: bool) -> None:
    limit = mem.get("limit") or 0
    swap = mem.get("swap") or 0
    if limit == -1 and swap == 0 and fs.exists(f"{d}/memory.memsw.limit_in_bytes"):
        swap = -1  # unlimited memory with swap unset: unlimited memory+swap too (runc)
    if update and mem.get("checkBeforeUpdate") and limit > 0:
        usage = fs.read_uint(f"{d}/memory.usage_in_bytes")
        if limit <= usage:
            raise SystemSetupError(f"rejecting memory limit {limit} below current usage {usage}")
    # The kernel keeps memory.limit ≤ memory.memsw.limit at every step, so when raising
    # memsw above the current limit (or to unlimited) it goes first, else the limit goes first.
    if limit and swap:
        current = fs.read_uint(f"{d}/memory.limit_in_bytes")
        if swap == -1 or current < swap:
            _write_swap(d, swap)
            _write_limit(d, limit)
        else:
            _write_limit(d, limit)
            _write_swap(d, swap)
    else:
        if limit:
            try:
                _write_limit(d, limit)
            except CgroupWriteError as exc:
                memsw = fs.read_uint(f"{d}/memory.memsw.limit_in_bytes")
                if exc.errno == errno.EINVAL and 0 < memsw < limit:
                    raise SystemSetupError(
                        f"{exc}: the memory+swap limit ({memsw}) is lower; set "
                        "linux.resources.memory.swap too") from None
                raise
        if swap:
            _write_swap(d, swap)
    if mem.get("reservation"):
        fs.write(f"{d}/memory.soft_limit_in_bytes", str(mem["reservation"]))
    if mem.get("kernel") and fs.exists(f"{d}/memory.kmem.limit_in_bytes"):
        fs.write(f"{d}/memory.kmem.limit_in_bytes", str(mem["kernel"]))  # deprecated
    if mem.get("kernelTCP"):
        fs.write(f"{d}/memory.kmem.tcp.limit_in_bytes", str(mem["kernelTCP"]))
    if mem.get("swappiness") is not None:
        fs.write(f"{d}/memory.swappiness", str(mem["swappiness"]))
    if mem.get("disableOOMKiller"):
        fs.write(f"{d}/memory.oom_control", "1")


def set_pids(d: str, pids: dict[str, Any]) -> None:
    if pids.get("limit") is not None:
        fs.write(f"{d}/pids.max", pids_value(pids["limit"]))


def set_blkio(d: str, b: dict[str, Any]) -> None:
    # Kernels without CFQ only have BFQ's weight files.
    weight_file = "blkio.weight" if fs.exists(f"{d}/blkio.weight") else "blkio.bfq.weight"
    if b.get("weight"):
        fs.write(f"{d}/{weight_file}", str(b["weight"]))
    if b.get("leafWeight"):
        fs.write(f"{d}/blkio.leaf_weight", str(b["leafWeight"]))
    for wd in b.get("weightDevice") or []:
        dev = f"{wd['major']}:{wd['minor']}"
        if wd.get("weight"):
            fs.write(f"{d}/{weight_file}_device", f"{dev} {wd['weight']}")
        if wd.get("leafWeight"):
            fs.write(f"{d}/blkio.leaf_weight_device", f"{dev} {wd['leafWeight']}")
    for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                      ("throttleWriteBpsDevice", "write_bps_device"),
                      ("throttleReadIOPSDevice", "read_iops_device"),
                      ("throttleWriteIOPSDevice", "write_iops_device")):
        for td in b.get(key) or []:
            fs.write(f"{d}/blkio.throttle.{name}", f"{td['major']}:{td['minor']} {td['rate']}")


def set_hugetlb(d: str, limits: list[dict[str, Any]]) -> None:
    for i, item in enumerate(limits):
        size, limit = item["pageSize"], item["limit"]
        path = f"{d}/hugetlb.{size}.limit_in_bytes"
        if not fs.exists(path):
            raise ConfigError(f"{R}.hugepageLimits[{i}].pageSize",
                              f'page size "{size}" is not supported by this host')
        fs.write(path, str(limit))
        rsvd = f"{d}/hugetlb.{size}.rsvd.limit_in_bytes"
        if fs.exists(rsvd):
            fs.write(rsvd, str(limit))


def set_net_cls(d: str, net: dict[str, Any]) -> None:
    if net.get("classID") is not None:
        fs.write(f"{d}/net_cls.classid", str(net["classID"]))


def set_net_prio(d: str, net: dict[str, Any]) -> None:
    for p in net.get("priorities") or []:
        fs.write(f"{d}/net_prio.ifpriomap", f"{p['name']} {p.get('priority') or 0}")


def set_rdma(d: str, rdma: dict[str, Any]) -> None:
    for line in rdma_lines(rdma):
        fs.write(f"{d}/rdma.max", line)


def freeze(d: str) -> None:
    """Write FROZEN until ``freezer.state`` says FROZEN (runc's loop: a cgroup that keeps
    forking can stay FREEZING; an occasional thaw and short sleep unsticks it)."""
    import time

    path = f"{d}/freezer.state"
    for i in range(1000):
        if i % 50 == 49:
            fs.write(path, "THAWED")
            time.sleep(0.01)
        fs.write(path, "FROZEN")
        if i % 25 == 24:
            time.sleep(0.00001)
        state = fs.read(path).strip()
        if state == "FROZEN":
            return
        if state != "FREEZING":
            raise SystemSetupError(f"unexpected freezer state {state} after writing FROZEN "
                                   f"to {path}")
    fs.write(path, "THAWED")
    raise SystemSetupError(f"unable to freeze {d}: processes kept it in FREEZING")


def thaw(d: str) -> None:
    fs.write(f"{d}/freezer.state", "THAWED")


def oom_kill_count(d: str) -> int:
    return fs.read_keyed(f"{d}/memory.oom_control").get("oom_kill", 0)
