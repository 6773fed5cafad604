"""Run kernel-state-changing code (capabilities, seccomp) in a forked child, never in pytest."""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

PR_SET_DUMPABLE = 4


@dataclass
class ChildResult:
    status: int  # raw wait status
    value: Any = None  # what fn returned
    error: str | None = None  # "ExcType: message" if fn raised
    errno: int | None = None

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None

    def ok(self) -> Any:
        assert self.error is None, self.error
        assert os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0, self.status
        return self.value


def run_in_child(fn: Callable[[], Any], timeout: float = 10.0) -> ChildResult:
    """Fork, run ``fn`` in the child, send its result (or exception) back through a pipe.

    The child is non-dumpable with RLIMIT_CORE 0, so SIGSYS kills leave no core file. It
    leaves with os._exit so no pytest teardown runs there. Everything it needs after ``fn``
    (pickle, os.write, exit_group) is imported before the fork.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            import ctypes

            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            try:
                out = ("ok", fn(), None)
            except BaseException as e:
                out = ("err", f"{type(e).__name__}: {e}", getattr(e, "errno", None))
            data = pickle.dumps(out)
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                break  # timed out: the waitpid loop below kills the child
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("child timed out")
        time.sleep(0.005)
    if not chunks:
        return ChildResult(status)
    kind, value, err = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return ChildResult(status, value=value)
    return ChildResult(status, error=value, errno=err)


@pytest.fixture
def in_child() -> Callable[..., ChildResult]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    return run_in_child
