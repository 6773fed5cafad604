"""The OCI lifecycle through the real binary: create, start, state, kill, delete, run."""

from __future__ import annotations

import json
import os
import time

from harness import Bundle, Runtime, unique_id
from isobox.runtime.state import process_start_time


def wait_status(rt: Runtime, cid: str, status: str, timeout: float = 10) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        st = rt.state(cid)
        if st["status"] == status or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_create_start_delete(runtime: Runtime, bundle: Bundle, tmp_path: object) -> None:
    bundle.set_args("sh", "-c", "echo hello > /tmp/out; sleep 30")
    cid = unique_id()
    pid_file = os.path.join(str(tmp_path), "pid")
    runtime("create", "--bundle", bundle.path, "--pid-file", pid_file, cid)
    st = runtime.state(cid)
    assert st["status"] == "created"
    assert st["id"] == cid and st["bundle"] == bundle.path
    with open(pid_file) as f:
        pid = int(f.read())
    assert pid == st["pid"] and os.path.exists(f"/proc/{pid}")
    runtime("start", cid)
    st = wait_status(runtime, cid, "running")
    assert st["status"] == "running"
    res = runtime("delete", cid, check=False)
    assert res.code == 1 and "not stopped" in res.err
    runtime("kill", cid, "KILL")
    assert wait_status(runtime, cid, "stopped")["status"] == "stopped"
    runtime("delete", cid)
    assert cid not in runtime.ids()
    # gone, or a zombie waiting for its new parent (pid 1 here) to reap it
    assert process_start_time(pid) is None


def test_run_foreground_exit_code_and_isolation(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["hostname"] = "boxhost"
    bundle.set_args("sh", "-c", 'echo "$(hostname) $$"; ps -o pid=; exit 7')
    res = runtime("run", "--bundle", bundle.path, unique_id(), check=False)
    assert res.code == 7, res
    first, *pids = res.out.splitlines()
    assert first == "boxhost 1"
    assert len(pids) == 2 and all(int(p) < 10 for p in pids)  # sh, ps: no host process


def test_run_detached_then_kill(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    assert runtime.state(cid)["status"] == "running"
    runtime("kill", cid)  # default TERM; sleep as PID 1 ignores TERM without a handler
    runtime("kill", cid, "SIGKILL")
    assert wait_status(runtime, cid, "stopped")["status"] == "stopped"
    res = runtime("kill", cid, "KILL", check=False)
    assert res.code == 1 and "not running" in res.err
    runtime("delete", cid)


def test_delete_created_container_and_force(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "60")
    a, b = unique_id(), unique_id()
    runtime("create", "--bundle", bundle.path, a)
    runtime("delete", a)  # a created container may be deleted
    runtime("run", "-d", "--bundle", bundle.path, b)
    runtime("delete", "--force", b)
    assert runtime.ids() == []


def test_duplicate_id_and_missing(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    res = runtime("create", "--bundle", bundle.path, cid, check=False)
    assert res.code == 1 and "exists" in res.err
    assert runtime.state(cid)["status"] == "created"  # the failed create did no harm
    res = runtime("state", "nonexistent-xyz", check=False)
    assert res.code == 1 and "does not exist" in res.err
    res = runtime("start", cid)
    res = runtime("start", cid, check=False)
    assert res.code == 1 and "already running" in res.err


def test_list_and_json_log(runtime: Runtime, bundle: Bundle, tmp_path: object) -> None:
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    out = runtime("list", "--format", "json").out
    items = json.loads(out)
    assert [i["id"] for i in items] == [cid] and items[0]["status"] == "running"
    assert cid in runtime("list", "-q").out
    table = runtime("list").out.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"] and cid in table[1]
    log = os.path.join(str(tmp_path), "log.json")
    res = runtime("start", cid, check=False, global_args=("--log", log, "--log-format", "json"))
    assert res.code == 1
    with open(log) as f:
        entry = json.loads(f.readline())
    assert entry["level"] == "error" and "running" in entry["msg"]
    runtime("delete", "-f", cid)


def test_stdio_passes_through(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sh", "-c", "read line; echo got:$line; echo err >&2")
    res = runtime("run", "--bundle", bundle.path, unique_id(), input="abc\n")
    assert res.out == "got:abc\n" and res.err == "err\n"
