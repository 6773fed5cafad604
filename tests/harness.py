"""Test harness shared by every test package: the runtime driver, bundles, unique names.

Imported as ``harness`` (tests/ is on sys.path); the fixtures live in tests/conftest.py."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import busybox_bundle  # noqa: E402, F401  (re-exported to conftest.py)

RUN_PREFIX = f"ibxt{os.getpid()}"
_counter = itertools.count()


def runtime_command() -> list[str]:
    exe = shutil.which("isobox-runtime") or os.path.join(sys.prefix, "bin", "isobox-runtime")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "isobox.runtime"]


def unique_id(tag: str = "c") -> str:
    return f"{RUN_PREFIX}-{tag}{next(_counter)}"


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


class Runtime:
    """Drives the real ``isobox-runtime`` binary, as podman or containerd would."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.cmd = runtime_command()

    def __call__(self, *args: str, check: bool = True, input: str | None = None,
                 timeout: float = 60, global_args: tuple[str, ...] = ()) -> Result:
        # Files, not pipes: `create` hands its stdio to the container, which keeps it open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([*self.cmd, "--root", self.root, *global_args, *args],
                                  stdout=out, stderr=err, text=True, timeout=timeout,
                                  input=input, check=False,
                                  stdin=None if input is not None else subprocess.DEVNULL)
            out.seek(0)
            err.seek(0)
            proc.stdout, proc.stderr = out.read(), err.read()
        res = Result(proc)
        if check and res.code != 0:
            raise AssertionError(f"isobox-runtime {' '.join(args)} failed: {res}")
        return res

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).out)

    def ids(self) -> list[str]:
        """Container directories under --root (a dot entry is the runtime's own, e.g. the
        seccomp cache: no container ID starts with a dot)."""
        if not os.path.isdir(self.root):
            return []
        return [n for n in os.listdir(self.root) if not n.startswith(".")]


class Bundle:
    def __init__(self, path: str) -> None:
        self.path = path
        self.rootfs = os.path.join(path, "rootfs")
        with open(os.path.join(path, "config.json")) as f:
            self.config: dict[str, Any] = json.load(f)

    def save(self) -> None:
        with open(os.path.join(self.path, "config.json"), "w") as f:
            json.dump(self.config, f, indent=2)

    def set_args(self, *args: str) -> Bundle:
        self.config["process"]["args"] = list(args)
        self.save()
        return self


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln for ln in f if path in ln]


def leftover_cgroups() -> list[str]:
    found = []
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if RUN_PREFIX in d:
                found.append(os.path.join(base, d))
        if base.count("/") > 6:
            dirs[:] = []
    return found


def wait_for(pred: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
