"""Bad input gets a clear error and leaves nothing behind; a CLI killed at any point of `run`
or `rm` leaves a state the next command understands and `system prune` clears; concurrent
CLIs never corrupt the state."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import time

import pytest
from engine_helpers import Isobox, cgroup_parents, leaks

from harness import unique_id, wait_for

pytestmark = pytest.mark.engine


@pytest.mark.parametrize(("args", "message"), [
    (["--pull", "never", "nosuchimage:1"], "No such image: nosuchimage:1"),
    (["--memory", "lots", "busybox"], "invalid size: 'lots'"),
    (["--cpus", "abc", "busybox"], 'invalid argument "abc" for "--cpus"'),
    (["--restart", "sometimes", "busybox"], "invalid restart policy"),
    (["-v", "/nonexistent/isobox-src:/data", "busybox"],
     "bind source path does not exist: /nonexistent/isobox-src"),
    (["--name", "bad name!", "busybox"], "Invalid container name (bad name!)"),
    (["--rm", "--restart", "always", "busybox"], "Conflicting options: --restart and --rm"),
    (["--ulimit", "nofile=30000:30000", "busybox"], "above the host's hard limit"),
    (["--network", "nosuchnet", "busybox"], "nosuchnet"),
    (["-p", "99999:80", "busybox"], "invalid"),
    (["--dns", "notanip", "busybox"], "--dns: notanip is not an ip address"),
    (["--hostname", "h" * 65, "busybox"], "--hostname: invalid hostname"),
    (["--cpuset-cpus", "1-0", "busybox"], "invalid value 1-0 for cpuset cpus"),
    (["--pids-limit", "99999999999999999999", "busybox"], "--pids-limit"),
    (["--memory", "99999999999999999999999", "busybox"], "value out of range"),
    (["--cpus=", "busybox"], 'invalid argument "" for "--cpus"'),
])
def test_bad_input_is_an_error_that_makes_nothing(isobox: Isobox, args: list[str],
                                                  message: str) -> None:
    p = isobox("run", "-d", *args, "true", check=False)
    assert p.returncode == 125, p.stderr
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert isobox.ids() == []
    assert leaks(isobox.root) == []


@pytest.mark.parametrize(("command", "code", "message"), [
    (["nosuchcmd"], 127, 'exec: "nosuchcmd": executable file not found in $PATH'),
    (["/nonexistent/cmd"], 127, "no such file or directory"),
    (["/etc"], 126, 'exec: "/etc": permission denied'),
    (["/etc/passwd"], 126, "permission denied"),
])
@pytest.mark.parametrize("detach", [False, True])
def test_a_command_that_cannot_run_exits_126_or_127(isobox: Isobox, command: list[str],
                                                    code: int, message: str,
                                                    detach: bool) -> None:
    """As the docker CLI: 127 for a command not found, 126 for one that cannot be run."""
    p = isobox("run", "--rm", *(["-d"] if detach else []), "--network", "none", "busybox",
               *command, check=False)
    assert (p.returncode, message in p.stderr) == (code, True), p.stderr
    assert isobox.ids() == [] and leaks(isobox.root) == []


def test_an_exec_that_cannot_run_exits_126_or_127(isobox: Isobox) -> None:
    """As podman's and docker's exec: 127 not found, 126 not executable; with -d the
    reason is said too (its stderr goes nowhere)."""
    isobox("run", "-d", "--name", "execs", "--network", "none", "busybox", "sleep", "300")
    for args, code, message in (
            (["nosuchcmd"], 127, 'exec: "nosuchcmd": executable file not found in $PATH'),
            (["/etc"], 126, 'exec: "/etc": permission denied'),
            (["-w", "/nonexistent", "pwd"], 127, "No such file or directory")):
        for detach in ([], ["-d"]):
            cmd = [a for a in args if a.startswith("-") or a == "/nonexistent"]
            rest = args[len(cmd):]
            p = isobox("exec", *detach, *cmd, "execs", *rest, check=False)
            assert (p.returncode, message in p.stderr) == (code, True), (args, detach, p)
            assert "Traceback" not in p.stderr
    assert isobox("exec", "-d", "execs", "true").returncode == 0
    persist = os.path.join(isobox.run_dir(), "persist", isobox.record("execs")["id"])
    assert not [n for n in os.listdir(persist) if n.startswith("exec-")]
    isobox("rm", "-f", "execs")


def test_force_removal_of_what_is_not_there_is_no_error(isobox: Isobox) -> None:
    """docker rm -f / rmi -f: a missing object is skipped silently (exit 0)."""
    isobox("create", "--name", "present", "--network", "none", "busybox")
    p = isobox("rm", "-f", "nosuch-ctr", "present", "nosuch-2", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (0, "present\n", "")
    assert isobox.ids() == []
    p = isobox("rm", "nosuch-ctr", check=False)
    assert p.returncode == 1 and "No such container: nosuch-ctr" in p.stderr
    assert isobox("rmi", "-f", "nosuch-image:1", check=False).returncode == 0
    p = isobox("rmi", "nosuch-image:1", check=False)
    assert p.returncode == 1 and "nosuch-image:1" in p.stderr


def test_inspect_prints_what_it_found_and_fails_for_the_rest(isobox: Isobox) -> None:
    vol = unique_id("iv")
    isobox("volume", "create", vol)
    try:
        for kind, name in (("volume", vol), ("network", "bridge")):
            p = isobox(kind, "inspect", name, "nosuch-x", check=False)
            assert p.returncode == 1 and "nosuch-x" in p.stderr, p.stderr
            assert [d["Name"] for d in json.loads(p.stdout)] == [name]
    finally:
        isobox("volume", "rm", vol)


def test_a_network_has_one_subnet(isobox: Isobox) -> None:
    name = unique_id("two")
    p = isobox("network", "create", "--subnet", "10.241.0.0/24", "--subnet", "10.242.0.0/24",
               name, check=False)
    assert p.returncode == 125 and "a network has one subnet here" in p.stderr
    assert name not in isobox("network", "ls").stdout


def test_start_after_a_cli_killed_with_the_namespace_made(isobox: Isobox) -> None:
    """A start killed after it made the network namespace, before recording it: the next
    start releases that namespace and works (was: 'network namespace ...: file exists'
    at every start until the container was removed)."""
    from isobox.network.netns import create_netns

    isobox("create", "--name", "halfway", "busybox", "sleep", "300")
    cid = isobox.record("halfway")["id"]
    create_netns(os.path.join(isobox.run_dir(), "netns", cid))  # what the killed CLI left
    isobox("start", "halfway")
    assert isobox.record("halfway")["status"] == "running"
    isobox("rm", "-f", "halfway")
    assert not os.path.lexists(os.path.join(isobox.run_dir(), "netns", cid))


def test_kill_with_a_bad_signal_names_its_flag(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "target", "--network", "none", "busybox", "sleep", "300")
    p = isobox("kill", "-s", "SIGFOO", "target", check=False)
    assert p.returncode == 1 and "--signal: invalid signal: SIGFOO" in p.stderr, p.stderr
    assert isobox.record("target")["status"] == "running"
    isobox("rm", "-f", "target")


def test_name_in_use(isobox: Isobox) -> None:
    isobox("create", "--name", "taken", "--network", "none", "busybox")
    p = isobox("create", "--name", "taken", "--network", "none", "busybox", check=False)
    assert p.returncode == 125
    assert 'The container name "/taken" is already in use by container' in p.stderr
    assert len(isobox.ids()) == 1


def test_port_already_bound_leaves_no_network_debris(isobox: Isobox) -> None:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        p = isobox("run", "-d", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "30",
                   check=False)
    finally:
        holder.close()
    assert p.returncode == 125
    assert f"Bind for 127.0.0.1:{port} failed: port is already allocated" in p.stderr
    assert isobox.ids() == []
    assert leaks(isobox.root) == []


def test_kill_minus_nine_of_run_at_any_point(isobox: Isobox) -> None:
    for delay in (0.05, 0.12, 0.2, 0.3, 0.45):
        proc = isobox.popen("run", "--network", "none", "busybox", "sleep", "5",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # the next command sees a consistent world
        isobox("ps", "-a")
    isobox("system", "prune", "-f")
    remaining = isobox("ps", "-a", "--format", "json").stdout.splitlines()
    # whatever survived is a real container (created/running/exited), never half-made
    assert all(json.loads(r)["State"] == "running" for r in remaining), remaining
    isobox("rm", "-f", *isobox.ids()) if isobox.ids() else None


def test_kill_minus_nine_of_rm(isobox: Isobox) -> None:
    for delay in (0.02, 0.06, 0.1):
        isobox("run", "-d", "--name", "victim", "--network", "none", "busybox", "sleep", "30")
        proc = isobox.popen("rm", "-f", "victim", stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        isobox("ps", "-a")
        isobox("rm", "-f", "victim", check=False)
        assert isobox.ids() == []


def test_twenty_parallel_runs(isobox: Isobox) -> None:
    def one(i: int) -> str:
        return isobox("run", "-d", "--name", f"par{i}", "--network", "none", "busybox",
                      "sleep", "30").stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(one, range(20)))
    assert len(set(ids)) == 20
    out = isobox("ps", "--format", "json").stdout.splitlines()
    assert len(out) == 20 and all(json.loads(line)["State"] == "running" for line in out)
    isobox("rm", "-f", *ids)


HALF_STARTED = """
import os, sys
from isobox.engine.engine import Engine
from isobox.engine.monitor import MonitorRequest, exit_hook_command, spawn_monitor
e = Engine(sys.argv[1])
row = e.get(sys.argv[2])
lay = e.layout
rt = e.runtime(row)
e.snapshots.mount(e.snapshots.get(row.id))
persist = lay.persist_dir(row.id)
pid, _ = spawn_monitor(MonitorRequest(
    cid=row.id, name=row.name, runtime=rt.path, runtime_args=rt.global_args,
    bundle=lay.container_dir(row.id), pidfile=lay.pidfile(row.id),
    conmon_pidfile=lay.conmon_pidfile(row.id), log_path=lay.log_path(row.id),
    exit_dir=lay.exits_dir, persist_dir=persist,
    exit_command=exit_hook_command(lay.root, lay.run_dir, row.id,
                                   os.path.join(persist, "attached"))))
print(pid)
os._exit(0)  # as a CLI killed between "monitor started" and "record says running"
"""


def test_rm_when_the_runtime_binary_is_gone(isobox: Isobox, tmp_path: object) -> None:
    """A container created with `--runtime PATH` whose binary was deleted since: `rm` of the
    never-started container removes it (its runtime holds no state of it); a running one is an
    error that names the binary and leaves the container as it was."""
    import shutil
    import sys

    runtime = os.path.join(str(tmp_path), "my-runtime")
    shutil.copy(os.path.join(os.path.dirname(sys.executable), "isobox-runtime"), runtime)
    created = isobox("create", "--runtime", runtime, "--network", "none", "busybox",
                     "true").stdout.strip()
    running = isobox("run", "-d", "--runtime", runtime, "--network", "none", "busybox",
                     "sleep", "30").stdout.strip()
    os.rename(runtime, runtime + ".away")
    isobox("rm", created)
    assert created not in isobox.ids()
    p = isobox("rm", "-f", running, check=False)
    assert p.returncode != 0 and f"runtime {runtime!r}: not an executable file" in p.stderr, \
        p.stderr
    assert "Traceback" not in p.stderr
    assert isobox.record(running)["status"] == "running"
    os.rename(runtime + ".away", runtime)
    isobox("rm", "-f", running)
    # one that exits while its runtime is gone: the exit is recorded, and it can be removed
    short = isobox("run", "-d", "--runtime", runtime, "--network", "none", "busybox",
                   "sleep", "1").stdout.strip()
    os.rename(runtime, runtime + ".away")
    wait_for(lambda: isobox.record(short)["status"] == "exited", timeout=15,
             what="the exit recorded without the runtime")
    state_root = os.path.join(isobox.run_dir(), "runtime")
    assert not os.path.exists(os.path.join(state_root, short))
    isobox("rm", short)
    assert isobox.ids() == []
    assert leaks(isobox.root) == []
    assert cgroup_parents(isobox.root) == []  # the parent its runtime made went too


def test_rm_of_a_half_started_container_kills_its_init(isobox: Isobox) -> None:
    """The monitor created the container (its init waits on exec.fifo) but the record still
    says created: `rm -f` must kill that init and the monitor, not orphan them."""
    import sys

    cid = isobox("create", "--network", "none", "busybox", "sleep", "30").stdout.strip()
    out = subprocess.run([sys.executable, "-c", HALF_STARTED, isobox.root, cid],
                         env=isobox.env, capture_output=True, text=True, check=True)
    init_pid = int(out.stdout.strip())
    assert os.path.exists(f"/proc/{init_pid}")
    assert isobox.record(cid)["status"] == "created"
    isobox("rm", "-f", cid)

    def gone() -> bool:
        try:
            with open(f"/proc/{init_pid}/stat") as f:
                return f.read().split()[2] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, timeout=5, what="the half-started init to die")
    assert leaks(isobox.root) == []
