#!/usr/bin/env python3
"""`make demo`: build a busybox bundle and run it with isobox-runtime, showing isolation."""

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
        return proc.returncode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
