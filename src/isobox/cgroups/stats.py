"""Statistics in the shape of runc's ``events --stats`` ``data`` (runc ``types.Stats``).

Every key is present (zeros included), a superset of runc's output, which omits zero values.
Units as runc: nanoseconds for CPU, bytes for memory; unlimited memory limits read as
2**64-1, an unlimited pids limit as 0; v2 swap is reported as memory+swap like v1.
"""

from __future__ import annotations

import os

from isobox.cgroups import fs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_U64 = (1 << 64) - 1


def _u64(text: str | None) -> int:
    if text is None:
        return 0
    text = text.strip()
    if text == "max":
        return MAX_U64
    try:
        return int(text)
    except ValueError:
        return 0


def _read(path: str) -> int:
    return _u64(fs.read_opt(path))


def _entry(limit: int = 0, usage: int = 0, max_: int = 0, failcnt: int = 0) -> dict[str, int]:
    return {"limit": limit, "usage": usage, "max": max_, "failcnt": failcnt}


def empty() -> dict[str, Any]:
    return {
        "cpu": {
            "usage": {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                      "kernel": 0, "user": 0},
            "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0},
        },
        "memory": {"cache": 0, "usage": _entry(), "swap": _entry(), "kernel": _entry(),
                   "kernelTCP": _entry(), "raw": {}},
        "pids": {"current": 0, "limit": 0},
        "blkio": {"ioServiceBytesRecursive": [], "ioServicedRecursive": [],
                  "ioQueueRecursive": [], "ioServiceTimeRecursive": [],
                  "ioWaitTimeRecursive": [], "ioMergedRecursive": [], "ioTimeRecursive": [],
                  "sectorsRecursive": []},
        "hugetlb": {},
    }


def _ints(path: str) -> list[int]:
    text = fs.read_opt(path)
    return [int(x) for x in text.split()] if text else []


def cpu_v1(out: dict[str, Any], cpu_dir: str | None, cpuacct_dir: str | None) -> None:
    usage = out["cpu"]["usage"]
    if cpuacct_dir:
        usage["total"] = _read(f"{cpuacct_dir}/cpuacct.usage")
        usage["percpu"] = _ints(f"{cpuacct_dir}/cpuacct.usage_percpu")
        usage["percpu_kernel"] = _ints(f"{cpuacct_dir}/cpuacct.usage_percpu_sys")
        usage["percpu_user"] = _ints(f"{cpuacct_dir}/cpuacct.usage_percpu_user")
        ticks = fs.read_keyed(f"{cpuacct_dir}/cpuacct.stat")
        ns_per_tick = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)
        usage["user"] = ticks.get("user", 0) * ns_per_tick
        usage["kernel"] = ticks.get("system", 0) * ns_per_tick
    if cpu_dir:
        st = fs.read_keyed(f"{cpu_dir}/cpu.stat")
        out["cpu"]["throttling"] = {"periods": st.get("nr_periods", 0),
                                    "throttledPeriods": st.get("nr_throttled", 0),
                                    "throttledTime": st.get("throttled_time", 0)}


def cpu_v2(out: dict[str, Any], d: str) -> None:
    st = fs.read_keyed(f"{d}/cpu.stat")
    usage = out["cpu"]["usage"]
    usage["total"] = st.get("usage_usec", 0) * 1000
    usage["user"] = st.get("user_usec", 0) * 1000
    usage["kernel"] = st.get("system_usec", 0) * 1000
    out["cpu"]["throttling"] = {"periods": st.get("nr_periods", 0),
                                "throttledPeriods": st.get("nr_throttled", 0),
                                "throttledTime": st.get("throttled_usec", 0) * 1000}


def _mem_entry_v1(d: str, prefix: str) -> dict[str, int]:
    return _entry(limit=_read(f"{d}/{prefix}.limit_in_bytes"),
                  usage=_read(f"{d}/{prefix}.usage_in_bytes"),
                  max_=_read(f"{d}/{prefix}.max_usage_in_bytes"),
                  failcnt=_read(f"{d}/{prefix}.failcnt"))


def memory_v1(out: dict[str, Any], d: str) -> None:
    mem = out["memory"]
    raw = fs.read_keyed(f"{d}/memory.stat")
    mem["raw"] = raw
    mem["cache"] = raw.get("cache", 0)
    mem["usage"] = _mem_entry_v1(d, "memory")
    mem["swap"] = _mem_entry_v1(d, "memory.memsw")
    mem["kernel"] = _mem_entry_v1(d, "memory.kmem")
    mem["kernelTCP"] = _mem_entry_v1(d, "memory.kmem.tcp")


def memory_v2(out: dict[str, Any], d: str) -> None:
    mem = out["memory"]
    raw = fs.read_keyed(f"{d}/memory.stat")
    mem["raw"] = raw
    mem["cache"] = raw.get("file", 0)
    usage = _entry(limit=_read(f"{d}/memory.max"), usage=_read(f"{d}/memory.current"),
                   max_=_read(f"{d}/memory.peak"),
                   failcnt=fs.read_keyed(f"{d}/memory.events").get("max", 0))
    mem["usage"] = usage
    swap_limit = _read(f"{d}/memory.swap.max")
    if swap_limit != MAX_U64 and usage["limit"] != MAX_U64:
        swap_limit += usage["limit"]
    else:
        swap_limit = MAX_U64
    mem["swap"] = _entry(limit=swap_limit,
                         usage=_read(f"{d}/memory.swap.current") + usage["usage"])


def pids(out: dict[str, Any], d: str) -> None:
    limit = _read(f"{d}/pids.max")
    out["pids"] = {"current": _read(f"{d}/pids.current"),
                   "limit": 0 if limit == MAX_U64 else limit}


def _blkio_entries(path: str) -> list[dict[str, Any]]:
    text = fs.read_opt(path) or ""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue  # the "Total N" line
        major, _, minor = parts[0].partition(":")
        try:
            entries.append({"major": int(major), "minor": int(minor), "op": parts[1],
                            "value": int(parts[2])})
        except ValueError:
            continue
    return entries


def blkio_v1(out: dict[str, Any], d: str) -> None:
    # CFQ's files if the kernel has them, else BFQ's, else the throttle layer's.
    for prefix in ("blkio", "blkio.bfq", "blkio.throttle"):
        if fs.exists(f"{d}/{prefix}.io_serviced_recursive"):
            break
    out["blkio"]["ioServiceBytesRecursive"] = _blkio_entries(
        f"{d}/{prefix}.io_service_bytes_recursive")
    out["blkio"]["ioServicedRecursive"] = _blkio_entries(f"{d}/{prefix}.io_serviced_recursive")


def io_v2(out: dict[str, Any], d: str) -> None:
    text = fs.read_opt(f"{d}/io.stat") or ""
    nbytes: list[dict[str, Any]] = []
    nios: list[dict[str, Any]] = []
    for line in text.splitlines():
        dev, *fields = line.split()
        major, _, minor = dev.partition(":")
        kv = dict(f.partition("=")[::2] for f in fields)
        for key, op, target in (("rbytes", "Read", nbytes), ("wbytes", "Write", nbytes),
                                ("rios", "Read", nios), ("wios", "Write", nios)):
            if key in kv:
                target.append({"major": int(major), "minor": int(minor), "op": op,
                               "value": int(kv[key])})
    out["blkio"]["ioServiceBytesRecursive"] = nbytes
    out["blkio"]["ioServicedRecursive"] = nios


def page_sizes() -> list[str]:
    """Huge page sizes as cgroup file names use them (``2MB``, ``1GB``)."""
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return []
    sizes = []
    for name in names:
        kib = name.removeprefix("hugepages-").removesuffix("kB")
        if not kib.isdigit():
            continue
        n = int(kib)
        for unit in ("KB", "MB", "GB"):
            if n < 1024 or n % 1024 or unit == "GB":
                sizes.append(f"{n}{unit}")
                break
            n //= 1024
    return sorted(sizes)


def hugetlb(out: dict[str, Any], d: str, v2: bool) -> None:
    for size in page_sizes():
        p = f"{d}/hugetlb.{size}"
        if v2:
            if not fs.exists(f"{p}.current"):
                continue
            out["hugetlb"][size] = {"usage": _read(f"{p}.current"), "max": 0,
                                    "failcnt": fs.read_keyed(f"{p}.events").get("max", 0)}
        else:
            if not fs.exists(f"{p}.usage_in_bytes"):
                continue
            out["hugetlb"][size] = {"usage": _read(f"{p}.usage_in_bytes"),
                                    "max": _read(f"{p}.max_usage_in_bytes"),
                                    "failcnt": _read(f"{p}.failcnt")}
