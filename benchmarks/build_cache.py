#!/usr/bin/env python3
"""Unchanged rebuild (every step a cache hit) of a 10-instruction Containerfile, as a user
runs it: ``isobox build`` as a subprocess, against ``podman build`` (vfs storage in a
temporary ``--root``, FROM a busybox imported into it), alternating in one run.

The first build of each is outside the timing. Prints median and p95 per tool and the ratio;
the target for isobox is a median of at most 0.3 s.

Usage: benchmarks/build_cache.py [--rounds 10] [--no-peer] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from isobox.images.bootstrap import busybox_rootfs_tar  # noqa: E402

ISOBOX = os.path.join(os.path.dirname(sys.executable), "isobox")
TARGET = 0.3

CONTAINERFILE = """\
FROM {base}
RUN echo one > /one
RUN mkdir -p /opt/app && echo two > /opt/app/two
COPY app.txt /opt/app/
COPY conf/ /etc/app/
ENV APP_MODE=production
WORKDIR /opt/app
RUN cat /opt/app/app.txt > /opt/app/three
CMD ["cat", "/opt/app/two"]
LABEL org.example.bench=build-cache
"""


def make_context(d: str, base: str) -> str:
    ctx = os.path.join(d, "ctx")
    os.makedirs(os.path.join(ctx, "conf"))
    with open(os.path.join(ctx, "Containerfile"), "w") as f:
        f.write(CONTAINERFILE.format(base=base))
    with open(os.path.join(ctx, "app.txt"), "w") as f:
        f.write("app\n" * 1000)
    for i in range(20):
        with open(os.path.join(ctx, "conf", f"c{i}.conf"), "w") as f:
            f.write(f"key{i}=value{i}\n")
    return ctx


def run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, check=False)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return dt


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(0.95 * len(s)) - 1))]


class Isobox:
    name = "isobox build"

    def __init__(self, d: str) -> None:
        self.root = os.path.join(d, "isobox-root")
        self.ctx = make_context(os.path.join(d, "isobox"), "busybox")
        subprocess.run([ISOBOX, "--root", self.root, "image", "bootstrap", "busybox"],
                       check=True, stdout=subprocess.DEVNULL)
        self.argv = [ISOBOX, "--root", self.root, "build", "-t", "bench:latest", self.ctx]

    def close(self) -> None:
        pass


class Podman:
    name = "podman build (vfs)"

    def __init__(self, d: str) -> None:
        podman = shutil.which("podman")
        if not podman:
            raise RuntimeError("podman is not installed")
        self.root = os.path.join(d, "podman-root")
        self.runroot = os.path.join(d, "podman-runroot")
        self.base = [podman, "--root", self.root, "--runroot", self.runroot,
                     "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                     "--events-backend", "none"]
        tar = os.path.join(d, "busybox.tar")
        with open(tar, "wb") as f:
            f.write(busybox_rootfs_tar())
        subprocess.run([*self.base, "import", tar, "localhost/busybox:latest"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.ctx = make_context(os.path.join(d, "podman"), "localhost/busybox:latest")
        self.argv = [*self.base, "build", "--pull=never", "--network=none",
                     "--layers", "-t", "bench:latest", self.ctx]

    def close(self) -> None:
        subprocess.run([*self.base, "system", "reset", "--force"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-peer", action="store_true", help="isobox only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="ibx-bench-build-")
    tools: list[Isobox | Podman] = []
    try:
        tools.append(Isobox(d))
        if not args.no_peer:
            try:
                tools.append(Podman(d))
            except (RuntimeError, subprocess.CalledProcessError) as e:
                err = getattr(e, "stderr", b"") or b""
                print(f"peer: podman unavailable offline ({e}) {err.decode()[-300:]}")
        for t in tools:  # first build: outside the timing
            dt = run(t.argv)
            print(f"{t.name}: first build {dt:.3f}s")
        times: dict[str, list[float]] = {t.name: [] for t in tools}
        for _ in range(args.rounds):
            for t in tools:  # alternating
                times[t.name].append(run(t.argv))
        print(f"\nunchanged rebuild, {args.rounds} rounds (10 instructions, all cached):")
        for name, ts in times.items():
            print(f"  {name:22s} median {statistics.median(ts):.3f}s  p95 {p95(ts):.3f}s  "
                  f"min {min(ts):.3f}s")
        iso = statistics.median(times[tools[0].name])
        if len(tools) > 1:
            peer = statistics.median(times[tools[1].name])
            print(f"  ratio isobox/podman: {iso / peer:.2f}")
        verdict = "OK" if iso <= TARGET else "OVER TARGET"
        print(f"  target median <= {TARGET}s: {verdict}")
        return 0 if iso <= TARGET else 1
    finally:
        for t in tools:
            t.close()
        if args.keep:
            print(f"kept {d}")
        else:
            subprocess.run(["umount", "-R", "-l", d], check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
