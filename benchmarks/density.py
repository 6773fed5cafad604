#!/usr/bin/env python3
"""Host memory per idle container: N detached `sleep 3600` busybox containers
(`run -d --network none`) for isobox, then for podman (runc), one engine at a time.

Per container: PSS of its monitor (conmon, found by the engine's root path in its argv), PSS
of the container's process (the monitor's child), and the drop in MemAvailable from
/proc/meminfo divided by N (kernel memory too: mounts, cgroups, namespaces, page cache).
Every container is removed at the end and the script checks nothing is left.

Usage: benchmarks/density.py [--count 200] [--no-peer] [--time-limit 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import (
    PODMAN_ULIMITS,
    IsoboxEnv,
    PodmanEnv,
    children,
    mem_available_kib,
    monitor_pids,
    pss_kib,
)


def settle() -> int:
    """MemAvailable (KiB) after the page cache of finished work has settled."""
    os.sync()
    time.sleep(2)
    return mem_available_kib()


def measure(name: str, run_argv: list[str], env: dict[str, str] | None, root: str,
            count: int, time_limit: float) -> dict[str, float]:
    before = settle()
    t0 = time.perf_counter()
    started = 0
    for _ in range(count):
        p = subprocess.run(run_argv, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if p.returncode != 0:
            print(f"{name}: container {started + 1} FAILED (exit {p.returncode}): "
                  f"{p.stderr.decode(errors='replace').strip()[-2000:]}")
            break
        started += 1
        if time.perf_counter() - t0 > time_limit:
            print(f"{name}: stopped at {started} containers (time limit {time_limit:.0f} s)")
            break
    start_s = time.perf_counter() - t0
    after = settle()
    mons = monitor_pids(root)
    ctrs = [c for m in mons for c in children(m)]
    mon_pss = sum(pss_kib(p) for p in mons)
    ctr_pss = sum(pss_kib(p) for p in ctrs)
    n = max(started, 1)
    return {"started": started, "monitors": len(mons), "containers": len(ctrs),
            "start_s": start_s, "monitor_kib": mon_pss / n, "container_kib": ctr_pss / n,
            "memavail_kib": (before - after) / n}


def remove_all(name: str, ids: list[str], rm_argv: list[str], env: dict[str, str] | None) -> float:
    t = time.perf_counter()
    for i in range(0, len(ids), 50):
        p = subprocess.run([*rm_argv, *ids[i:i + 50]], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{name}: rm -f exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return time.perf_counter() - t


def wait_gone(find: Callable[[], list[str]], seconds: float = 20) -> list[str]:
    """Poll until find() is empty (monitors finish their exit commands after `rm`)."""
    deadline = time.monotonic() + seconds
    left: list[str] = find()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = find()
    return left


def report(rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{'engine':<8}{'started':>8}{'monitors':>9}{'start s':>9}{'monitor KiB':>13}"
          f"{'container KiB':>15}{'MemAvailable drop KiB':>23}   (per container)")
    for name, r in rows.items():
        print(f"{name:<8}{r['started']:>8.0f}{r['monitors']:>9.0f}{r['start_s']:>9.1f}"
              f"{r['monitor_kib']:>13.0f}{r['container_kib']:>15.0f}{r['memavail_kib']:>23.0f}")
    if "isobox" in rows:
        m = rows["isobox"]["monitor_kib"]
        print(f"isobox monitor PSS per idle container: {m / 1024:.2f} MiB (budget <= 2 MiB: "
              f"{'met' if m <= 2048 else 'NOT met'})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--no-peer", action="store_true", help="isobox only")
    ap.add_argument("--time-limit", type=float, default=300,
                    help="stop starting containers after this many seconds (per engine)")
    args = ap.parse_args()
    iso = IsoboxEnv()
    pod: PodmanEnv | None = None
    rows: dict[str, dict[str, float]] = {}
    ok = True
    try:
        if not args.no_peer:
            pod = PodmanEnv(iso)
        rows["isobox"] = measure(
            "isobox", iso.argv("run", "-d", "--network", "none", "busybox", "sleep", "3600"),
            iso.env, iso.root, args.count, args.time_limit)
        rm_s = remove_all("isobox", iso.ids(), iso.argv("rm", "-f"), iso.env)
        print(f"isobox: removed {rows['isobox']['started']:.0f} containers in {rm_s:.1f} s")
        left = wait_gone(iso.leftovers)
        if left:
            ok = False
            print(f"isobox LEFT BEHIND ({len(left)}): {left[:10]}")
        if pod is not None:
            rows["podman"] = measure(
                "podman", pod.argv("run", "-d", "--network", "none", *PODMAN_ULIMITS,
                                   "busybox", "sleep", "3600"),
                None, pod.dir, args.count, args.time_limit)
            rm_s = remove_all("podman", pod.ids(), pod.argv("rm", "-f", "-t", "0"), None)
            print(f"podman: removed {rows['podman']['started']:.0f} containers in {rm_s:.1f} s")
            p_ = pod
            left = wait_gone(lambda: p_.ids() + [f"monitor {p}" for p in monitor_pids(p_.dir)])
            if left:
                ok = False
                print(f"podman LEFT BEHIND: {left[:10]}")
        report(rows)
        return 0 if ok else 1
    finally:
        if pod is not None:
            pod.close()
        iso.close()


if __name__ == "__main__":
    sys.exit(main())
