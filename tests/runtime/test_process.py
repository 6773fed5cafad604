"""The container process through the real binary: args, env, cwd, user (uid, gid,
additionalGids, umask), rlimits, oomScoreAdj, the five capability sets, noNewPrivileges,
seccomp, a terminal over --console-socket with consoleSize, ioPriority and scheduler."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from typing import Any

import pytest
from rt_helpers import expect_failure, proc_status, read, wait_for

from harness import Bundle, Runtime, unique_id
from isobox.linux import capabilities as caps


def run(runtime: Runtime, bundle: Bundle, *args: str) -> str:
    bundle.set_args(*args)
    return runtime("run", "--bundle", bundle.path, unique_id()).out


def status_of(out: str) -> dict[str, str]:
    result = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        result[k] = v.strip()
    return result


def test_args_env_and_cwd(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["env"] += ["FOO=bar baz", "EMPTY="]
    bundle.config["process"]["cwd"] = "/etc"
    out = run(runtime, bundle, "sh", "-c", 'echo "$FOO|$EMPTY|$0|$1"; pwd', "zero", "one two")
    assert out.splitlines() == ["bar baz||zero|one two", "/etc"]


def test_env_is_exactly_the_config(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["env"] = ["PATH=/bin", "ONLY=1"]
    out = run(runtime, bundle, "env")
    assert sorted(out.split()) == ["HOME=/root", "ONLY=1", "PATH=/bin"]  # + HOME, as runc


def test_missing_executable_and_cwd(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("/no/such/binary")
    res = runtime("run", "--bundle", bundle.path, unique_id(), check=False)
    assert res.code != 0 and "/no/such/binary" in res.err
    bundle.set_args("true")
    bundle.config["process"]["cwd"] = "/no/such/dir"
    bundle.save()
    res = runtime("run", "--bundle", bundle.path, unique_id(), check=False)
    assert res.code != 0 and "/no/such/dir" in res.err
    assert runtime.ids() == []


def test_user_groups_and_umask(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["user"] = {"uid": 1234, "gid": 5678,
                                        "additionalGids": [10, 20], "umask": 0o027}
    bundle.config["root"]["readonly"] = False
    out = run(runtime, bundle, "sh", "-c", "id -u; id -g; id -G; umask; "
              "touch /tmp/f; stat -c '%u %g %a' /tmp/f")
    lines = out.splitlines()
    assert lines[:2] == ["1234", "5678"]
    assert sorted(lines[2].split()) == ["10", "20", "5678"]
    assert lines[3] == "0027"
    assert lines[4] == "1234 5678 640"


def test_rlimits(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 4096},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_NPROC", "soft": 1000, "hard": 2000},
    ]
    out = run(runtime, bundle, "cat", "/proc/self/limits")
    rows = {ln[:26].strip(): ln[26:].split()[:2] for ln in out.splitlines()[1:]}
    assert rows["Max open files"] == ["512", "4096"]
    assert rows["Max core file size"] == ["0", "0"]
    assert rows["Max processes"] == ["1000", "2000"]


def test_rlimit_above_hard_limit_is_an_error(runtime: Runtime, bundle: Bundle) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    bundle.config["process"]["rlimits"] = [
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1}]
    bundle.save()
    cid = unique_id()
    err = expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                         needle="process.rlimits[1]")
    assert "RLIMIT_NOFILE" in err and str(hard) in err


def test_oom_score_adj(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["oomScoreAdj"] = 345
    assert run(runtime, bundle, "cat", "/proc/self/oom_score_adj").strip() == "345"


def test_all_five_capability_sets(runtime: Runtime, bundle: Bundle) -> None:
    proc = bundle.config["process"]
    proc["user"] = {"uid": 1000, "gid": 1000}
    proc["capabilities"] = {
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
        "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN"],
        "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "inheritable": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }
    proc["noNewPrivileges"] = True
    st = status_of(run(runtime, bundle, "cat", "/proc/self/status"))

    def mask(*names: str) -> str:
        return f"{caps.to_mask({caps.number(n) for n in names}):016x}"

    assert st["CapBnd"] == mask("CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW")
    assert st["CapInh"] == mask("CAP_NET_BIND_SERVICE", "CAP_CHOWN")
    assert st["CapAmb"] == mask("CAP_NET_BIND_SERVICE")
    # after execve as non-root: permitted = effective = ambient (+ file caps: none)
    assert st["CapPrm"] == mask("CAP_NET_BIND_SERVICE")
    assert st["CapEff"] == mask("CAP_NET_BIND_SERVICE")
    assert st["NoNewPrivs"] == "1"
    assert st["Uid"].split()[:2] == ["1000", "1000"]


def test_root_capabilities_and_no_new_privileges_off(runtime: Runtime, bundle: Bundle) -> None:
    proc = bundle.config["process"]
    proc["noNewPrivileges"] = False
    proc["capabilities"] = {k: ["CAP_KILL", "CAP_SYS_ADMIN"]
                            for k in ("bounding", "permitted", "effective")}
    st = status_of(run(runtime, bundle, "cat", "/proc/self/status"))
    want = f"{caps.to_mask({caps.number('CAP_KILL'), caps.number('CAP_SYS_ADMIN')}):016x}"
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == want
    assert st["CapInh"] == st["CapAmb"] == "0" * 16
    assert st["NoNewPrivs"] == "0"


@pytest.mark.parametrize("nnp", [True, False])
def test_seccomp(runtime: Runtime, bundle: Bundle, nnp: bool) -> None:
    bundle.config["process"]["noNewPrivileges"] = nnp
    bundle.config["root"]["readonly"] = False
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13}],
    }
    out = run(runtime, bundle, "sh", "-c", "mkdir /tmp/d 2>&1; grep Seccomp: /proc/self/status")
    assert "Permission denied" in out
    assert "Seccomp:\t2" in out


def test_invalid_seccomp_is_rejected(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_BOGUS"}
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle="linux.seccomp.defaultAction")


def _console_server(path: str, got: dict[str, Any]) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(15)

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                got["name"], got["fd"] = msg.decode(), fds[0]
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def _read_all(fd: int, timeout: float = 10) -> str:
    import select

    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def test_terminal_over_console_socket(runtime: Runtime, bundle: Bundle, tmp_path: Any) -> None:
    sock = str(tmp_path / "console.sock")
    got: dict[str, Any] = {}
    t = _console_server(sock, got)
    proc = bundle.config["process"]
    proc["terminal"] = True
    proc["consoleSize"] = {"height": 33, "width": 111}
    bundle.set_args("sh", "-c", "tty; stty size; readlink /proc/self/fd/0; "
                    "ls -l /dev/console | cut -c1")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, "--console-socket", sock, cid)
    t.join(5)
    assert "fd" in got, "no pty master received"
    try:
        runtime("start", cid)
        out = _read_all(got["fd"]).replace("\r", "").split("\n")
    finally:
        os.close(got["fd"])
    assert out[0].startswith("/dev/pts/"), out
    assert out[1] == "33 111"
    assert out[2] == out[0]
    assert out[3] == "c"
    wait_for(lambda: runtime.state(cid)["status"] == "stopped", what="exit")
    runtime("delete", cid)


def test_terminal_without_console_socket_is_an_error(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["terminal"] = True
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("process.terminal", "console-socket"))


def test_io_priority_and_scheduler(runtime: Runtime, bundle: Bundle) -> None:
    proc = bundle.config["process"]
    proc["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 6}
    proc["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    assert subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True,
                          check=True).stdout.strip() == "best-effort: prio 6"
    chrt = subprocess.run(["chrt", "-p", str(pid)], capture_output=True, text=True,
                          check=True).stdout
    assert "SCHED_BATCH" in chrt
    stat = read(f"/proc/{pid}/stat")
    assert stat[stat.rindex(")") + 2:].split()[16] == "7"  # nice
    runtime("delete", "--force", cid)


def test_io_priority_idle_class(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE"}
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    out = subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "idle"
    runtime("delete", "--force", cid)


def test_no_fd_leaks_into_the_container(runtime: Runtime, bundle: Bundle) -> None:
    out = run(runtime, bundle, "ls", "/proc/self/fd")
    assert sorted(out.split()) == ["0", "1", "2", "3"]  # 3: ls's own directory fd


def test_preserve_fds(runtime: Runtime, bundle: Bundle, tmp_path: Any) -> None:
    import shlex

    path = tmp_path / "extra"
    path.write_text("passed through\n")
    bundle.set_args("sh", "-c", "cat /proc/self/fd/3; ls /proc/self/fd | wc -l")
    cmd = [*runtime.cmd, "--root", runtime.root, "run", "--preserve-fds", "1", "--bundle",
           bundle.path, unique_id()]
    proc = subprocess.run(["sh", "-c", f"exec 3<{shlex.quote(str(path))} 4</dev/null; "
                           + shlex.join(cmd)], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "passed through"
    assert lines[1] == "5"  # 0-2, 3 and ls's own: fd 4 was not preserved


def test_status_file_of_a_long_running_init(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    st = proc_status(pid)
    assert st["Name"] == "sleep"
    assert st["NoNewPrivs"] == "1"
    runtime("delete", "--force", cid)


@pytest.mark.parametrize(("sched", "rt", "want"), [
    ({"policy": "SCHED_FIFO", "priority": 10}, True, "SCHED_FIFO"),
    ({"policy": "SCHED_RR", "priority": 5, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}, True,
     "SCHED_RR|SCHED_RESET_ON_FORK"),
    ({"policy": "SCHED_IDLE"}, False, "SCHED_IDLE"),
    ({"policy": "SCHED_DEADLINE", "runtime": 1000000, "deadline": 2000000,
      "period": 2000000}, False, "SCHED_DEADLINE"),
])
def test_scheduler_policies(runtime: Runtime, bundle: Bundle, sched: dict[str, Any],
                            rt: bool, want: str) -> None:
    bundle.config["process"]["scheduler"] = sched
    if rt:  # cgroup v1 RT group scheduling: a new cgroup has no real-time budget
        bundle.config["linux"]["resources"]["cpu"] = {"realtimeRuntime": 10000,
                                                      "realtimePeriod": 1000000}
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    out = subprocess.run(["chrt", "-p", str(pid)], capture_output=True, text=True,
                         check=True).stdout
    assert f"policy: {want}" in out, out
    if "priority" in sched:
        assert f"priority: {sched['priority']}" in out
    runtime("delete", "--force", cid)


def test_realtime_scheduler_without_budget_is_a_clear_error(runtime: Runtime,
                                                            bundle: Bundle) -> None:
    bundle.config["process"]["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10}
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("process.scheduler", "SCHED_FIFO"))


def test_personality(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["personality"] = {"domain": "LINUX32"}
    assert run(runtime, bundle, "uname", "-m").strip() in ("i686", "i386")


def test_errors_after_pivot_root_are_reported_in_debug_mode(runtime: Runtime,
                                                            bundle: Bundle) -> None:
    bundle.set_args("true")
    bundle.config["process"]["cwd"] = "/nonexistent"
    bundle.save()
    res = runtime("run", "--bundle", bundle.path, unique_id(), check=False,
                  global_args=("--debug",))
    assert res.code != 0 and "/nonexistent" in res.err, res


SIGNAL_PROBE = "grep SigIgn /proc/self/status; yes | head -1"


def _run_ignoring_hup(runtime: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    """The runtime started as under `nohup` (SIGHUP ignored); being Python, it ignores SIGPIPE
    and SIGXFSZ too. An ignored signal would stay ignored across execve."""
    import signal

    return subprocess.run([*runtime.cmd, "--root", runtime.root, *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL,
                          preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))


def test_container_processes_start_with_no_ignored_signal(runtime: Runtime,
                                                           bundle: Bundle) -> None:
    """As under runc: the init and an exec'd process get every signal's default action (a
    pipeline's writer dies of SIGPIPE instead of printing "Broken pipe"; a shell can trap
    HUP)."""
    bundle.set_args("sh", "-c", SIGNAL_PROBE)
    p = _run_ignoring_hup(runtime, "run", "--bundle", bundle.path, unique_id())
    assert p.returncode == 0, p
    assert "SigIgn:\t0000000000000000" in p.stdout and "Broken pipe" not in p.stderr, p
    assert p.stdout.splitlines()[-1] == "y"
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    try:
        p = _run_ignoring_hup(runtime, "exec", cid, "sh", "-c", SIGNAL_PROBE)
        assert p.returncode == 0, p
        assert "SigIgn:\t0000000000000000" in p.stdout and "Broken pipe" not in p.stderr, p
    finally:
        runtime("delete", "--force", cid)
