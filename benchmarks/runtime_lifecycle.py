#!/usr/bin/env python3
"""create + start + wait for exit + delete of `true` in a busybox bundle: isobox-runtime
against runc, alternating in one run. Prints medians, p95, the ratio and peak RSS.

Usage: benchmarks/runtime_lifecycle.py [--rounds 50] [--peer runc]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

import busybox_bundle

PR_SET_CHILD_SUBREAPER = 36


def spawn(argv: list[str]) -> tuple[int, int]:
    """Run a command to completion; (exit status, peak RSS in KiB) from wait4."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                           (os.POSIX_SPAWN_DUP2, devnull, 1)])
    finally:
        os.close(devnull)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss


PHASES = ("create", "start", "wait", "delete")


def lifecycle(runtime: str, root: str, bundle: str, cid: str) -> tuple[dict[str, float], int]:
    """One round; (seconds per phase, peak RSS of the runtime's processes in KiB)."""
    pid_file = os.path.join(root, f"{cid}.pid")
    stamps = [time.perf_counter()]
    rss = 0
    for argv in ([runtime, "--root", root, "create", "--bundle", bundle, "--pid-file", pid_file,
                  cid], [runtime, "--root", root, "start", cid]):
        code, r = spawn(argv)
        rss = max(rss, r)
        if code != 0:
            raise SystemExit(f"{' '.join(argv)} exited {code}")
        if argv[3] == "create":
            with open(pid_file) as f:
                init_pid = int(f.read())
        stamps.append(time.perf_counter())
    os.waitpid(init_pid, 0)  # we are the subreaper: the container's init is our child
    stamps.append(time.perf_counter())
    code, r = spawn([runtime, "--root", root, "delete", cid])
    stamps.append(time.perf_counter())
    rss = max(rss, r)
    if code != 0:
        raise SystemExit(f"{runtime} delete exited {code}")
    return {p: stamps[i + 1] - stamps[i] for i, p in enumerate(PHASES)}, rss


def interpreter_of(script: str) -> str | None:
    """The interpreter a ``#!`` script names (None for a binary)."""
    try:
        with open(script, "rb") as f:
            first = f.readline()
    except OSError:
        return None
    return first[2:].split()[0].decode() if first.startswith(b"#!") else None


def bare_start(interpreter: str) -> float:
    """One ``INTERPRETER -IS -c pass``: the VM's speed at this moment (it drifts)."""
    t = time.perf_counter()
    spawn([interpreter, "-IS", "-c", "pass"])
    return time.perf_counter() - t


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--peer", default="runc")
    beside = os.path.join(os.path.dirname(sys.executable), "isobox-runtime")  # the venv's
    ap.add_argument("--runtime", default=beside if os.access(beside, os.X_OK)
                    else shutil.which("isobox-runtime") or "isobox-runtime")
    args = ap.parse_args()
    peer = shutil.which(args.peer)
    if peer is None:
        print(f"{args.peer} is not installed", file=sys.stderr)
        return 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    work = tempfile.mkdtemp(prefix="isobox-bench-")
    try:
        bundle = busybox_bundle.make_bundle(os.path.join(work, "bundle"), ["true"])
        def root_of(name: str) -> str:
            return os.path.join(work, name.replace("/", "_"))

        runtimes = {"isobox-runtime": args.runtime, args.peer: peer}
        times: dict[str, list[float]] = {n: [] for n in runtimes}
        phases: dict[str, dict[str, list[float]]] = {n: {p: [] for p in PHASES} for n in runtimes}
        rss: dict[str, int] = dict.fromkeys(runtimes, 0)
        for name, exe in runtimes.items():  # one warm-up each (page cache, pyc)
            lifecycle(exe, root_of(name), bundle, f"warm-{os.getpid()}")
        interpreter = interpreter_of(shutil.which(args.runtime) or args.runtime)
        bare: list[float] = []
        for i in range(args.rounds):
            if interpreter:
                bare.append(bare_start(interpreter))
            order = list(runtimes.items()) if i % 2 == 0 else list(runtimes.items())[::-1]
            for name, exe in order:
                ph, r = lifecycle(exe, root_of(name), bundle, f"b{os.getpid()}-{i}")
                times[name].append(sum(ph.values()))
                for p, t in ph.items():
                    phases[name][p].append(t)
                rss[name] = max(rss[name], r)
        ours, theirs = times["isobox-runtime"], times[args.peer]
        print(f"create+start+wait+delete of `true`, busybox bundle, {args.rounds} rounds, "
              "alternating")
        print(f"{'runtime':<16}{'median ms':>11}{'p95 ms':>9}{'peak RSS MiB':>14}   "
              + "  ".join(f"{p} ms" for p in PHASES) + " (medians)")
        for name in runtimes:
            print(f"{name:<16}{statistics.median(times[name]) * 1000:>11.1f}"
                  f"{p95(times[name]) * 1000:>9.1f}{rss[name] / 1024:>14.1f}   "
                  + "  ".join(f"{statistics.median(phases[name][p]) * 1000:>{len(p) + 3}.1f}"
                              for p in PHASES))
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"ratio isobox-runtime / {args.peer}: {ratio:.2f}x (median)")
        if bare:
            print(f"bare interpreter start (`{interpreter} -IS -c pass`, once a round): "
                  f"{statistics.median(bare) * 1000:.1f} ms median")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
