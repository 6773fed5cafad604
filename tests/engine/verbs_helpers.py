"""Helpers of the verb tests (inspect, stats, top, port, diff, cp, update, events, prune)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from engine_helpers import Isobox

from harness import unique_id


def run_detached(isobox: Isobox, *args: str, cmd: tuple[str, ...] = ("sleep", "30"),
                 network: str = "none") -> tuple[str, str]:
    """(id, name) of a new running busybox container."""
    name = unique_id("v")
    cid = isobox("run", "-d", "--network", network, "--name", name, *args, "busybox",
                 *cmd).stdout.strip()
    return cid, name


def inspect(isobox: Isobox, ref: str) -> dict[str, Any]:
    data = json.loads(isobox("inspect", ref).stdout)
    assert isinstance(data, list) and len(data) == 1
    return dict(data[0])


def cgroup_file(cid: str, root: str, controller: str, name: str) -> str:
    """Content of a cgroup file of the container, found through its bundle's cgroupsPath."""
    from isobox.cgroups import CgroupManager
    from isobox.engine.layout import Layout

    with open(os.path.join(Layout.for_root(root).container_dir(cid), "config.json")) as f:
        path = json.load(f)["linux"]["cgroupsPath"]
    found = CgroupManager(path).controller_dir(controller)
    assert found is not None, controller
    with open(os.path.join(found[0], name)) as f:
        return f.read().strip()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
