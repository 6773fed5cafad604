"""Resource limits hold: memory (OOM kill, host unharmed), pids (fork bomb contained),
CPU (--cpus 0.5 caps usage near half a core)."""

from __future__ import annotations

import time

import pytest
from engine_helpers import Isobox

pytestmark = pytest.mark.engine


def test_memory_limit_oom_kills_the_container_only(isobox: Isobox) -> None:
    p = isobox("run", "--name", "hog", "--memory", "32m", "--memory-swap", "32m",
               "--network", "none", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=256M",
               "count=1", check=False)
    assert p.returncode == 137, (p.stdout, p.stderr)
    assert isobox.record("hog")["oom_killed"] == 1
    assert isobox("inspect", "-f", "{{.State.OOMKilled}}", "hog").stdout.strip() == "true"
    # the host is unharmed: another container runs normally right after
    assert isobox("run", "--rm", "--network", "none", "busybox", "echo", "fine").stdout \
        == "fine\n"
    isobox("rm", "hog")


def test_pids_limit_contains_a_fork_bomb(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "bomb", "--pids-limit", "32", "--network", "none",
           "busybox", "sh", "-c",
           "(for i in $(seq 200); do sleep 30 & done) 2>/dev/null; exec sleep 300")
    time.sleep(1.5)
    rec = isobox.record("bomb")
    with open(f"/proc/{rec['pid']}/cgroup") as f:
        pids_cg = next(line.split(":", 2)[2].strip() for line in f if ":pids:" in line)
    with open(f"/sys/fs/cgroup/pids{pids_cg}/pids.max") as f:
        assert f.read().strip() == "32"
    with open(f"/sys/fs/cgroup/pids{pids_cg}/pids.current") as f:
        assert 20 <= int(f.read()) <= 32  # the bomb ran into the limit, and no further
    isobox("rm", "-f", "bomb")


def test_cpus_half_a_core(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "spin", "--cpus", "0.5", "--network", "none", "busybox",
           "sh", "-c", "while :; do :; done")
    rec = isobox.record("spin")
    with open(f"/proc/{rec['pid']}/cgroup") as f:
        cg = next(line.split(":", 2)[2].strip() for line in f
                  if ":cpuacct" in line or ":cpu," in line)
    usage = f"/sys/fs/cgroup/cpuacct{cg}/cpuacct.usage"

    def read() -> int:
        with open(usage) as f:
            return int(f.read())

    time.sleep(0.5)
    u0, t0 = read(), time.monotonic()
    time.sleep(3)
    u1, t1 = read(), time.monotonic()
    share = (u1 - u0) / 1e9 / (t1 - t0)
    assert 0.35 <= share <= 0.6, share
    isobox("rm", "-f", "spin")


def test_device_permissions_are_enforced(isobox: Isobox) -> None:
    """`--device SRC:DST:r` gives read access only (the runtime must not widen it to rwm).
    /dev/loop-control is not one of the devices every container gets; it accepts an open for
    reading or writing but no write(2) (EINVAL), so EPERM can only come from the cgroup."""
    script = ("dd if=/dev/lc of=/dev/null count=0 2>/dev/null && echo read-ok; "
              "echo x > /dev/lc")
    ro = isobox("run", "--rm", "--network", "none", "--device",
                "/dev/loop-control:/dev/lc:r", "busybox", "sh", "-c", script, check=False)
    assert "read-ok" in ro.stdout
    assert "Operation not permitted" in ro.stderr, ro.stderr
    rw = isobox("run", "--rm", "--network", "none", "--device", "/dev/loop-control:/dev/lc",
                "busybox", "sh", "-c", script, check=False)
    assert "read-ok" in rw.stdout
    assert "Operation not permitted" not in rw.stderr, rw.stderr
