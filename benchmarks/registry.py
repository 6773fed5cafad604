#!/usr/bin/env python3
"""Pull and push of one image (busybox rootfs layer + a ~50 MB random-data layer) against a
local docker-registry: ``isobox pull/push`` against ``skopeo copy``, alternating in one run.
Prints medians, p95 and the ratio per operation.

* pull: ``isobox --root <fresh> pull -q HOST/bench:1`` (download, verify, unpack, commit) vs
  ``skopeo copy --src-tls-verify=false docker://HOST/bench:1 oci:<fresh>:1`` (download and
  verify only: skopeo does not unpack), and ``podman --root <fresh> pull`` (overlay storage:
  download and unpack, the like-for-like peer). A fresh store / directory every round.
* push: to a fresh registry every round (started outside the timing), so every blob is really
  uploaded: ``isobox push SRC HOST/bench:1`` vs ``skopeo copy --dest-tls-verify=false
  oci:<layout>:1 docker://HOST/bench:1``.

Usage: benchmarks/registry.py [--rounds 10] [--size-mb 50]
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
from collections.abc import Callable
from typing import BinaryIO, cast

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "images"))

import busybox_bundle  # noqa: E402
from registry_server import Registry  # noqa: E402

from isobox.images.db import LayerRow  # noqa: E402
from isobox.images.layertar import write_layer  # noqa: E402
from isobox.images.reference import parse_reference  # noqa: E402
from isobox.images.store import ImageStore  # noqa: E402
from isobox.oci import image as oci  # noqa: E402


def isobox_cmd() -> str:
    exe = shutil.which("isobox") or os.path.join(os.path.dirname(sys.executable), "isobox")
    if not os.path.exists(exe):
        raise SystemExit("isobox is not installed in this environment (make venv)")
    return exe


def run(argv: list[str]) -> None:
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       check=False)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")


def timed(argv: list[str]) -> float:
    # the previous round's files (and their removal) are written back first, outside the
    # timing: otherwise one tool's writeback (isobox writes the blobs and the unpacked
    # layers, skopeo the blobs) slows whichever command runs next on this VM's disk
    os.sync()
    t = time.perf_counter()
    run(argv)
    return time.perf_counter() - t


def build_image(root: str, work: str, size_mb: int) -> str:
    """A busybox layer + a random-data layer in the store at ``root``; returns its ref."""
    rootfs = os.path.join(work, "rootfs")
    busybox_bundle.make_rootfs(rootfs)
    data = os.path.join(work, "data")
    os.makedirs(os.path.join(data, "data"))
    with open(os.path.join(data, "data", "random.bin"), "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))
    store = ImageStore(root)
    try:
        layers = []
        for src in (rootfs, data):
            w = store.blobs.writer()
            blob = write_layer(src, cast(BinaryIO, w))
            digest = w.commit()
            layers.append(LayerRow(blob.diff_id, digest, blob.size, oci.OCI_LAYER_GZIP))
        config = {"architecture": oci.host_platform().architecture, "os": "linux",
                  "config": {"Cmd": ["sh"]}}
        store.create_image(config, layers, [parse_reference("bench.local/bench:1")])
    finally:
        store.close()
    shutil.rmtree(rootfs)
    shutil.rmtree(data)
    return "bench.local/bench:1"


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def report(title: str, times: dict[str, list[float]]) -> None:
    print(title)
    print(f"{'tool':<10}{'median s':>10}{'p95 s':>9}{'min s':>9}")
    for name, xs in times.items():
        print(f"{name:<10}{statistics.median(xs):>10.3f}{p95(xs):>9.3f}{min(xs):>9.3f}")
    for peer in times:
        if peer != "isobox":
            ratio = statistics.median(times["isobox"]) / statistics.median(times[peer])
            print(f"ratio isobox / {peer}: {ratio:.2f}x (median)")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--no-podman", dest="podman", action="store_false",
                    help="Leave out podman pull (a peer that also unpacks the layers).")
    args = ap.parse_args()
    if shutil.which("skopeo") is None:
        print("skopeo is not installed", file=sys.stderr)
        return 1
    isobox = isobox_cmd()
    work = tempfile.mkdtemp(prefix="isobox-bench-registry-")
    registry = Registry()
    try:
        src_root = os.path.join(work, "src")
        ref = build_image(src_root, work, args.size_mb)
        remote = f"{registry.host}/bench:1"
        run([isobox, "--root", src_root, "push", ref, remote])
        layout = os.path.join(work, "layout")
        run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{remote}",
             f"oci:{layout}:1"])
        blob_bytes = sum(os.path.getsize(os.path.join(layout, "blobs", "sha256", n))
                         for n in os.listdir(os.path.join(layout, "blobs", "sha256")))

        def pull_isobox(i: int) -> float:
            root = os.path.join(work, f"pull-isobox-{i}")
            try:
                return timed([isobox, "--root", root, "pull", "-q", remote])
            finally:
                shutil.rmtree(root, ignore_errors=True)

        def pull_skopeo(i: int) -> float:
            d = os.path.join(work, f"pull-skopeo-{i}")
            try:
                return timed(["skopeo", "copy", "-q", "--src-tls-verify=false",
                              f"docker://{remote}", f"oci:{d}:1"])
            finally:
                shutil.rmtree(d, ignore_errors=True)

        def pull_podman(i: int) -> float:
            d = tempfile.mkdtemp(prefix="ibx-podman-")  # podman: runroot < 50 characters
            try:
                return timed(["podman", "--root", f"{d}/root", "--runroot", f"{d}/run",
                              "--storage-driver", "overlay", "pull", "-q",
                              "--tls-verify=false", remote])
            finally:
                shutil.rmtree(d, ignore_errors=True)

        def push_isobox(i: int) -> float:
            reg = Registry()
            try:
                return timed([isobox, "--root", src_root, "push", ref,
                              f"{reg.host}/bench:1"])
            finally:
                reg.stop()

        def push_skopeo(i: int) -> float:
            reg = Registry()
            try:
                return timed(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                              f"oci:{layout}:1", f"docker://{reg.host}/bench:1"])
            finally:
                reg.stop()

        ops: dict[str, dict[str, Callable[[int], float]]] = {
            "pull": {"isobox": pull_isobox, "skopeo": pull_skopeo,
                     **({"podman": pull_podman} if shutil.which("podman") and args.podman
                        else {})},
            "push": {"isobox": push_isobox, "skopeo": push_skopeo},
        }
        for op in ops.values():  # warm-up: page cache, pyc, Go runtime
            for fn in op.values():
                fn(-1)
        results: dict[str, dict[str, list[float]]] = {o: {t: [] for t in tools}
                                                      for o, tools in ops.items()}
        for i in range(args.rounds):
            for op, tools in ops.items():
                order = list(tools.items()) if i % 2 == 0 else list(tools.items())[::-1]
                for name, fn in order:
                    results[op][name].append(fn(i))
        print(f"image: busybox layer + {args.size_mb} MB random layer, "
              f"{blob_bytes / 1e6:.1f} MB of blobs; local docker-registry over HTTP; "
              f"{args.rounds} rounds, alternating\n")
        report("pull (isobox, podman: download + verify + unpack; skopeo: to an OCI layout)",
               results["pull"])
        report("push (every blob uploaded: a fresh registry per round)", results["push"])
        return 0
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
