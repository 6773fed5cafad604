"""cgroup v2 (unified hierarchy) controllers and core files, with runc's fs2 conversions.

On a hybrid host these functions serve the controllers that only the unified hierarchy has
(``hugetlb`` on some kernels), the ``unified`` map, and nothing else: the v1 controllers win.
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


def enable_controllers(mountpoint: str, leaf: str, wanted: set[str] | None = None) -> None:
    """Enable controllers (all available, or ``wanted``) in ``cgroup.subtree_control`` of each
    ancestor of ``leaf``, from the hierarchy root down, so that ``leaf`` gets their files.
    Failures are ignored (a parent with processes refuses, "no internal processes"); a
    missing controller file then shows up as an error when a limit is written."""
    rel = leaf[len(mountpoint):].strip("/")
    cur = mountpoint
    for comp in rel.split("/") if rel else []:
        avail = (fs.read_opt(f"{cur}/cgroup.controllers") or "").split()
        enabled = set((fs.read_opt(f"{cur}/cgroup.subtree_control") or "").split())
        want = [c for c in avail if c not in enabled and (wanted is None or c in wanted)]
        if want:
            path = f"{cur}/cgroup.subtree_control"
            try:
                fs.write(path, " ".join("+" + c for c in want))
            except CgroupWriteError:
                for c in want:
                    try:
                        fs.write(path, "+" + c)
                    except CgroupWriteError:
                        pass
        cur = f"{cur}/{comp}"


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144, default 1024) → cpu.weight (1..10000, default 100): runc's
    quadratic fit through min, default and max (opencontainers/cgroups)."""
    import math

    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return math.ceil(10**exponent)


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) → io.weight (1..10000), runc's linear scheme."""
    return 1 + (weight - 10) * 9999 // 990 if weight else 0


def set_cpu(d: str, cpu: dict[str, Any]) -> None:
    where = f"{R}.cpu"
    if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
        key = "realtimeRuntime" if cpu.get("realtimeRuntime") else "realtimePeriod"
        raise ConfigError(f"{where}.{key}", "real-time scheduling is not supported on cgroup v2")
    if cpu.get("shares"):
        fs.write(f"{d}/cpu.weight", str(shares_to_weight(cpu["shares"])))
    if cpu.get("idle") is not None:
        fs.write(f"{d}/cpu.idle", str(cpu["idle"]))
    quota, period = cpu.get("quota") or 0, cpu.get("period") or 0
    burst = cpu.get("burst")
    pending_burst = False
    if burst is not None:
        try:
            fs.write(f"{d}/cpu.max.burst", str(burst))
        except CgroupWriteError as exc:
            # A burst above the current quota is refused; retry once the quota is set.
            if not (quota or period) or exc.errno != errno.EINVAL:
                raise
            pending_burst = True
    if quota or period:
        value = str(quota) if quota > 0 else "max"
        if period:
            value += f" {period}"
        fs.write(f"{d}/cpu.max", value)
    if pending_burst:
        fs.write(f"{d}/cpu.max.burst", str(burst))


def set_cpuset(d: str, cpu: dict[str, Any]) -> None:
    if cpu.get("mems"):
        fs.write(f"{d}/cpuset.mems", cpu["mems"])
    if cpu.get("cpus"):
        fs.write(f"{d}/cpuset.cpus", cpu["cpus"])


def _num(value: int) -> str:
    return "max" if value == -1 else str(value)


def swap_value(swap: int, limit: int) -> int:
    """OCI's memory+swap → v2's swap-only ``memory.swap.max`` (-1: max, 0: leave alone)."""
    where = f"{R}.memory.swap"
    if limit == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise ConfigError(where, "unable to set swap limit without memory limit")
    if swap < limit:
        raise ConfigError(where, "memory+swap limit should be ≥ memory limit")
    return swap - limit


def set_memory(d: str, mem: dict[str, Any], update: bool) -> None:
    """limit → memory.max, reservation → memory.low, swap → memory.swap.max (as swap only).
    kernel, kernelTCP, swappiness and disableOOMKiller have no v2 file and are ignored."""
    limit = mem.get("limit") or 0
    swap = mem.get("swap") or 0
    if update and mem.get("checkBeforeUpdate"):
        if limit > 0 and limit <= (usage := fs.read_uint(f"{d}/memory.current")):
            raise SystemSetupError(f"rejecting memory limit {limit} below current usage {usage}")
        if swap > 0 and swap <= (usage := fs.read_uint(f"{d}/memory.swap.current")):
            raise SystemSetupError(f"rejecting memory+swap limit {swap} below current usage "
                                   f"{usage}")
    eff_limit = limit
    if update and swap > 0 and limit == 0:  # partial update: swap is relative to the limit
        eff_limit = fs.read_uint(f"{d}/memory.max") or -1
    if limit or swap:
        swap_v2 = swap_value(swap, eff_limit)
        if swap_v2 or swap > 0:  # swap == limit: write 0 (no swap)
            path = f"{d}/memory.swap.max"
            if fs.exists(path):
                fs.write(path, _num(swap_v2))
            elif swap_v2 not in (-1, 0):
                raise SystemSetupError(f"cannot limit swap: {path} does not exist (no swap "
                                       "accounting)")
        if limit:
            fs.write(f"{d}/memory.max", _num(limit))
    if mem.get("reservation"):
        fs.write(f"{d}/memory.low", _num(mem["reservation"]))


def set_pids(d: str, pids: dict[str, Any]) -> None:
    if pids.get("limit") is not None:
        fs.write(f"{d}/pids.max", pids_value(pids["limit"]))


def set_io(d: str, b: dict[str, Any]) -> None:
    bfq = f"{d}/io.bfq.weight"
    has_bfq = fs.exists(bfq)
    if b.get("weight"):
        if has_bfq:
            fs.write(bfq, str(b["weight"]))
        else:
            fs.write(f"{d}/io.weight", str(blkio_to_io_weight(b["weight"])))
    for wd in b.get("weightDevice") or []:
        if wd.get("weight"):
            dev = f"{wd['major']}:{wd['minor']}"
            if has_bfq:
                fs.write(bfq, f"{dev} {wd['weight']}")
            else:
                fs.write(f"{d}/io.weight", f"{dev} {blkio_to_io_weight(wd['weight'])}")
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for td in b.get(key) or []:
            fs.write(f"{d}/io.max", f"{td['major']}:{td['minor']} {name}={td['rate']}")


def set_hugetlb(d: str, limits: list[dict[str, Any]]) -> None:
    for i, item in enumerate(limits):
        size, limit = item["pageSize"], item["limit"]
        path = f"{d}/hugetlb.{size}.max"
        if not fs.exists(path):
            raise ConfigError(f"{R}.hugepageLimits[{i}].pageSize",
                              f'page size "{size}" is not supported by this host')
        fs.write(path, str(limit))
        rsvd = f"{d}/hugetlb.{size}.rsvd.max"
        if fs.exists(rsvd):
            fs.write(rsvd, str(limit))


def set_rdma(d: str, rdma: dict[str, Any]) -> None:
    for line in rdma_lines(rdma):
        fs.write(f"{d}/rdma.max", line)


def set_unified(d: str, unified: dict[str, str]) -> None:
    """Each key is a file in the cgroup, written verbatim (last, so it overrides)."""
    for key, value in unified.items():
        path = f"{d}/{key}"
        if not fs.exists(path):
            ctl = key.partition(".")[0]
            raise ConfigError(f'{R}.unified["{key}"]', f"{path} does not exist (is the "
                              f'"{ctl}" controller available and enabled?)')
        fs.write(path, value)


def freeze(d: str, timeout: float = 10.0) -> None:
    """Set ``cgroup.freeze`` and wait until ``cgroup.events`` says ``frozen 1``."""
    import time

    fs.write(f"{d}/cgroup.freeze", "1")
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while fs.read_keyed(f"{d}/cgroup.events").get("frozen") != 1:
        if time.monotonic() > deadline:
            fs.write(f"{d}/cgroup.freeze", "0")
            raise SystemSetupError(f"unable to freeze {d}: not frozen after {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def thaw(d: str) -> None:
    fs.write(f"{d}/cgroup.freeze", "0")


def oom_kill_count(d: str) -> int:
    return fs.read_keyed(f"{d}/memory.events").get("oom_kill", 0)
