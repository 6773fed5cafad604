#!/usr/bin/env python3
"""`make demo`: run a busybox bundle with isobox-runtime, showing isolation; then make a busybox
image offline, build an image from a Containerfile whose RUN step runs in a container, and
list and inspect the result — all in a temporary store that is removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import busybox_bundle

SCRIPT = r"""
echo "hostname inside:   $(hostname)"
echo "my PID inside:     $$"
echo "processes visible: $(ps -o pid,comm | tail -n +2 | tr -s ' ' | tr '\n' ';')"
echo "root filesystem:   $(ls / | tr '\n' ' ')"
echo "capabilities:      $(grep CapEff /proc/self/status | tr -s '\t' ' ')"
"""


def main() -> int:
    runtime = shutil.which("isobox-runtime")
    if runtime is None:
        print("isobox-runtime is not on PATH; run `make demo`", file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix="isobox-demo-")
    try:
        bundle = os.path.join(workdir, "bundle")
        busybox_bundle.make_bundle(bundle, ["sh", "-c", SCRIPT])
        config = busybox_bundle.make_config(["sh", "-c", SCRIPT])
        config["hostname"] = "isobox-demo"
        busybox_bundle.write_config(bundle, config)
        host_procs = len([p for p in os.listdir("/proc") if p.isdigit()])
        print(f"host: hostname {os.uname().nodename}, {host_procs} processes\n")
        print(f"$ isobox-runtime run --bundle {bundle} demo")
        cid = f"demo-{os.getpid()}"
        proc = subprocess.run([runtime, "--root", os.path.join(workdir, "state"), "run",
                               "--bundle", bundle, cid], check=False)
        print(f"\ncontainer exited with status {proc.returncode}")
        if proc.returncode != 0:
            return proc.returncode
        return image_demo(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


CONTAINERFILE = """\
FROM busybox
RUN echo "built in a container: hostname $(hostname), pid $$" > /built.txt
COPY greeting.txt /greeting.txt
ENV GREETING=hello
CMD ["cat", "/built.txt", "/greeting.txt"]
"""


def image_demo(workdir: str) -> int:
    isobox = shutil.which("isobox")
    if isobox is None:
        print("isobox is not on PATH; run `make demo`", file=sys.stderr)
        return 1
    root = os.path.join(workdir, "store")
    context = os.path.join(workdir, "context")
    os.makedirs(context)
    with open(os.path.join(context, "Containerfile"), "w") as f:
        f.write(CONTAINERFILE)
    with open(os.path.join(context, "greeting.txt"), "w") as f:
        f.write("hello from the build context\n")
    steps = [
        ["image", "bootstrap", "busybox"],
        ["build", "-t", "demo:1", context],
        ["images"],
        ["image", "history", "demo:1"],
    ]
    try:
        for args in steps:
            print(f"\n$ isobox {' '.join(args)}")
            proc = subprocess.run([isobox, "--root", root, *args], check=False)
            if proc.returncode != 0:
                return proc.returncode
        print("\n$ cat /built.txt   # inside the image, via a snapshot of it")
        from isobox.images.snapshots import Snapshots
        from isobox.images.store import ImageStore

        store = ImageStore(root)
        snaps = Snapshots(store)
        snap = snaps.create(f"demo-{os.getpid()}", image_id=store.resolve_id("demo:1"))
        try:
            with open(os.path.join(snap.rootfs, "built.txt")) as f:
                print(f.read(), end="")
        finally:
            snaps.remove(snap.id)
            store.close()
        return 0
    finally:
        subprocess.run([isobox, "--root", root, "image", "prune", "-a", "-f"],
                       capture_output=True, check=False)


if __name__ == "__main__":
    sys.exit(main())
