"""The engine's runtime client: our own isobox-runtime called in-process for start, kill,
pause, resume and delete must behave as the binary does, on a real container and on errors."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from harness import Bundle, Runtime, unique_id, wait_for
from isobox.engine.runtime_client import (
    OwnRuntimeClient,
    RuntimeClient,
    own_runtime_path,
    runtime_client,
)
from isobox.errors import SystemSetupError

pytestmark = pytest.mark.engine


def wait_gone(pid: int) -> None:
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what=f"pid {pid} gone")


def test_default_runtime_is_in_process_a_named_path_is_the_binary(tmp_path: object) -> None:
    root = str(tmp_path)
    assert type(runtime_client("", root)) is OwnRuntimeClient
    assert type(runtime_client("isobox-runtime", root)) is OwnRuntimeClient
    assert type(runtime_client(own_runtime_path(), root)) is RuntimeClient
    assert type(runtime_client("runc", root)) is RuntimeClient


def _error(call: Callable[..., object], *args: str) -> str:
    with pytest.raises(SystemSetupError) as info:
        call(*args)
    return str(info.value)


def test_errors_read_as_the_binarys(runtime: Runtime) -> None:
    own = OwnRuntimeClient(own_runtime_path(), runtime.root)
    binary = RuntimeClient(own_runtime_path(), runtime.root)
    missing = unique_id("missing")
    for op in ("start", "pause", "resume"):
        text = _error(getattr(own, op), missing)
        assert text == _error(getattr(binary, op), missing)
        assert text.startswith(f"isobox-runtime {op}: ") and missing in text
    assert own.kill(missing, "KILL") is False and binary.kill(missing, "KILL") is False
    own.delete(missing)  # nothing to delete: no error, as the binary's --force


def test_lifecycle_in_process_on_a_real_container(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    own = OwnRuntimeClient(own_runtime_path(), runtime.root)
    own.start(cid)
    assert runtime.state(cid)["status"] == "running"
    pid = runtime.state(cid)["pid"]
    assert "isobox-runtime start: " in _error(own.start, cid)  # already running
    own.pause(cid)
    assert runtime.state(cid)["status"] == "paused"
    own.resume(cid)
    assert runtime.state(cid)["status"] == "running"
    assert own.kill(cid, "TERM") is True
    wait_gone(pid)
    assert runtime.state(cid)["status"] == "stopped"
    assert own.kill(cid, "TERM") is False  # not running any more: as the binary, no raise
    own.delete(cid)
    assert cid not in runtime.ids()
    assert not os.path.exists(os.path.join(runtime.root, cid))


def test_delete_force_kills_a_running_container(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "100")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    OwnRuntimeClient(own_runtime_path(), runtime.root).delete(cid, force=True)
    wait_gone(pid)
    assert cid not in runtime.ids()


def test_a_corrupt_state_file_is_an_error_not_a_traceback(runtime: Runtime,
                                                          bundle: Bundle) -> None:
    bundle.set_args("true")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    state_file = os.path.join(runtime.root, cid, "state.json")
    with open(state_file, "rb") as f:
        good = f.read()
    try:
        with open(state_file, "wb") as f:
            f.write(good[: len(good) // 2])  # as after a torn write
        own = OwnRuntimeClient(own_runtime_path(), runtime.root)
        text = _error(own.start, cid)
        assert text.startswith("isobox-runtime start: ") and "not a valid state file" in text
        assert own.kill(cid, "KILL") is False
        own.delete(cid)  # ignored, as the binary's failure was
        res = runtime("start", cid, check=False)
        assert res.code == 1 and "not a valid state file" in res.err
        assert "Traceback" not in res.err
    finally:
        with open(state_file, "wb") as f:
            f.write(good)


def test_in_process_start_gives_up_on_an_init_that_never_takes_it(runtime: Runtime,
                                                                  bundle: Bundle) -> None:
    bundle.set_args("true")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    os.kill(pid, signal.SIGSTOP)  # blocked opening exec.fifo, and now stopped as well
    try:
        own = OwnRuntimeClient(own_runtime_path(), runtime.root)
        own.start_timeout = 0.5
        t = time.monotonic()
        assert "did not take the start in 0.5 s" in _error(own.start, cid)
        assert time.monotonic() - t < 5
    finally:
        os.kill(pid, signal.SIGCONT)
        runtime("delete", "--force", cid, check=False)
    wait_gone(pid)
