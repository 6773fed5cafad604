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
    # short: the monitor's attach socket lives at <root>/containers/<64 hex>/attach
    root = tempfile.mkdtemp(prefix="ibxdemo", dir="/tmp")
    env = {**os.environ, "ISOBOX_NET_PREFIX": "ibxdemo"}
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
        ["run", "--rm", "--network", "none", "demo:1"],
        ["run", "--rm", "busybox", "sh", "-c", "ip -4 -o addr show eth0; cat /etc/hostname"],
        ["run", "-d", "--name", "web", "-p", "127.0.0.1:18080:80", "busybox", "sh", "-c",
         "echo served from a container > /tmp/index.html; exec httpd -f -v -p 80 -h /tmp"],
        ["ps"],
        ["exec", "web", "ps"],
    ]
    try:
        for args in steps:
            print(f"\n$ isobox {' '.join(args)}", flush=True)
            proc = subprocess.run([isobox, "--root", root, *args], check=False, env=env)
            if proc.returncode != 0:
                return proc.returncode
        print("\n$ wget -qO- http://127.0.0.1:18080/   # the published port, from the host",
              flush=True)
        import time
        import urllib.request

        for _ in range(50):
            try:
                with urllib.request.urlopen("http://127.0.0.1:18080/", timeout=2) as r:
                    print(r.read().decode(), end="")
                break
            except OSError:
                time.sleep(0.1)
        for args in (["logs", "web"], ["rm", "-f", "web"],
                     # the same image as a micro-VM: its own kernel (QEMU; TCG without vmx/svm)
                     ["run", "--rm", "--isolation", "vm", "busybox", "sh", "-c",
                      "echo kernel $(uname -r) in a VM; ip -4 -o addr show eth0"],
                     ["ps", "-a"]):
            print(f"\n$ isobox {' '.join(args)}", flush=True)
            subprocess.run([isobox, "--root", root, *args], check=False, env=env)
        return 0
    finally:
        subprocess.run([isobox, "--root", root, "rm", "-f", "web"], capture_output=True,
                       check=False, env=env)
        from isobox.network.manager import NetworkManager

        NetworkManager(os.path.join(root, "network"), bridge_prefix="ibxdemo",
                       nft_table="ibxdemo", default_bridge="ibxdemo0").teardown()
        from isobox.engine.layout import default_run_dir

        shutil.rmtree(default_run_dir(root), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
