#!/usr/bin/env python3
"""`isobox run --rm busybox true` against `podman run --rm` (runc) of the same image,
alternating, with `--network none` and with each engine's default bridge; then N concurrent
`isobox run --rm --network none`; then where one isobox run's time goes.

Usage: benchmarks/run_rm.py [--rounds 30] [--concurrent 32] [--batches 3] [--no-peer]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

from bench_common import PODMAN_ULIMITS, IsoboxEnv, PodmanEnv, med, pct, timed

NETWORKS = ("none", "bridge")


def compare(iso: IsoboxEnv, pod: PodmanEnv | None, rounds: int) -> None:
    for net in NETWORKS:
        cmds: dict[str, tuple[list[str], dict[str, str] | None]]
        cmds = {"isobox": (iso.argv("run", "--rm", "--network", net, "busybox", "true"),
                           iso.env)}
        if pod is not None:  # podman's default network is its bridge ("podman", netavark)
            cmds["podman"] = (pod.argv("run", "--rm", *PODMAN_ULIMITS,
                                       *(["--network", "none"] if net == "none" else []),
                                       "busybox", "true"), None)
        for argv, env in cmds.values():  # warm-up: page cache, bridge creation
            timed(argv, env)
        times: dict[str, list[float]] = {n: [] for n in cmds}
        for i in range(rounds):
            order = list(cmds.items()) if i % 2 == 0 else list(cmds.items())[::-1]
            for name, (argv, env) in order:
                times[name].append(timed(argv, env))
        print(f"\nrun --rm busybox true, network {net}, {rounds} rounds, alternating")
        print(f"{'engine':<10}{'median ms':>11}{'p95 ms':>9}{'min ms':>9}")
        for name, xs in times.items():
            print(f"{name:<10}{med(xs) * 1000:>11.1f}{pct(xs, 0.95) * 1000:>9.1f}"
                  f"{min(xs) * 1000:>9.1f}")
        if pod is not None:
            r = med(times["isobox"]) / med(times["podman"])
            print(f"ratio isobox / podman: {r:.2f}x (median; target <= 0.25x: "
                  f"{'met' if r <= 0.25 else 'NOT met'})")


def concurrent(iso: IsoboxEnv, n: int, batches: int) -> None:
    argv = iso.argv("run", "--rm", "--network", "none", "busybox", "true")
    lat: list[float] = []
    failures: list[str] = []
    walls: list[float] = []
    for _ in range(batches):
        barrier = threading.Barrier(n)
        lock = threading.Lock()

        def one(barrier: threading.Barrier, lock: threading.Lock) -> None:
            barrier.wait()
            t = time.perf_counter()
            p = subprocess.run(argv, env=iso.env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)
                if p.returncode != 0:
                    failures.append(f"exit {p.returncode}: "
                                    f"{p.stderr.decode(errors='replace').strip()}")

        threads = [threading.Thread(target=one, args=(barrier, lock)) for _ in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        walls.append(time.perf_counter() - t0)
    p50, p99 = med(lat), pct(lat, 0.99)
    print(f"\n{n} concurrent `isobox run --rm --network none busybox true`, {batches} batches "
          f"({len(lat)} runs)")
    print(f"p50 {p50 * 1000:.0f} ms   p99 {p99 * 1000:.0f} ms   max {max(lat) * 1000:.0f} ms   "
          f"batch wall {med(walls):.2f} s (median)")
    print(f"p99 / p50: {p99 / p50:.2f} (target <= 2: {'met' if p99 / p50 <= 2 else 'NOT met'})")
    if failures:
        print(f"{len(failures)} runs FAILED; first distinct errors:")
        for f in sorted(set(failures))[:5]:
            print(f"  {f[-1500:]}")


def import_time(iso: IsoboxEnv) -> tuple[float, list[tuple[float, str]], list[str]]:
    """Total import time (ms) of one `isobox run --rm --network none busybox true`, and the
    largest top-level imports (cumulative ms, module) from `python -X importtime`, and
    every top-level module imported."""
    code = "import sys; from isobox.cli.main import main; sys.exit(main())"
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", code, "run", "--rm",
                        "--network", "none", "busybox", "true"], env=iso.env,
                       capture_output=True, text=True)
    top: list[tuple[float, str]] = []
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if m and not m.group(2):  # top level
            top.append((int(m.group(1)) / 1000, m.group(3)))
    return sum(t for t, _ in top), sorted(top, reverse=True)[:10], [m for _, m in top]


def breakdown(iso: IsoboxEnv, rounds: int) -> None:
    run = iso.argv("run", "--rm", "--network", "none", "busybox", "true")
    version = iso.argv("--version")
    py = [sys.executable, "-c", "pass"]
    pyis = ["/usr/bin/python3.11", "-IS", "-c", "pass"]
    conmon = ["/usr/bin/conmon", "--version"]
    hook = [sys.executable, "-I", "-c", "import isobox.engine.exit_hook"]
    cmds = {"isobox run --rm --network none busybox true": run, "isobox --version": version,
            "python (venv) -c pass": py, "python3.11 -IS -c pass": pyis,
            "conmon --version": conmon, "python -I: import the exit hook": hook}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(rounds):
        for name, argv in (cmds.items() if i % 2 == 0 else list(cmds.items())[::-1]):
            times[name].append(timed(argv, iso.env))
    print(f"\nwhere one run's time goes ({rounds} rounds, medians)")
    for name, xs in times.items():
        print(f"  {name:<46}{med(xs) * 1000:>8.1f} ms")
    lifecycle = runtime_lifecycle(max(5, rounds // 2))
    if lifecycle:
        print("  isobox-runtime create/start/wait/delete of `true` (runtime_lifecycle.py): "
              + ", ".join(f"{k} {v * 1000:.1f}" for k, v in lifecycle.items()) + " ms")
    total, top, mods = import_time(iso)
    plain = [timed([sys.executable, "-c", "import " + ",".join(mods)], iso.env)
             for _ in range(rounds)]
    print(f"  python (venv) importing the run path's {len(mods)} top-level modules, no "
          f"importtime: {med(plain) * 1000:.1f} ms")
    print(f"  same under python -X importtime (inflated): {total:.1f} ms; largest:")
    for t, mod in top:
        print(f"    {t:>7.1f} ms  {mod}")


def runtime_lifecycle(rounds: int) -> dict[str, float]:
    """Medians of isobox-runtime's phases from runtime_lifecycle.py's harness, this run."""
    import ctypes
    import shutil
    import tempfile

    import busybox_bundle
    import runtime_lifecycle as rl

    runtime = os.path.join(os.path.dirname(sys.executable), "isobox-runtime")
    if not os.access(runtime, os.X_OK):
        return {}
    ctypes.CDLL(None, use_errno=True).prctl(rl.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    work = tempfile.mkdtemp(prefix="ibxl", dir="/tmp")
    try:
        bundle = busybox_bundle.make_bundle(os.path.join(work, "bundle"), ["true"])
        phases: dict[str, list[float]] = {p: [] for p in rl.PHASES}
        for i in range(rounds + 1):
            ph, _ = rl.lifecycle(runtime, os.path.join(work, "root"), bundle, f"l{i}")
            if i:  # the first is a warm-up
                for k, v in ph.items():
                    phases[k].append(v)
        return {k: med(v) for k, v in phases.items()} | {
            "total": med([sum(x) for x in zip(*phases.values(), strict=True)])}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--concurrent", type=int, default=32)
    ap.add_argument("--batches", type=int, default=3, help="concurrent batches (pooled)")
    ap.add_argument("--no-peer", action="store_true", help="isobox only")
    ap.add_argument("--skip", action="append", default=[],
                    choices=("compare", "concurrent", "breakdown"))
    args = ap.parse_args()
    iso = IsoboxEnv()
    pod: PodmanEnv | None = None
    try:
        if not args.no_peer and "compare" not in args.skip:
            pod = PodmanEnv(iso)
            v = subprocess.run(pod.argv("--version"), capture_output=True, text=True).stdout
            print(f"peer: {v.strip()} with runc, private store {pod.dir}")
        if "compare" not in args.skip:
            compare(iso, pod, args.rounds)
        if "concurrent" not in args.skip:
            concurrent(iso, args.concurrent, args.batches)
        if "breakdown" not in args.skip:
            breakdown(iso, args.rounds)
        left = iso.leftovers()
        if left:
            print(f"\nLEFT BEHIND in {iso.root}: {left[:10]}")
        return 0
    finally:
        if pod is not None:
            pod.close()
        iso.close()


if __name__ == "__main__":
    sys.exit(main())
