"""containerd (with containerd-shim-runc-v2) drives isobox-runtime through ``ctr``.

The test starts its own containerd (config, root, state, opt dir and sockets in one
temporary directory), imports a busybox image written as an OCI archive by
:func:`peer_helpers.write_oci_archive`, and runs containers with
``ctr run --runc-binary $(command -v isobox-runtime) --runc-root DIR``, in a namespace of its
own (so their cgroups are ``/<namespace>/<id>``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
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
    write_oci_archive,
)

from harness import RUN_PREFIX, unique_id

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(any(shutil.which(b) is None for b in
                           ("containerd", "ctr", "containerd-shim-runc-v2")),
                       reason="containerd, ctr and containerd-shim-runc-v2 are not installed"),
]

IMAGE = f"docker.io/library/{RUN_PREFIX}-busybox:latest"
NAMESPACE = RUN_PREFIX
# containerd-shim-runc-v2 1.6 puts its sockets in /run/containerd/s, whatever the config says
SHIM_SOCKETS = "/run/containerd/s"
CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = "{base}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""


class Containerd:
    def __init__(self, base: str) -> None:
        self.base = base
        self.address = f"{base}/containerd.sock"
        self.runtime = runtime_binary()
        self.runc_root = f"{base}/runc"
        self.fifo_dir = f"{base}/fifo"
        self.proc: subprocess.Popen[bytes] | None = None
        self.made: list[str] = [d for d in (SHIM_SOCKETS, os.path.dirname(SHIM_SOCKETS))
                                if not os.path.exists(d)]

    def start(self) -> None:
        config = os.path.join(self.base, "config.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(base=self.base))
        self.log = open(os.path.join(self.base, "containerd.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["containerd", "--config", config], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            return os.path.exists(self.address) and self.ctr("version", check=False
                                                             ).returncode == 0
        wait_for(ready, timeout=20, what="containerd to serve")

    def logs(self) -> str:
        with open(os.path.join(self.base, "containerd.log"), errors="replace") as f:
            return f.read()[-4000:]

    def ctr(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(["ctr", "--address", self.address, "--namespace", NAMESPACE, *args],
                   check=check, timeout=timeout, input=input)

    def run_args(self, *args: str) -> list[str]:
        """``ctr run`` with isobox-runtime as the shim's runc, then ``args``."""
        return ["run", "--runc-binary", self.runtime, "--runc-root", self.runc_root,
                "--fifo-dir", self.fifo_dir, *args]

    def task_status(self, cid: str) -> str:
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields[0] == cid:
                return fields[2]
        return ""

    def stop(self) -> None:
        problems: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            for line in self.ctr("task", "ls", "-q", check=False).stdout.split():
                self.ctr("task", "kill", "-s", "KILL", line, check=False)
                self.ctr("task", "rm", "-f", line, check=False)
            for line in self.ctr("container", "ls", "-q", check=False).stdout.split():
                problems.append(f"container left: {line}")
                self.ctr("container", "rm", line, check=False)
            self.ctr("images", "rm", IMAGE, check=False)
            self.ctr("namespaces", "rm", NAMESPACE, check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        # shims (their command line has -address <our socket>) exit just after the task rm
        deadline = time.monotonic() + 10
        while (procs := processes_mentioning(self.base)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procs:
            problems.append(f"processes left: {procs}")
            kill_processes(procs)
        for d in cgroup_dirs(f"/{NAMESPACE}"):
            leaked = remove_cgroup_tree(d)
            if leaked:
                problems.append(f"cgroups left: {leaked}")
        leftover_state = os.listdir(os.path.join(self.runc_root, NAMESPACE)) if os.path.isdir(
            os.path.join(self.runc_root, NAMESPACE)) else []
        if leftover_state:
            problems.append(f"runtime state left: {leftover_state}")
        mounts = mounts_under(self.base)
        if mounts:
            problems.append(f"mounts left: {mounts}")
            unmount_all(mounts)
        shutil.rmtree(self.base, ignore_errors=True)
        for d in self.made:  # made by the shims for this test: remove if empty
            try:
                os.rmdir(d)
            except OSError:
                pass
        assert not problems, "; ".join(problems)


@pytest.fixture(scope="module")
def containerd(busybox_rootfs: str) -> Iterator[Containerd]:
    ctd = Containerd(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-ctd-"))
    try:
        ctd.start()
        archive = os.path.join(ctd.base, "image.tar")
        write_oci_archive(busybox_rootfs, archive, IMAGE)
        ctd.ctr("images", "import", archive)
        os.unlink(archive)
        yield ctd
    finally:
        ctd.stop()


def test_run_rm_output_and_exit_code(containerd: Containerd) -> None:
    res = containerd.ctr(*containerd.run_args("--rm", IMAGE, unique_id("ctd"), "sh", "-c",
                                              "echo hello-ctd; echo err >&2; exit 5"),
                         check=False)
    assert res.returncode == 5, res
    assert res.stdout == "hello-ctd\n" and "err" in res.stderr
    res = containerd.ctr(*containerd.run_args("--rm", IMAGE, unique_id("ctd"), "sh", "-c",
                                              "read x; echo got:$x"), input="abc\n")
    assert res.stdout == "got:abc\n"
    assert containerd.ctr("container", "ls", "-q").stdout == ""


def test_detached_exec_ps_pause_kill_rm(containerd: Containerd) -> None:
    cid = unique_id("ctd")
    script = 'trap "exit 3" TERM; while :; do sleep 0.1; done'
    containerd.ctr(*containerd.run_args("-d", IMAGE, cid, "sh", "-c", script))
    assert containerd.task_status(cid) == "RUNNING"
    res = containerd.ctr("task", "exec", "--exec-id", "e1", "--fifo-dir", containerd.fifo_dir,
                         cid, "sh", "-c", "echo from-exec; exit 4", check=False)
    assert (res.returncode, res.stdout) == (4, "from-exec\n"), res
    pids = [ln.split()[0] for ln in containerd.ctr("task", "ps", cid).stdout.splitlines()[1:]]
    assert len(pids) >= 2 and all(p.isdigit() for p in pids)  # sh and its sleep

    containerd.ctr("task", "pause", cid)
    assert containerd.task_status(cid) == "PAUSED"
    containerd.ctr("task", "resume", cid)
    assert containerd.task_status(cid) == "RUNNING"

    containerd.ctr("task", "kill", cid)  # TERM
    wait_for(lambda: containerd.task_status(cid) == "STOPPED", what="the task to stop")
    res = containerd.ctr("task", "kill", cid, check=False)  # the shim: already finished
    assert res.returncode != 0 and "not found" in res.stderr, res
    res = containerd.ctr("task", "rm", cid)
    containerd.ctr("container", "rm", cid)
    assert containerd.task_status(cid) == ""
    assert not os.path.exists(os.path.join(containerd.runc_root, NAMESPACE, cid))


def test_kill_all_and_memory_limit(containerd: Containerd) -> None:
    cid = unique_id("ctd")
    containerd.ctr(*containerd.run_args("-d", "--memory-limit", str(40 << 20), IMAGE, cid,
                                        "sh", "-c", "sleep 1000 & sleep 1000"))
    memory = cgroup_dirs(f"/{NAMESPACE}/{cid}")
    limit_files = [os.path.join(d, f) for d in memory
                   for f in ("memory.limit_in_bytes", "memory.max")
                   if d.split("/")[4] in ("memory", "unified") and os.path.exists(
                       os.path.join(d, f))]
    values = set()
    for path in limit_files:
        with open(path) as f:
            values.add(f.read().strip())
    assert str(40 << 20) in values, (limit_files, values)
    containerd.ctr("task", "kill", "--all", "-s", "KILL", cid)
    wait_for(lambda: containerd.task_status(cid) == "STOPPED", what="the task to stop")
    containerd.ctr("task", "rm", cid)
    containerd.ctr("container", "rm", cid)
    assert cgroup_dirs(f"/{NAMESPACE}/{cid}") == []


def test_terminal(containerd: Containerd) -> None:
    argv = ["ctr", "--address", containerd.address, "--namespace", NAMESPACE,
            *containerd.run_args("--rm", "-t", IMAGE, unique_id("ctd"), "sh")]
    code, out = run_in_pty(argv, [("# ", "tty; stty size; echo $((6*7))\n"),
                                  ("42", "exit 3\n")], rows=33, cols=101)
    assert code == 3, out
    assert "/dev/pts/0" in out and "33 101" in out


# ctr sets an exec'd process's terminal size only once it runs (runc alike): wait for it
WAIT_FOR_SIZE = ('i=0; while [ $i -lt 100 ]; do s=$(stty size 2>/dev/null); '
                 '[ -n "$s" ] && [ "$s" != "0 0" ] && break; sleep 0.05; i=$((i+1)); done; ')


def test_exec_terminal(containerd: Containerd) -> None:
    cid = unique_id("ctd")
    containerd.ctr(*containerd.run_args("-d", IMAGE, cid, "sleep", "1000"))
    try:
        argv = ["ctr", "--address", containerd.address, "--namespace", NAMESPACE, "task",
                "exec", "-t", "--exec-id", "t1", "--fifo-dir", containerd.fifo_dir, cid,
                "sh", "-c", WAIT_FOR_SIZE + 'tty; echo "size $s"; exit 6']
        code, out = run_in_pty(argv, rows=21, cols=72)
        assert code == 6, out
        assert "/dev/pts/" in out and "size 21 72" in out
    finally:
        containerd.ctr("task", "kill", "-s", "KILL", cid, check=False)
        wait_for(lambda: containerd.task_status(cid) in ("STOPPED", ""),
                 what="the task to stop")
        containerd.ctr("task", "rm", cid, check=False)
        containerd.ctr("container", "rm", cid)


def test_create_error_reaches_ctr(containerd: Containerd) -> None:
    cid = unique_id("ctd")
    start = time.monotonic()
    res = containerd.ctr(*containerd.run_args("--rm", IMAGE, cid, "/nonexistent"),
                         check=False)
    assert res.returncode != 0
    assert 'exec: "/nonexistent"' in res.stderr and "no such file or directory" in res.stderr
    assert time.monotonic() - start < 20
    containerd.ctr("container", "rm", cid, check=False)
    assert containerd.ctr("container", "ls", "-q").stdout == ""
