"""``stats``: a container's resource usage in Docker's ``GET /containers/{id}/stats`` shape,
read from its cgroup (v1, v2 or hybrid, through :mod:`isobox.cgroups`) and from
``/proc/<pid>/net/dev`` of its init process (which shows the container's network namespace).

:func:`summarize` computes what ``docker stats`` prints (CPU %, memory usage/limit/%, net and
block I/O, pids) exactly as the docker CLI computes it from that JSON.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isobox.engine.state import ContainerRow

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

LIVE = ("running", "paused", "restarting")
_NS_PER_TICK = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)


def host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def system_cpu_usage() -> int:
    """Host CPU time in ns (the first line of /proc/stat), Docker's ``system_cpu_usage``."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return sum(int(x) for x in fields[1:8]) * _NS_PER_TICK


def online_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def net_dev(pid: int) -> dict[str, dict[str, int]]:
    """Per-interface counters of ``pid``'s network namespace (loopback left out, as Docker)."""
    out: dict[str, dict[str, int]] = {}
    if pid <= 0:
        return out
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return out
    return net_dev_lines(lines)


def net_dev_lines(lines: list[str]) -> dict[str, dict[str, int]]:
    """The interface lines of a ``net/dev`` file (its two header lines removed)."""
    out: dict[str, dict[str, int]] = {}
    keys = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped")
    tkeys = ("tx_bytes", "tx_packets", "tx_errors", "tx_dropped")
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.strip()
        vals = rest.split()
        if name == "lo" or len(vals) < 12:
            continue
        entry = {k: int(vals[i]) for i, k in enumerate(keys)}
        entry.update({k: int(vals[8 + i]) for i, k in enumerate(tkeys)})
        out[name] = entry
    return out


def cgroup_path(engine: Engine, row: ContainerRow) -> str:
    from isobox.engine.inspect import read_spec

    path = (read_spec(engine, row.id).get("linux") or {}).get("cgroupsPath")
    return str(path or f"/isobox/{row.id}")


def _cpu(raw: dict[str, Any], system: int, ncpu: int) -> dict[str, Any]:
    usage = raw["cpu"]["usage"]
    thr = raw["cpu"]["throttling"]
    cpu_usage: dict[str, Any] = {"total_usage": usage["total"],
                                 "usage_in_kernelmode": usage["kernel"],
                                 "usage_in_usermode": usage["user"]}
    if usage["percpu"]:
        cpu_usage["percpu_usage"] = list(usage["percpu"])
    return {"cpu_usage": cpu_usage, "system_cpu_usage": system, "online_cpus": ncpu,
            "throttling_data": {"periods": thr["periods"],
                                "throttled_periods": thr["throttledPeriods"],
                                "throttled_time": thr["throttledTime"]}}


def _memory(raw: dict[str, Any]) -> dict[str, Any]:
    mem = raw["memory"]
    usage = mem["usage"]
    limit = int(usage["limit"])
    total = host_memory()
    if total and (limit <= 0 or limit > total):
        limit = total  # unlimited: the host's memory, as Docker shows it
    out: dict[str, Any] = {"usage": int(usage["usage"]), "stats": dict(mem["raw"]),
                           "limit": limit}
    if usage["max"]:
        out["max_usage"] = int(usage["max"])
    if usage["failcnt"]:
        out["failcnt"] = int(usage["failcnt"])
    return out


def _blkio(raw: dict[str, Any]) -> dict[str, Any]:
    blk = raw["blkio"]
    return {"io_service_bytes_recursive": list(blk["ioServiceBytesRecursive"]) or None,
            "io_serviced_recursive": list(blk["ioServicedRecursive"]) or None,
            "io_queue_recursive": None, "io_service_time_recursive": None,
            "io_wait_time_recursive": None, "io_merged_recursive": None,
            "io_time_recursive": None, "sectors_recursive": None}


def _zero_cpu(ncpu: int) -> dict[str, Any]:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": 0, "online_cpus": ncpu,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def sample(engine: Engine, row: ContainerRow) -> dict[str, Any]:
    """One reading, with ``precpu_stats`` zero (see :func:`container_stats`)."""
    from isobox.engine.inspect import rfc3339nano

    ncpu = online_cpus()
    now = time.time()
    base: dict[str, Any] = {"read": rfc3339nano(now), "preread": rfc3339nano(0),
                            "name": "/" + row.name, "id": row.id, "num_procs": 0,
                            "storage_stats": {}, "precpu_stats": _zero_cpu(ncpu)}
    if engine.effective_status(row) not in LIVE:
        from isobox.cgroups import stats as cst

        raw = cst.empty()
        base.update(cpu_stats=_zero_cpu(ncpu), memory_stats={}, pids_stats={},
                    blkio_stats=_blkio(raw), networks={})
        return base
    from isobox.cgroups import CgroupManager

    raw = CgroupManager(cgroup_path(engine, row)).stats()
    pids: dict[str, Any] = {"current": int(raw["pids"]["current"])}
    if raw["pids"]["limit"]:
        pids["limit"] = int(raw["pids"]["limit"])
    base.update(cpu_stats=_cpu(raw, system_cpu_usage(), ncpu), memory_stats=_memory(raw),
                pids_stats=pids, blkio_stats=_blkio(raw), networks=net_dev(row.pid))
    if row.options.get("isolation") == "vm":
        base["vm_stats"] = vm_stats(engine, row, base)
    return base


def vm_stats(engine: Engine, row: ContainerRow, base: dict[str, Any]) -> dict[str, Any]:
    """A VM's figures: ``host_*`` are QEMU's (its cgroup: guest RAM it touched plus QEMU's
    own overhead, also in ``memory_stats``/``cpu_stats``), ``guest_*`` the guest kernel's
    own (from its /proc through the agent). ``networks`` becomes the guest's NICs."""
    from isobox.engine.vm_guest import guest_figures

    guest = guest_figures(engine, row)
    mem = base.get("memory_stats") or {}
    out: dict[str, Any] = {"host_memory_usage": int(mem.get("usage") or 0),
                           "host_memory_limit": int(mem.get("limit") or 0),
                           "host_pids": int((base.get("pids_stats") or {}).get("current")
                                            or 0)}
    if "error" in guest:
        out["guest_error"] = guest["error"]
        return out
    gm = guest["memory"]
    out.update(guest_memory_total=gm["total"], guest_memory_used=gm["used"],
               guest_memory_available=gm["available"], guest_memory_free=gm["free"],
               guest_memory_cached=gm["cached"])
    base["networks"] = guest["networks"]
    return out


def container_stats(engine: Engine, row: ContainerRow, *,
                    previous: dict[str, Any] | None = None,
                    interval: float = 0.5) -> dict[str, Any]:
    """Docker's stats JSON. ``precpu_stats`` come from ``previous`` (the last reading of a
    stream) or, without one, from a first reading ``interval`` seconds earlier (dockerd does
    the same for ``stream=0`` so that a CPU percentage can be computed)."""
    if previous is None:
        previous = sample(engine, row)
        if engine.effective_status(row) in LIVE and interval > 0:
            time.sleep(interval)
    current = sample(engine, row)
    current["precpu_stats"] = previous["cpu_stats"]
    current["preread"] = previous["read"]
    return current


@dataclass(frozen=True)
class StatsSummary:
    """The columns of ``docker stats``."""

    id: str
    name: str
    cpu_percent: float
    mem_usage: int
    mem_limit: int
    mem_percent: float
    net_rx: int
    net_tx: int
    block_read: int
    block_write: int
    pids: int


def summarize(stats: dict[str, Any]) -> StatsSummary:
    """What the docker CLI derives from the stats JSON (cli/command/container/stats_helpers)."""
    cpu = stats.get("cpu_stats") or {}
    pre = stats.get("precpu_stats") or {}
    cpu_delta = ((cpu.get("cpu_usage") or {}).get("total_usage", 0) -
                 (pre.get("cpu_usage") or {}).get("total_usage", 0))
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    ncpu = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage")
                                         or []) or 1
    cpu_percent = cpu_delta / sys_delta * ncpu * 100.0 if sys_delta > 0 and cpu_delta > 0 \
        else 0.0
    mem = stats.get("memory_stats") or {}
    raw = mem.get("stats") or {}
    usage = int(mem.get("usage") or 0)
    inactive = raw.get("total_inactive_file", raw.get("inactive_file", 0))
    if inactive < usage:
        usage -= inactive
    limit = int(mem.get("limit") or 0)
    vm = stats.get("vm_stats") or {}
    if vm.get("guest_memory_total"):  # a VM: the guest's memory, as `free` in it shows
        usage, limit = int(vm.get("guest_memory_used") or 0), int(vm["guest_memory_total"])
    rx = tx = 0
    for net in (stats.get("networks") or {}).values():
        rx += int(net.get("rx_bytes") or 0)
        tx += int(net.get("tx_bytes") or 0)
    read = write = 0
    for e in (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(e.get("op") or "").lower()
        if op == "read":
            read += int(e.get("value") or 0)
        elif op == "write":
            write += int(e.get("value") or 0)
    return StatsSummary(
        id=str(stats.get("id") or ""), name=str(stats.get("name") or "").lstrip("/"),
        cpu_percent=cpu_percent, mem_usage=usage, mem_limit=limit,
        mem_percent=usage / limit * 100.0 if limit else 0.0, net_rx=rx, net_tx=tx,
        block_read=read, block_write=write,
        pids=int((stats.get("pids_stats") or {}).get("current") or 0))
