#!/usr/bin/env python3
"""Make an OCI bundle with a busybox root filesystem from Debian's busybox-static.

Usage: busybox_bundle.py DIR [CMD ...]  — writes DIR/rootfs and DIR/config.json.
Used by `make demo`, the tests and the benchmarks (offline: no registry needed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.exists(path):
            out = subprocess.run(["file", "-L", path], capture_output=True, text=True,
                                 check=False).stdout if shutil.which("file") else "static"
            if "dynamically" not in out:
                return path
    raise SystemExit("busybox-static is not installed (apt-get install busybox-static)")


def make_rootfs(rootfs: str) -> None:
    busybox = find_busybox()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root",
              "home", "var", "run"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = os.path.join(rootfs, "bin", applet)
        if not os.path.lexists(link) and applet != "busybox":
            os.symlink("busybox", link)
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    with open(os.path.join(rootfs, "etc", "hostname"), "w") as f:
        f.write("isobox\n")


def make_config(args: list[str]) -> dict[str, object]:
    from isobox.oci.defaults import default_spec

    spec = default_spec(args=args)
    spec["process"]["terminal"] = False  # type: ignore[index]
    return spec


def make_bundle(directory: str, args: list[str] | None = None, rootfs_from: str | None = None
                ) -> str:
    """Create DIR/rootfs (copied from ``rootfs_from`` if given, which is much faster) and
    DIR/config.json; returns DIR."""
    rootfs = os.path.join(directory, "rootfs")
    if rootfs_from:
        shutil.copytree(rootfs_from, rootfs, symlinks=True)
    else:
        make_rootfs(rootfs)
    write_config(directory, make_config(args or ["sh"]))
    return directory


def write_config(directory: str, config: dict[str, object]) -> None:
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    make_bundle(sys.argv[1], sys.argv[2:] or None)
    print(sys.argv[1])
