#!/usr/bin/env python3
"""Unpack the gzip layers of a debootstrapped Debian image: isobox's unpack_layer against
GNU `tar -xzf --numeric-owner`, alternating in one run. Prints medians, p95 and the ratio.

The layers (*.tar.gz in --layers) are built once when missing: `debootstrap --variant=minbase
bookworm` into the cache dir, split into /usr and the rest with `tar --numeric-owner -czf`.
Extracted trees are deleted between rounds, outside the timing.

Usage: benchmarks/image_unpack.py [--rounds 5] [--layers DIR]
                                  [--cache /var/cache/isobox-bench/debian-layers]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from isobox.images.unpack import unpack_layer

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"


def build_layers(cache: str) -> str:
    """debootstrap a minbase rootfs once and split it into two gzip layers."""
    layers = os.path.join(cache, "layers")
    if glob.glob(os.path.join(layers, "*.tar.gz")):
        return layers
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is not installed (apt-get install debootstrap)")
    rootfs = os.path.join(cache, "rootfs")
    done = os.path.join(cache, ".debootstrap-done")
    if not os.path.exists(done):
        shutil.rmtree(rootfs, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", SUITE, rootfs, MIRROR], check=True)
        open(done, "w").close()
    tmp = layers + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tar = ["tar", "--numeric-owner", "-C", rootfs]
    subprocess.run([*tar, "--exclude=./usr", "-czf", os.path.join(tmp, "1-base.tar.gz"), "."],
                   check=True)
    subprocess.run([*tar, "-czf", os.path.join(tmp, "2-usr.tar.gz"), "./usr"], check=True)
    os.rename(tmp, layers)
    return layers


def run_isobox(layers: list[str], dest: str) -> None:
    for path in layers:
        with open(path, "rb") as f:
            unpack_layer(f, dest, whiteouts="overlay")


def run_tar(layers: list[str], dest: str) -> None:
    for path in layers:
        subprocess.run(["tar", "--numeric-owner", "-xzf", path, "-C", dest], check=True)


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--layers", help="directory of *.tar.gz layers (default: build them)")
    ap.add_argument("--cache", default="/var/cache/isobox-bench/debian-layers")
    args = ap.parse_args()
    layer_dir = args.layers or build_layers(args.cache)
    layers = sorted(glob.glob(os.path.join(layer_dir, "*.tar.gz")))
    if not layers:
        raise SystemExit(f"no *.tar.gz in {layer_dir}")
    compressed = sum(os.path.getsize(p) for p in layers)
    tools = {"isobox": run_isobox, "tar": run_tar}
    times: dict[str, list[float]] = {t: [] for t in tools}
    work = tempfile.mkdtemp(prefix="isobox-bench-unpack-", dir=os.path.dirname(layer_dir))
    try:
        for i in range(args.rounds):
            order = list(tools) if i % 2 == 0 else list(reversed(tools))
            for tool in order:
                dest = os.path.join(work, tool)
                os.mkdir(dest, 0o700)
                subprocess.run(["sync"], check=True)
                t0 = time.perf_counter()
                tools[tool](layers, dest)
                times[tool].append(time.perf_counter() - t0)
                shutil.rmtree(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(layers)} layers, {compressed / 1e6:.1f} MB gzip, {args.rounds} rounds")
    for tool, xs in times.items():
        print(f"{tool:8s} median {statistics.median(xs):.3f} s   p95 {p95(xs):.3f} s")
    ratio = statistics.median(times["isobox"]) / statistics.median(times["tar"])
    print(f"ratio isobox/tar (median): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
