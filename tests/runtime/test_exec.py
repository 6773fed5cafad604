"""``exec`` through the real binary: -e, --cwd, -u, -p process.json, --cap, exit codes,
-d with --pid-file, -t with a console socket, namespaces and cgroups joined, ps."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from rt_helpers import read, wait_for

from harness import Bundle, Runtime, unique_id
from isobox.linux import capabilities as caps


@pytest.fixture
def running(runtime: Runtime, bundle: Bundle) -> Iterator[tuple[str, int]]:
    bundle.set_args("sleep", "60")
    bundle.config["process"]["env"].append("FROM_CONFIG=yes")
    bundle.save()
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    yield cid, runtime.state(cid)["pid"]
    runtime("delete", "--force", cid, check=False)


def test_exec_env_cwd_user_and_exit_code(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, _ = running
    res = runtime("exec", "-e", "A=1", "--env", "FROM_CONFIG=over", "--cwd", "/etc",
                  "-u", "1000:1001", cid, "sh", "-c",
                  'echo "$A $FROM_CONFIG $(pwd) $(id -u) $(id -g)"; exit 3', check=False)
    assert res.code == 3, res
    assert res.out.strip() == "1 over /etc 1000 1001"
    res = runtime("exec", cid, "sh", "-c", 'echo "$FROM_CONFIG"; echo $$')
    assert res.out.split()[0] == "yes"
    assert int(res.out.split()[1]) > 1  # a new process in the container's pid namespace


def test_exec_joins_namespaces_and_cgroups(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, pid = running
    names = ("pid", "net", "ipc", "uts", "mnt")
    res = runtime("exec", cid, "sh", "-c", "for n in " + " ".join(names)
                  + "; do readlink /proc/self/ns/$n; done; cat /proc/self/cgroup")
    lines = res.out.splitlines()
    for n, line in zip(names, lines, strict=False):
        assert line == os.readlink(f"/proc/{pid}/ns/{n}"), n
    host = sorted(read(f"/proc/{pid}/cgroup").splitlines())
    assert sorted(lines[len(names):]) == host


def test_exec_killed_by_signal_exit_code(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, _ = running
    res = runtime("exec", cid, "sh", "-c", "kill -9 $$", check=False)
    assert res.code == 137


def test_exec_process_json(runtime: Runtime, running: tuple[str, int], tmp_path: Any) -> None:
    cid, _ = running
    proc = {"args": ["sh", "-c", "echo $P; pwd; id -u; cat /proc/self/oom_score_adj; "
                     "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"],
            "env": ["PATH=/bin", "P=from-json"], "cwd": "/tmp", "user": {"uid": 0, "gid": 0},
            "oomScoreAdj": 200, "noNewPrivileges": True,
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                             "permitted": ["CAP_KILL"]}}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(proc))
    out = runtime("exec", "-p", str(path), cid).out.split()
    assert out[:4] == ["from-json", "/tmp", "0", "200"]
    assert out[5] == f"{caps.to_mask({caps.number('CAP_KILL')}):016x}"
    assert out[7] == "1"


def test_exec_process_json_invalid(runtime: Runtime, running: tuple[str, int],
                                   tmp_path: Any) -> None:
    cid, _ = running
    path = tmp_path / "process.json"
    path.write_text(json.dumps({"args": ["true"], "cwd": "relative", "user": {"uid": 0,
                                                                             "gid": 0}}))
    res = runtime("exec", "-p", str(path), cid, check=False)
    assert res.code == 1 and "process.cwd" in res.err
    path.write_text("{not json")
    res = runtime("exec", "-p", str(path), cid, check=False)
    assert res.code == 1 and str(path) in res.err
    path.write_text(json.dumps({"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                                "rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}))
    res = runtime("exec", "-p", str(path), cid, check=False)
    assert res.code == 1 and "process.rlimits[0].type" in res.err


def test_exec_cap_flag(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, _ = running
    out = runtime("exec", "--cap", "CAP_SYS_ADMIN", cid, "grep", "CapEff",
                  "/proc/self/status").out
    eff = int(out.split()[1], 16)
    assert eff & (1 << caps.number("CAP_SYS_ADMIN"))
    res = runtime("exec", "--cap", "CAP_BOGUS", cid, "true", check=False)
    assert res.code == 1 and "CAP_BOGUS" in res.err


def test_exec_detached_with_pid_file_and_ps(runtime: Runtime, running: tuple[str, int],
                                            tmp_path: Any) -> None:
    cid, pid = running
    pid_file = str(tmp_path / "exec.pid")
    runtime("exec", "-d", "--pid-file", pid_file, cid, "sleep", "50")
    epid = int(read(pid_file))
    assert os.path.exists(f"/proc/{epid}")
    assert read(f"/proc/{epid}/cmdline").split("\0")[:2] == ["sleep", "50"]
    pids = json.loads(runtime("ps", "--format", "json", cid).out)
    assert sorted(pids) == sorted([pid, epid])
    table = runtime("ps", cid).out.splitlines()
    assert "PID" in table[0] and len(table) == 3
    os.kill(epid, 9)
    wait_for(lambda: epid not in json.loads(runtime("ps", "--format", "json", cid).out),
             what="exec'd process gone")


def test_exec_missing_binary_and_bad_cwd(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, _ = running
    res = runtime("exec", cid, "/no/such/bin", check=False)
    assert res.code != 0 and "/no/such/bin" in res.err
    res = runtime("exec", "--cwd", "/no/such/dir", cid, "true", check=False)
    assert res.code != 0 and "/no/such/dir" in res.err
    res = runtime("exec", "-u", "abc", cid, "true", check=False)
    assert res.code == 1 and "--user" in res.err


def test_exec_in_wrong_states(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    assert runtime("exec", cid, "echo", "in-created").out == "in-created\n"  # as runc
    runtime("start", cid)
    runtime("pause", cid)
    res = runtime("exec", cid, "true", check=False)
    assert res.code == 1 and "paused" in res.err
    runtime("resume", cid)
    runtime("kill", cid, "KILL")
    wait_for(lambda: runtime.state(cid)["status"] == "stopped", what="stop")
    res = runtime("exec", cid, "true", check=False)
    assert res.code == 1 and "stopped" in res.err
    res = runtime("exec", "no-such-container", "true", check=False)
    assert res.code == 1 and "does not exist" in res.err
    runtime("delete", cid)


def test_exec_tty(runtime: Runtime, running: tuple[str, int], tmp_path: Any) -> None:
    from test_process import _console_server, _read_all

    cid, _ = running
    sock = str(tmp_path / "exec.sock")
    got: dict[str, Any] = {}
    t = _console_server(sock, got)
    runtime("exec", "-d", "-t", "--console-socket", sock, cid, "sh", "-c", "tty; sleep 0.2")
    t.join(5)
    assert "fd" in got
    try:
        out = _read_all(got["fd"], 5).replace("\r", "")
    finally:
        os.close(got["fd"])
    assert out.startswith("/dev/pts/"), out
    res = runtime("exec", "-t", cid, "true", check=False)
    assert res.code == 1 and "console-socket" in res.err
