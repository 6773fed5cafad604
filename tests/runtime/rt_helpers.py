"""Helpers shared by the runtime tests: waiting for states, host-side leak checks."""

from __future__ import annotations

import os
import time
from typing import Any

from harness import RUN_PREFIX, Runtime
from harness import wait_for as wait_for


def wait_status(rt: Runtime, cid: str, status: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = rt.state(cid)
        if st["status"] == status or time.monotonic() > deadline:
            return st
        time.sleep(0.02)




def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def mountinfo() -> set[str]:
    """The host's mount points (mount IDs dropped, so a remount does not count as new)."""
    with open("/proc/self/mountinfo") as f:
        return {" ".join(ln.split()[3:5]) for ln in f}


def live_processes_matching(text: str) -> list[int]:
    """Pids (not zombies) whose command line or cgroup mentions ``text``."""
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rindex(b")") + 2:].split()[0] in (b"Z", b"X"):
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{name}/cgroup") as f:
                cg = f.read()
        except (OSError, ValueError):
            continue
        if text in cmd or text in cg:
            found.append(int(name))
    return found


def cgroup_dirs_matching(text: str) -> list[str]:
    found = []
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if text in d:
                found.append(os.path.join(base, d))
        if base.count("/") > 8:
            dirs[:] = []
    return found


def assert_nothing_left(rt: Runtime, cid: str, mounts_before: set[str],
                        paths: tuple[str, ...] = ()) -> None:
    """After a failed command: no state dir, cgroup, host mount or process of ``cid``.

    Only new mounts that mention the container, this run, its --root or ``paths`` (the
    bundle) count: other workloads on the host may mount things meanwhile."""
    assert not os.path.exists(os.path.join(rt.root, cid)), f"state dir of {cid} left"
    assert cid not in rt.ids()
    assert not cgroup_dirs_matching(cid), f"cgroups left: {cgroup_dirs_matching(cid)}"
    keys = (cid, RUN_PREFIX, rt.root, *paths)
    new = [m for m in mountinfo() - mounts_before if any(k in m for k in keys)]
    assert not new, f"mounts left on the host: {new}"
    procs = wait_for_gone(cid)
    assert not procs, f"processes left: {procs}"


def wait_for_gone(cid: str, timeout: float = 3) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        procs = live_processes_matching(cid)
        if not procs or time.monotonic() > deadline:
            return procs
        time.sleep(0.02)


def expect_failure(rt: Runtime, cid: str, *args: str, needle: str | tuple[str, ...],
                   bundle: str | None = None) -> str:
    """``create`` (or the given command) fails with exit 1 naming ``needle``; nothing left."""
    before = mountinfo()
    cmd = args or ("create", "--bundle", bundle or ".", cid)
    res = rt(*cmd, check=False)
    assert res.code == 1, res
    for n in (needle,) if isinstance(needle, str) else needle:
        assert n in res.err, res
    paths = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a in ("--bundle", "-b")]
    assert_nothing_left(rt, cid, before, tuple(paths))
    return res.err


def ns_inode(pid: int | str, ns: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{ns}")


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in read(f"/proc/{pid}/status").splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def pid_state(pid: int) -> str:
    data = read(f"/proc/{pid}/stat")
    return data[data.rindex(")") + 2:].split()[0]
