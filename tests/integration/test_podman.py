"""podman (with conmon) drives isobox-runtime: ``podman --runtime $(command -v isobox-runtime)``.

Everything podman keeps lives in one temporary directory (storage, run root, tmpdir with the
exit files and events, network config); containers get a per-run cgroup parent; the
runtime keeps its state in its default root, as it would for a real podman (podman's
``container cleanup``, which conmon runs when a container exits, passes no runtime flags).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator

import pytest
from peer_helpers import (
    cgroup_dirs,
    kill_processes,
    mounts_under,
    processes_mentioning,
    remove_cgroup_tree,
    run,
    run_in_pty,
    runtime_binary,
    unmount_all,
    wait_for,
)

from harness import RUN_PREFIX, unique_id

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("conmon") is None,
                       reason="podman and conmon are not installed"),
]

IMAGE = f"localhost/{RUN_PREFIX}-busybox:latest"
RUNTIME_ROOT = "/run/isobox-runtime"  # the runtime's default --root
# The host's hard RLIMIT_NOFILE/NPROC are below podman's defaults, and raising a hard limit
# needs CAP_SYS_RESOURCE, which this environment lacks.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


class Podman:
    def __init__(self, base: str) -> None:
        self.base = base
        self.runtime = runtime_binary()
        self.cgroup_parent = f"/{RUN_PREFIX}-podman"
        driver = "overlay" if _fs_supported("overlay") else "vfs"
        for d in ("root", "runroot", "tmp", "net"):
            os.makedirs(os.path.join(base, d))
        conf = os.path.join(base, "containers.conf")
        with open(conf, "w") as f:
            # conmon then passes --log FILE --log-format json; podman reads errors from FILE
            f.write('[engine]\nruntime_supports_json = ["isobox-runtime"]\n')
        storage_conf = os.path.join(base, "storage.conf")
        with open(storage_conf, "w") as f:
            f.write(f'[storage]\ndriver = "{driver}"\ngraphroot = "{base}/root"\n'
                    f'runroot = "{base}/runroot"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": conf,
                    "CONTAINERS_STORAGE_CONF": storage_conf}
        # The cni backend with --network none creates nothing; netavark would make
        # /run/containers/networks on the host.
        self.cmd = ["podman", "--root", f"{base}/root", "--runroot", f"{base}/runroot",
                    "--tmpdir", f"{base}/tmp", "--network-config-dir", f"{base}/net",
                    "--network-backend", "cni", "--storage-driver", driver,
                    "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([*self.cmd, *args], check=check, timeout=timeout, env=self.env,
                   input=input)

    def run_args(self, *args: str) -> list[str]:
        """``podman run`` with isobox-runtime and this host's necessities, then ``args``."""
        return ["run", "--runtime", self.runtime, "--pull", "never", "--network", "none",
                "--cgroup-parent", self.cgroup_parent, *ULIMITS, *args]

    def inspect(self, name: str) -> dict[str, object]:
        state: dict[str, object] = json.loads(
            self("inspect", "--format", "{{json .State}}", name).stdout)
        return state

    def import_image(self, rootfs: str) -> None:
        tar = os.path.join(self.base, "rootfs.tar")
        with tarfile.open(tar, "w") as tf:
            for entry in sorted(os.listdir(rootfs)):
                tf.add(os.path.join(rootfs, entry), arcname=entry)
        # podman 4.3 keeps containers/image's blob-info cache in /var/lib/containers/cache
        # whatever --root says: import in a private mount namespace with /var/lib on tmpfs.
        # (-n: libmount would otherwise create /run/mount for its utab)
        script = 'mount -n -t tmpfs -o size=16m isobox-test /var/lib && exec "$@"'
        run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             *self.cmd, "import", "--quiet", tar, IMAGE], env=self.env)
        os.unlink(tar)

    def cleanup(self) -> None:
        problems: list[str] = []
        ids = self("ps", "-aq", "--no-trunc", check=False).stdout.split()
        self("rm", "-af", "-t", "0", check=False)
        self("rmi", "-af", check=False)
        deadline = time.monotonic() + 10  # conmon exits just after its container
        while (procs := processes_mentioning(self.base)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procs:
            problems.append(f"processes left: {procs}")
            kill_processes(procs)
        for cid in ids:
            if os.path.exists(os.path.join(RUNTIME_ROOT, cid)):
                problems.append(f"runtime state left: {RUNTIME_ROOT}/{cid}")
                run([self.runtime, "delete", "--force", cid], check=False)
        for d in cgroup_dirs(self.cgroup_parent):
            # conmon's cgroup (<parent>/conmon) is podman's; a container's is a leak
            leaked = [s for s in remove_cgroup_tree(d) if not s.endswith("/conmon")]
            if leaked:
                problems.append(f"cgroups left: {leaked}")
        mounts = mounts_under(self.base)
        if mounts:
            problems.append(f"mounts left: {mounts}")
            unmount_all(mounts)
        shutil.rmtree(self.base, ignore_errors=True)
        assert not problems, "; ".join(problems)


def _fs_supported(name: str) -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == name for line in f if line.strip())


@pytest.fixture(scope="module")
def podman(busybox_rootfs: str) -> Iterator[Podman]:
    pm = Podman(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-podman-"))
    try:
        pm.import_image(busybox_rootfs)
        yield pm
    finally:
        pm.cleanup()


def runtime_state(cid: str) -> subprocess.CompletedProcess[str]:
    return run([runtime_binary(), "state", cid], check=False)


def test_run_rm_output_exit_code_and_stdin(podman: Podman) -> None:
    res = podman(*podman.run_args("--rm", IMAGE, "sh", "-c",
                                  "echo hello from $(hostname); echo oops >&2; exit 7"),
                 check=False)
    assert res.returncode == 7, res
    assert "hello from" in res.stdout and "oops" in res.stderr
    res = podman(*podman.run_args("--rm", "-i", IMAGE, "sh", "-c", "read x; echo got:$x"),
                 input="abc\n")
    assert res.stdout.strip() == "got:abc"


def test_detached_exec_logs_pause_stop_rm(podman: Podman) -> None:
    name = unique_id("pod")
    script = 'echo started; trap "echo stopping; exit 0" TERM; while :; do sleep 0.1; done'
    cid = podman(*podman.run_args("-d", "--name", name, IMAGE, "sh", "-c", script)
                 ).stdout.strip()
    wait_for(lambda: "started" in podman("logs", name).stdout, what="container output")
    state = podman.inspect(name)
    assert state["Status"] == "running"
    rt = json.loads(runtime_state(cid).stdout)  # the runtime agrees
    assert rt["status"] == "running" and rt["pid"] == state["Pid"]

    res = podman("exec", name, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 3",
                 check=False)
    assert (res.returncode, res.stdout, res.stderr.strip()) == (3, "exec-out\n", "exec-err")
    res = podman("exec", "-i", name, "sh", "-c", "read x; echo exec-got:$x", input="xyz\n")
    assert res.stdout == "exec-got:xyz\n"
    res = podman("exec", "--user", "65534:65534", "--workdir", "/tmp", "-e", "FOO=bar", name,
                 "sh", "-c", "id -u; id -g; pwd; echo $FOO")
    assert res.stdout.split() == ["65534", "65534", "/tmp", "bar"]

    podman("pause", name)
    assert podman.inspect(name)["Status"] == "paused"
    assert json.loads(runtime_state(cid).stdout)["status"] == "paused"
    podman("unpause", name)
    assert podman.inspect(name)["Status"] == "running"

    start = time.monotonic()
    podman("stop", "-t", "10", name)
    assert time.monotonic() - start < 5  # TERM was delivered, no escalation needed
    state = podman.inspect(name)
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    assert podman("logs", name).stdout == "started\nstopping\n"
    podman("rm", name)
    assert podman("ps", "-aq", "--filter", f"name={name}").stdout == ""
    res = runtime_state(cid)
    assert res.returncode == 1 and "does not exist" in res.stderr


def test_stop_escalates_to_kill(podman: Podman) -> None:
    name = unique_id("pod")
    # PID 1 with no handler ignores TERM: podman must fall back to KILL
    podman(*podman.run_args("-d", "--name", name, IMAGE, "sleep", "1000"))
    start = time.monotonic()
    podman("stop", "-t", "1", name)
    assert 0.9 < time.monotonic() - start < 10
    state = podman.inspect(name)
    assert (state["Status"], state["ExitCode"]) == ("exited", 137)
    podman("rm", name)


def test_interactive_terminal(podman: Podman) -> None:
    code, out = run_in_pty(
        [*podman.cmd, *podman.run_args("--rm", "-it", IMAGE, "sh")],
        [("# ", "tty; stty size; echo $((6*7))\n"), ("42", "exit 3\n")],
        rows=33, cols=101, env=podman.env)
    assert code == 3, out
    assert "/dev/pts/0" in out and "33 101" in out


def test_exec_terminal(podman: Podman) -> None:
    name = unique_id("pod")
    podman(*podman.run_args("-d", "--name", name, IMAGE, "sleep", "1000"))
    try:
        code, out = run_in_pty([*podman.cmd, "exec", "-it", name, "sh", "-c",
                                "tty; stty size; exit 4"], rows=20, cols=70, env=podman.env)
        assert code == 4, out
        assert "/dev/pts/" in out and "20 70" in out
    finally:
        podman("rm", "-f", "-t", "0", name)


def _host_cgroup_file(pid: int, controller: str, v1_file: str, v2_file: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [ln.rstrip("\n").split(":", 2) for ln in f]
    for _, ctls, path in lines:
        if controller in ctls.split(","):
            with open(f"/sys/fs/cgroup/{controller}{path}/{v1_file}") as g:
                return g.read().strip()
    path = next(p for h, _, p in lines if h == "0")
    with open(f"/sys/fs/cgroup{path}/{v2_file}") as g:
        return g.read().strip()


def test_memory_and_pids_limits(podman: Podman) -> None:
    inside = ("for f in memory/memory.limit_in_bytes memory.max pids/pids.max pids.max; do "
              "[ -f /sys/fs/cgroup/$f ] && cat /sys/fs/cgroup/$f; done; true")
    res = podman(*podman.run_args("--rm", "--memory", "64m", "--pids-limit", "42", IMAGE,
                                  "sh", "-c", inside))
    assert res.stdout.split() == [str(64 << 20), "42"]

    name = unique_id("pod")
    podman(*podman.run_args("-d", "--name", name, "--memory", "48m", "--pids-limit", "7",
                            IMAGE, "sleep", "1000"))
    try:
        pid = int(podman.inspect(name)["Pid"])  # type: ignore[call-overload]
        assert _host_cgroup_file(pid, "memory", "memory.limit_in_bytes",
                                 "memory.max") == str(48 << 20)
        assert _host_cgroup_file(pid, "pids", "pids.max", "pids.max") == "7"
        res = podman("exec", name, "sh", "-c",
                     "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait", check=False)
        assert "can't fork" in res.stderr, res  # the limit is enforced, not just written
    finally:
        podman("rm", "-f", "-t", "0", name)


def test_runtime_errors_reach_podman(podman: Podman) -> None:
    res = podman(*podman.run_args("--rm", IMAGE, "/nonexistent"), check=False)
    assert res.returncode == 127, res
    assert "/nonexistent" in res.stderr and "no such file or directory" in res.stderr
    res = podman(*podman.run_args("--rm", IMAGE, "/etc/passwd"), check=False)
    assert res.returncode == 126, res
    assert "permission denied" in res.stderr
    name = unique_id("pod")
    podman(*podman.run_args("-d", "--name", name, IMAGE, "sleep", "1000"))
    try:
        for cmd, code, text in (("nonexistent", 127, "executable file not found in $PATH"),
                                ("/etc/passwd", 126, "permission denied")):
            res = podman("exec", name, cmd, check=False)
            assert res.returncode == code and text in res.stderr, res
    finally:
        podman("rm", "-f", "-t", "0", name)
