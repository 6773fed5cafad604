"""Helpers for real cgroup tests: unique names, gated children, cleanup.

Every cgroup a test makes is named ``isobox-test-<pid>-<random>-<n>``; at teardown every
process left in it is killed and the directories are removed, and a final sweep removes any
directory with this run's prefix from every hierarchy.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

from isobox.cgroups import CgroupManager
from isobox.cgroups.layout import hierarchies
from isobox.cgroups.manager import _remove_tree as remove_tree

PREFIX = f"isobox-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
_counter = itertools.count()


def unique(name: str = "cg") -> str:
    return f"{PREFIX}-{name}-{next(_counter)}"


def kill_and_remove(mgr: CgroupManager) -> None:
    for _ in range(3):
        try:
            if mgr.freezer_state() == "FROZEN":
                mgr.thaw()
        except Exception:
            pass
        for pid in mgr.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            mgr.destroy()
            return
        except Exception:
            time.sleep(0.1)


def sweep() -> None:
    for h in hierarchies():
        for root, dirs, _ in os.walk(h.mountpoint, topdown=True):
            for name in list(dirs):
                if name.startswith(PREFIX):
                    path = os.path.join(root, name)
                    kill_procs(path)
                    remove_tree(path)
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
                    dirs.remove(name)
            if root.count("/") - h.mountpoint.count("/") >= 3:
                dirs.clear()


def kill_procs(path: str) -> None:
    for root, _, files in os.walk(path):
        if "cgroup.procs" in files:
            with open(os.path.join(root, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass


class Children:
    """Child processes that wait on stdin until released, so they exec inside the cgroup."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def gated(self, script: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(["sh", "-c", f"read _gate; {script}"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    @staticmethod
    def release(p: subprocess.Popen[str]) -> None:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.close()
        p.stdin = None  # so that communicate() does not touch it

    def run_in(self, mgr: CgroupManager, script: str, timeout: float = 10
               ) -> subprocess.CompletedProcess[str]:
        p = self.gated(script)
        mgr.add(p.pid)
        self.release(p)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
