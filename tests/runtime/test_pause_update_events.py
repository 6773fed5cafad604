"""pause/resume (freezer), update (flags and -r resources.json) and events (--stats,
streaming, oom) through the real binary."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rt_helpers import pid_state, read, wait_for

from harness import Bundle, Runtime, unique_id

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /dev/shm/n; done"


def cg_dir(pid: int, ctl: str) -> str:
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        _, ctls, path = line.split(":", 2)
        if ctl in ctls.split(","):
            return f"/sys/fs/cgroup/{ctl}{path}"
    raise AssertionError(f"no {ctl} cgroup")


@pytest.fixture
def counter(runtime: Runtime, bundle: Bundle) -> Iterator[tuple[str, int]]:
    bundle.set_args("sh", "-c", COUNTER)
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    yield cid, runtime.state(cid)["pid"]
    runtime("delete", "--force", cid, check=False)


def count(runtime: Runtime, cid: str, pid: int) -> int:
    return int(read(f"/proc/{pid}/root/dev/shm/n") or "0")


def test_pause_freezes_and_resume_thaws(runtime: Runtime, counter: tuple[str, int]) -> None:
    cid, pid = counter
    wait_for(lambda: os.path.exists(f"/proc/{pid}/root/dev/shm/n"), what="counter")
    runtime("pause", cid)
    assert runtime.state(cid)["status"] == "paused"
    assert json.loads(runtime("list", "--format", "json").out)[0]["status"] == "paused"
    first = count(runtime, cid, pid)
    time.sleep(0.3)
    assert count(runtime, cid, pid) == first, "a paused container kept running"
    assert pid_state(pid) == "D"  # frozen tasks report as uninterruptible sleep
    assert read(f"{cg_dir(pid, 'freezer')}/freezer.state").strip() == "FROZEN"
    res = runtime("pause", cid, check=False)
    assert res.code == 1 and "not running" in res.err
    runtime("resume", cid)
    assert runtime.state(cid)["status"] == "running"
    wait_for(lambda: count(runtime, cid, pid) > first + 10, what="counter advances")
    res = runtime("resume", cid, check=False)
    assert res.code == 1 and "not paused" in res.err


def test_delete_force_and_kill_of_a_paused_container(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "60")
    a, b = unique_id(), unique_id()
    runtime("run", "-d", "--bundle", bundle.path, a)
    runtime("run", "-d", "--bundle", bundle.path, b)
    runtime("pause", a)
    runtime("pause", b)
    runtime("delete", "--force", a)
    assert a not in runtime.ids()
    res = runtime("delete", b, check=False)
    assert res.code == 1 and "paused" in res.err
    runtime("kill", b, "KILL")
    # SIGKILL is delivered to a frozen task only once it is thawed
    runtime("resume", b)
    wait_for(lambda: runtime.state(b)["status"] == "stopped", what="stop")
    runtime("delete", b)


def test_pause_in_wrong_states(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    res = runtime("pause", cid, check=False)
    assert res.code == 1 and "created" in res.err
    res = runtime("pause", "no-such-id", check=False)
    assert res.code == 1 and "does not exist" in res.err
    runtime("delete", cid)


def test_update_flags_change_host_cgroup_files(runtime: Runtime,
                                               counter: tuple[str, int]) -> None:
    cid, pid = counter
    runtime("update", "--memory", "100m", "--pids-limit", "50", "--cpu-quota", "20000",
            "--cpu-period", "100000", "--cpu-shares", "256", "--cpuset-cpus", "0",
            "--blkio-weight", "300", cid)
    assert read(f"{cg_dir(pid, 'memory')}/memory.limit_in_bytes").strip() == str(100 << 20)
    assert read(f"{cg_dir(pid, 'pids')}/pids.max").strip() == "50"
    cpu = cg_dir(pid, "cpu")
    assert read(f"{cpu}/cpu.cfs_quota_us").strip() == "20000"
    assert read(f"{cpu}/cpu.cfs_period_us").strip() == "100000"
    assert read(f"{cpu}/cpu.shares").strip() == "256"
    assert read(f"{cg_dir(pid, 'cpuset')}/cpuset.cpus").strip() == "0"
    blkio = cg_dir(pid, "blkio")
    weight = next(f for f in ("blkio.weight", "blkio.bfq.weight")
                  if os.path.exists(f"{blkio}/{f}"))
    assert read(f"{blkio}/{weight}").split()[-1] == "300"
    # remembered in the state, so a later update merges with it
    with open(os.path.join(runtime.root, cid, "state.json")) as f:
        res = json.load(f)["config"]["linux"]["resources"]
    assert res["memory"]["limit"] == 100 << 20 and res["pids"]["limit"] == 50
    runtime("update", "--pids-limit", "-1", cid)
    assert read(f"{cg_dir(pid, 'pids')}/pids.max").strip() == "max"


def test_update_from_resources_file(runtime: Runtime, counter: tuple[str, int],
                                    tmp_path: Any) -> None:
    cid, pid = counter
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"memory": {"limit": 80 << 20}, "pids": {"limit": 33},
                                "cpu": {"shares": 300}}))
    runtime("update", "-r", str(path), cid)
    assert read(f"{cg_dir(pid, 'memory')}/memory.limit_in_bytes").strip() == str(80 << 20)
    assert read(f"{cg_dir(pid, 'pids')}/pids.max").strip() == "33"
    assert read(f"{cg_dir(pid, 'cpu')}/cpu.shares").strip() == "300"
    res = runtime("update", "-r", "-", cid, input=json.dumps({"pids": {"limit": 44}}))
    assert res.code == 0
    assert read(f"{cg_dir(pid, 'pids')}/pids.max").strip() == "44"


def test_update_bad_input(runtime: Runtime, counter: tuple[str, int], tmp_path: Any) -> None:
    cid, pid = counter
    before = read(f"{cg_dir(pid, 'memory')}/memory.limit_in_bytes")
    for args, needle in ((["--memory", "lots"], "--memory"),
                         (["--cpu-shares", "-5"], "--cpu-shares"),
                         (["--pids-limit", "x"], "--pids-limit"),
                         (["-r", str(tmp_path / "missing.json")], "missing.json")):
        res = runtime("update", *args, cid, check=False)
        assert res.code == 1 and needle in res.err, (args, res)
    (tmp_path / "bad.json").write_text(json.dumps({"memory": {"limit": "x"}}))
    res = runtime("update", "-r", str(tmp_path / "bad.json"), cid, check=False)
    assert res.code == 1 and "memory.limit" in res.err
    assert read(f"{cg_dir(pid, 'memory')}/memory.limit_in_bytes") == before
    res = runtime("update", "--memory", "1m", "no-such-id", check=False)
    assert res.code == 1 and "does not exist" in res.err


def test_update_stopped_container_is_an_error(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("true")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    wait_for(lambda: runtime.state(cid)["status"] == "stopped", what="stop")
    res = runtime("update", "--memory", "10m", cid, check=False)
    assert res.code == 1 and "not running" in res.err
    runtime("delete", cid)


def test_events_stats(runtime: Runtime, counter: tuple[str, int]) -> None:
    cid, _ = counter
    runtime("update", "--pids-limit", "77", "--memory", "200m", cid)
    ev = json.loads(runtime("events", "--stats", cid).out)
    assert ev["type"] == "stats" and ev["id"] == cid
    data = ev["data"]
    assert data["pids"] == {"current": 1, "limit": 77}
    assert data["memory"]["usage"]["usage"] > 0
    assert data["memory"]["usage"]["limit"] == 200 << 20
    assert data["cpu"]["usage"]["total"] > 0
    assert isinstance(data["blkio"]["ioServiceBytesRecursive"], list)
    assert "hugetlb" in data


def test_events_stream_until_exit(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "0.8")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    res = runtime("events", "--interval", "200ms", cid, timeout=20)
    lines = [json.loads(ln) for ln in res.out.splitlines()]
    assert len(lines) >= 2 and all(e["type"] == "stats" and e["id"] == cid for e in lines)
    res = runtime("events", "--interval", "0s", cid, check=False)
    assert res.code == 1 and "--interval" in res.err
    runtime("delete", cid)


def test_events_report_oom(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["resources"]["memory"] = {"limit": 8 << 20, "swap": 8 << 20}
    bundle.config["mounts"].append({"destination": "/big", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["size=64m"]})
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    events = subprocess.Popen([*runtime.cmd, "--root", runtime.root, "events", "--interval",
                               "10s", cid], stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        runtime("exec", cid, "sh", "-c", "head -c 32m /dev/zero > /big/f", check=False)
        runtime("kill", cid, "KILL")
        out, _ = events.communicate(timeout=15)
    finally:
        if events.poll() is None:
            events.kill()
            events.wait()
    kinds = [json.loads(ln)["type"] for ln in out.splitlines()]
    assert "oom" in kinds, kinds
    runtime("delete", cid)
