"""Log rotation that keeps ``max-file`` generations: the library preloaded into conmon
(engine/logrot_shim.c), readers that take a consistent snapshot of the generations, ``-f``
across several rotations between two polls, and the whole chain with the real conmon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from engine_helpers import Isobox

from harness import RUN_PREFIX, busybox_bundle, leftover_cgroups, unique_id
from isobox.engine.logrotate import FILES_VAR, PATH_VAR, monitor_env, shim_path
from isobox.engine.logs import follow_logs, open_generations, read_logs
from isobox.engine.monitor import MonitorRequest, spawn_monitor

T0 = 1_800_000_000
needs_cc = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")),
                              reason="needs a C compiler")


def rec(n: int, stream: str = "stdout") -> bytes:
    return f"2027-01-15T08:00:{n % 60:02d}.{n:09d}+00:00 {stream} F n{n}\n".encode()


def numbers(records: object) -> list[int]:
    return [int(r.data[1:]) for r in records]  # type: ignore[attr-defined]


def file_numbers(path: Path) -> list[int]:
    """The line numbers in this one file (not its generations)."""
    return [int(line.rsplit(b" n", 1)[1]) for line in path.read_bytes().splitlines()]


class FakeConmon:
    """conmon's rotation (write, then open <log>.tmp and rename it over <log>) done by a
    Python child with the library preloaded: the rename goes through the real wrapper."""

    SCRIPT = r"""
import os, sys
log, count, per_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
for n in range(count):
    if n and n % per_file == 0:
        os.close(fd)
        fd = os.open(log + ".tmp", os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
        os.rename(log + ".tmp", log)
    os.write(fd, ("2027-01-15T08:00:%02d.%09d+00:00 stdout F n%d\n" % (n % 60, n, n)).encode())
    if os.environ.get("SLOW"):
        import time; time.sleep(0.002)
print(os.environ.get("LD_PRELOAD", "") + "|" + os.environ.get("ISOBOX_LOGROT_PATH", ""))
"""

    @staticmethod
    def run(log: Path, max_file: int, count: int, per_file: int, slow: bool = False,
            ) -> str:
        env = {"PATH": os.environ["PATH"], "LD_PRELOAD": shim_path(), PATH_VAR: str(log),
               FILES_VAR: str(max_file), **({"SLOW": "1"} if slow else {})}
        out = subprocess.run([sys.executable, "-I", "-c", FakeConmon.SCRIPT, str(log),
                              str(count), str(per_file)], env=env, check=True,
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip()


# -- the library --------------------------------------------------------------------------

@needs_cc
@pytest.mark.parametrize("max_file", [2, 3, 5])
def test_shim_shifts_generations(tmp_path: Path, max_file: int) -> None:
    log = tmp_path / "ctr.log"
    env_seen = FakeConmon.run(log, max_file, count=100, per_file=10)
    assert env_seen == "|"                  # removed from the environment once loaded
    names = sorted(os.listdir(tmp_path))
    assert names == ["ctr.log"] + [f"ctr.log.{k}" for k in range(1, max_file)]
    for k in range(max_file):               # <log>.k holds the k-th newest ten
        name = tmp_path / ("ctr.log" if k == 0 else f"ctr.log.{k}")
        first = 90 - 10 * k
        assert file_numbers(name) == list(range(first, first + 10))
    assert numbers(read_logs(str(log))) == list(range(100 - 10 * max_file, 100))
    assert shim_path() == shim_path()       # built once, then reused


@needs_cc
def test_shim_leaves_other_renames_alone(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    other = tmp_path / "other"
    script = ("import os,sys; open(sys.argv[1]+'.tmp','w').close(); "
              "os.rename(sys.argv[1]+'.tmp', sys.argv[1]+'.moved')")
    log.write_bytes(rec(1))
    env = {"LD_PRELOAD": shim_path(), PATH_VAR: str(log), FILES_VAR: "3"}
    subprocess.run([sys.executable, "-I", "-c", script, str(log)], env=env, check=True)
    subprocess.run([sys.executable, "-I", "-c", script, str(other)], env=env, check=True)
    assert sorted(os.listdir(tmp_path)) == ["ctr.log", "ctr.log.moved", "other.moved"]


def test_monitor_env() -> None:
    assert monitor_env("/x/ctr.log", 0, 3) == {}
    assert monitor_env("/x/ctr.log", 4096, 1) == {}


# -- readers ------------------------------------------------------------------------------

@needs_cc
def test_reads_stay_consistent_while_rotating(tmp_path: Path) -> None:
    """Every read during rotations is a gap-free run of lines: a snapshot never mixes the
    names of before and after a shift."""
    log = tmp_path / "ctr.log"
    done = threading.Event()
    failures: list[list[int]] = []

    def reader() -> None:
        while not done.is_set():
            got = numbers(read_logs(str(log)))
            if got and got != list(range(got[0], got[0] + len(got))):
                failures.append(got)

    t = threading.Thread(target=reader)
    t.start()
    try:
        FakeConmon.run(log, 4, count=3000, per_file=7)
    finally:
        done.set()
        t.join()
    assert not failures, failures[0]
    assert numbers(read_logs(str(log)))[-1] == 2999


@needs_cc
def test_follow_misses_nothing_across_several_rotations_per_poll(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    done = threading.Event()
    got: list[int] = []

    def follower() -> None:
        for r in follow_logs(str(log), stop=done.is_set, poll=0.25):
            got.append(int(r.data[1:]))

    t = threading.Thread(target=follower)
    t.start()
    try:
        # ~2 ms a line, 8 lines a file: about 15 rotations between two polls, and the
        # follower still holds a file that max-file 40 keeps
        FakeConmon.run(log, 40, count=400, per_file=8, slow=True)
    finally:
        done.set()
        t.join(timeout=20)
    assert got == list(range(400))


# -- the real conmon ----------------------------------------------------------------------

@needs_cc
@pytest.mark.skipif(not (shutil.which("conmon") and shutil.which("runc")),
                    reason="needs conmon and runc")
def test_real_conmon_keeps_max_file_generations(busybox_rootfs: str, tmp_path: Path) -> None:
    """conmon 2.1.6 + the library: 4k files, 3 kept; the container writes ~5 times that.
    A follower started before the writes sees every line; `logs` returns the newest lines
    in order with nothing twice."""
    cid = unique_id("lrot")
    short = f"/tmp/{RUN_PREFIX}-{cid[-6:]}"          # conmon's socket paths must stay short
    os.makedirs(f"{short}/exits")
    bundle = str(tmp_path / "bundle")
    os.makedirs(bundle)
    script = ("sleep 0.3; i=0; while [ $i -lt 600 ]; do "
              "echo out-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; "
              "[ $((i % 50)) = 0 ] && echo err-$i >&2; "
              "[ $((i % 20)) = 0 ] && usleep 20000; i=$((i+1)); done; printf end")
    busybox_bundle.make_bundle(bundle, ["sh", "-c", script], rootfs_from=busybox_rootfs)
    with open(os.path.join(bundle, "config.json")) as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["linux"]["cgroupsPath"] = f"/{cid}"
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f)
    log = tmp_path / "ctr.log"
    done = threading.Event()
    followed: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

    def follower() -> None:
        for r in follow_logs(str(log), stop=done.is_set, poll=0.02):
            followed[r.stream].append(r.data)

    follow = threading.Thread(target=follower)
    follow.start()
    runc = ["runc", f"--root={short}/runc"]
    shim_pss = 0
    try:
        pid, conmon_pid = spawn_monitor(MonitorRequest(
            cid=cid, name=cid, runtime=shutil.which("runc") or "runc",
            runtime_args=[f"--root={short}/runc"], bundle=bundle, pidfile=f"{bundle}/pid",
            conmon_pidfile=f"{short}/conmon.pid", log_path=str(log),
            exit_dir=f"{short}/exits", persist_dir=f"{short}/persist", exit_command=[],
            log_size_max=4096, log_max_file=3))
        # the library is in conmon (/proc/<pid>/environ shows its environment as it was at
        # exec, before the library removed the variables), and the container never sees it
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
        assert b"LD_PRELOAD" not in environ and b"ISOBOX_LOGROT" not in environ
        shim_pss = mapping_pss(conmon_pid, os.path.basename(shim_path()))
        assert 0 < shim_pss <= 64
        subprocess.run([*runc, "start", cid], check=True, timeout=20)
        deadline = time.monotonic() + 30
        exit_file = f"{short}/exits/{cid}"
        while not os.path.exists(exit_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(exit_file) as f:
            assert f.read() == "0"
        while os.path.exists(f"/proc/{conmon_pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        done.set()
        follow.join(timeout=20)
        subprocess.run([*runc, "delete", "--force", cid], check=False, timeout=20,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(short, ignore_errors=True)
    assert not [c for c in leftover_cgroups() if cid in c]
    out = [f"out-{i}-{'x' * 32}\n".encode() for i in range(600)] + [b"end"]
    err = [f"err-{i}\n".encode() for i in range(0, 600, 50)]
    # every line, across ~10 rotations (the two pipes' relative order is not defined)
    assert followed == {"stdout": out, "stderr": err}
    assert sorted(os.listdir(tmp_path)) == ["bundle", "ctr.log", "ctr.log.1", "ctr.log.2"]
    sizes = [os.path.getsize(tmp_path / n) for n in ("ctr.log.2", "ctr.log.1")]
    assert all(4096 - 100 < s <= 4096 for s in sizes), sizes  # full, never over max-size
    assert os.path.getsize(log) <= 4096
    kept = list(read_logs(str(log)))
    kept_out = [r.data for r in kept if r.stream == "stdout"]
    kept_err = [r.data for r in kept if r.stream == "stderr"]
    assert kept_out == out[-len(kept_out):]        # the newest, in order, none twice
    assert kept_err == err[-len(kept_err):]
    assert len(kept) > 2 * 4000 // 90              # about two full files and the live one
    assert [r.data for r in read_logs(str(log), stderr=False, tail=5)] == out[-5:]
    files = open_generations(str(log))
    assert len(files) == 3
    for f in files:
        f.close()


def mapping_pss(pid: int, name: str) -> int:
    """KiB of PSS of the mappings of ``name`` in process ``pid``."""
    total = 0
    current = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:
                current = line.rstrip().endswith(name)
            elif current and head[0] == "Pss:":
                total += int(head[1])
    return total


# -- through the CLI ----------------------------------------------------------------------

@pytest.mark.engine
def test_cli_rotation_keeps_generations_and_follows(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "rot", "--log-opt", "max-size=4k", "--log-opt",
           "max-file=3", "--network", "none", "busybox", "sh", "-c",
           "sleep 1; i=0; while [ $i -lt 500 ]; do echo line-$i-yyyyyyyyyyyyyyyyyyyy; "
           "[ $((i % 25)) = 0 ] && usleep 20000; i=$((i+1)); done")
    follow = isobox.popen("logs", "-f", "rot", stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
    out, _ = follow.communicate(timeout=30)
    want = [f"line-{i}-{'y' * 20}" for i in range(500)]
    assert out.decode().splitlines() == want       # started before the writes: all of it
    cdir = os.path.join(isobox.root, "containers", isobox.record("rot")["id"])
    logs = sorted(n for n in os.listdir(cdir) if n.startswith("ctr.log"))
    assert logs == ["ctr.log", "ctr.log.1", "ctr.log.2"]
    assert all(os.path.getsize(os.path.join(cdir, n)) <= 4096 for n in logs)
    kept = isobox("logs", "rot").stdout.splitlines()
    assert len(kept) > 100 and kept == want[-len(kept):]
    assert isobox("logs", "--tail", "3", "rot").stdout.splitlines() == want[-3:]
    isobox("rm", "rot")


@pytest.mark.engine
def test_cli_restart_starts_a_new_generation(isobox: Isobox) -> None:
    isobox("run", "--name", "again", "--log-opt", "max-size=4k", "--log-opt", "max-file=3",
           "--network", "none", "busybox", "sh", "-c", "echo run-$(cat /proc/uptime)")
    cdir = os.path.join(isobox.root, "containers", isobox.record("again")["id"])
    for runs in (2, 3, 4):
        isobox("start", "-a", "again")
        logs = sorted(n for n in os.listdir(cdir) if n.startswith("ctr.log"))
        assert logs == ["ctr.log", "ctr.log.1", "ctr.log.2"][:min(runs, 3)]
        lines = isobox("logs", "again").stdout.splitlines()
        assert len(lines) == min(runs, 3) and len(set(lines)) == len(lines)
        assert all(x.startswith("run-") for x in lines)
    isobox("rm", "again")


@pytest.mark.engine
@pytest.mark.parametrize(("opt", "message"), [
    ("max-size=10q", "invalid max-size '10q'"),
    ("max-file=two", "invalid max-file 'two'"),
    ("mode=fast", "unknown log opt 'mode'"),
])
def test_cli_bad_log_opt(isobox: Isobox, opt: str, message: str) -> None:
    extra = ["--log-opt", "max-size=1k"] if opt.startswith("max-file") else []
    p = isobox("run", "-d", "--name", "badlog", *extra, "--log-opt", opt, "busybox", "true",
               check=False)
    assert p.returncode == 125 and message in p.stderr
    assert "Traceback" not in p.stderr
    assert isobox.ids() == []
