"""Resource limits, catalogue cases 24-26, on this hybrid host (v1 controllers plus cgroup2
at /sys/fs/cgroup/unified); ``host_guard`` runs the after-every-case checks and the
``runtime`` fixture checks that the container's cgroups are gone after delete."""

from __future__ import annotations

import os
import time

import pytest

pytest.register_assert_rewrite("sec_helpers")  # before its import below: asserts in fixtures
from sec_helpers import cgroup_dirs, read_text, wait_status  # noqa: E402

from harness import Bundle, Runtime, unique_id  # noqa: E402

pytest_plugins = ["sec_helpers"]
pytestmark = pytest.mark.usefixtures("host_guard")


def _host_tasks() -> int:
    return sum(1 for n in os.listdir("/proc") if n.isdigit())


# -- case 24 -------------------------------------------------------------------------------

def _pids(runtime: Runtime, cid: str) -> str:
    return cgroup_dirs(runtime, cid)["pids"]


def test_case24_sleep_loop_against_pids_limit(runtime: Runtime, bundle: Bundle,
                                              probe: str) -> None:
    """``for i in $(seq 300); do sleep 600 & done`` with pids.limit = 64."""
    bundle.config["linux"]["resources"]["pids"] = {"limit": 64}
    bundle.set_args(probe, "sleep")
    tasks_before = _host_tasks()
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    res = runtime("exec", cid, "sh", "-c",
                  "i=0; while [ $i -lt 300 ]; do sleep 600 & i=$((i+1)); done", check=False)
    assert res.code != 0 and "Resource temporarily unavailable" in res.err, res
    pids_dir = _pids(runtime, cid)
    assert read_text(f"{pids_dir}/pids.max").strip() == "64"
    assert 50 <= int(read_text(f"{pids_dir}/pids.current")) <= 64
    assert _host_tasks() - tasks_before <= 64 + 8  # a few unrelated host tasks come and go
    # a full cgroup refuses a joining process too, with the same error, and does not hang
    res = runtime("exec", cid, "true", check=False, timeout=10)
    assert res.code != 0 and "Resource temporarily unavailable" in res.err, res
    runtime("kill", "--all", cid, "KILL")
    assert wait_status(runtime, cid, "stopped")["status"] == "stopped"
    runtime("delete", cid)
    assert not os.path.exists(pids_dir)


@pytest.mark.stress
def test_case24_fork_bomb_against_pids_limit(runtime: Runtime, bundle: Bundle,
                                             probe: str) -> None:
    """``:(){ :|:& };:`` for a second with pids.limit = 64; kill and delete clean up."""
    bundle.config["linux"]["resources"]["pids"] = {"limit": 64}
    bundle.set_args(probe, "sleep")
    tasks_before = _host_tasks()
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pids_dir = _pids(runtime, cid)
    runtime("exec", "-d", cid, "sh", "-c", "b() { b | b & }; b")
    peak = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        peak = max(peak, int(read_text(f"{pids_dir}/pids.current")))
        assert _host_tasks() - tasks_before <= 64 + 8
        time.sleep(0.05)
    assert 32 <= peak <= 64, peak
    t0 = time.monotonic()
    assert runtime.state(cid)["status"] == "running"  # the runtime stays responsive
    assert time.monotonic() - t0 < 5
    runtime("kill", "--all", cid, "KILL")
    assert wait_status(runtime, cid, "stopped")["status"] == "stopped"
    runtime("delete", cid)
    assert not os.path.exists(pids_dir)


@pytest.mark.parametrize("limit,want", [(0, "1"), (-1, "max")])
def test_case24_pids_limit_semantics(runtime: Runtime, bundle: Bundle, limit: int,
                                     want: str) -> None:
    """runc's semantics: a limit of 0 means 1 (never "no limit"), -1 means unlimited."""
    bundle.config["linux"]["resources"]["pids"] = {"limit": limit}
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)  # the limit applies once init exists
    assert read_text(f"{_pids(runtime, cid)}/pids.max").strip() == want
    if limit == 0:
        res = runtime("exec", cid, "true", check=False, timeout=10)
        assert res.code != 0 and "Resource temporarily unavailable" in res.err, res
    runtime("delete", "--force", cid)


# -- case 25 -------------------------------------------------------------------------------

MIB = 1 << 20


def test_case25_memory_limit_and_oom(runtime: Runtime, bundle: Bundle, probe: str) -> None:
    bundle.config["linux"]["resources"]["memory"] = {"limit": 32 * MIB, "swap": 32 * MIB}
    bundle.set_args(probe, "alloc", "200")
    cid = unique_id()
    res = runtime("run", "--keep", "--bundle", bundle.path, cid, check=False, timeout=60)
    assert res.code == 137 and "ALLOC-DONE" not in res.out, res  # SIGKILLed by the OOM killer
    mem = cgroup_dirs(runtime, cid)["memory"]
    assert int(read_text(f"{mem}/memory.limit_in_bytes")) == 32 * MIB
    assert int(read_text(f"{mem}/memory.memsw.limit_in_bytes")) == 32 * MIB
    oom = dict(ln.split() for ln in read_text(f"{mem}/memory.oom_control").splitlines())
    assert int(oom["oom_kill"]) >= 1, oom
    # Only the container's process died: the runtime (and this test) live on.
    assert runtime.state(cid)["status"] == "stopped"
    runtime("delete", cid)


def test_case25_oom_event_and_only_the_offender_dies(runtime: Runtime, bundle: Bundle,
                                                     probe: str) -> None:
    """runc's events.bats "events oom": an exec'd process blows the limit; ``events``
    reports ``{"type": "oom"}``, the exec exits 137 and the container's init lives on."""
    import json
    import subprocess

    bundle.config["linux"]["resources"]["memory"] = {"limit": 32 * MIB, "swap": 32 * MIB}
    bundle.set_args(probe, "sleep")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    ev = subprocess.Popen([*runtime.cmd, "--root", runtime.root, "events", "--interval", "10s",
                           cid], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)  # let events take its baseline
        res = runtime("exec", cid, probe, "alloc", "200", check=False, timeout=60)
        assert res.code == 137 and "ALLOC-DONE" not in res.out, res
        assert runtime.state(cid)["status"] == "running"
        runtime("kill", cid, "KILL")
        out, _ = ev.communicate(timeout=15)
    finally:
        if ev.poll() is None:
            ev.kill()
            ev.wait()
    types = [json.loads(ln)["type"] for ln in out.splitlines() if ln.strip()]
    assert "oom" in types, out
    runtime("delete", "--force", cid)


# -- case 26 -------------------------------------------------------------------------------

def test_case26_exec_joins_every_hierarchy(runtime: Runtime, bundle: Bundle, probe: str) -> None:
    bundle.config["linux"]["resources"]["pids"] = {"limit": 100}
    bundle.set_args(probe, "sleep")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    out = runtime("exec", cid, "sh", "-c", "cat /proc/self/cgroup; echo ---; "
                  "cat /proc/1/cgroup").out
    mine, init = out.split("---\n")
    assert mine.splitlines() == init.splitlines(), out
    lines = mine.splitlines()
    controllers = {c for ln in lines for c in ln.split(":")[1].split(",") if c}
    assert {"pids", "memory", "devices", "freezer"} <= controllers, lines
    assert any(ln.startswith("0::") for ln in lines), lines  # the unified hierarchy too
    assert all(ln.endswith("/" + cid) for ln in lines), lines
    runtime("delete", "--force", cid)


def test_case26_exec_into_paused_container_fails(runtime: Runtime, bundle: Bundle,
                                                 probe: str) -> None:
    bundle.set_args(probe, "sleep")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    runtime("pause", cid)
    assert runtime.state(cid)["status"] == "paused"
    t0 = time.monotonic()
    res = runtime("exec", cid, "true", check=False, timeout=10)
    assert res.code != 0 and "cannot exec in a paused container" in res.err, res
    assert time.monotonic() - t0 < 5
    runtime("resume", cid)
    assert runtime("exec", cid, "true").code == 0
    runtime("delete", "--force", cid)
