"""Catalogue case 59: the checks of amicontained, deepce and CDK, from inside a container that
``isobox run`` made with its defaults (no flags), as one "am I contained" assertion suite.

The probe (``fixtures/probe.c``) is bind-mounted read-only; everything else is busybox in
the container: the attacker's view of a default container, on the default bridge network.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("sec_helpers")

from sec_helpers import BLOCKED, DOCKER_CAP_MASK, parse, status_fields  # noqa: E402

pytest_plugins = ["sec_helpers"]
pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("host_guard")]

# deepce's dangerous capabilities, as bit numbers (linux/capability.h)
DANGEROUS = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17,
             "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21}
# ...and the two it also flags that Docker grants by default (see docs/engine.md)
ACCEPTED = {"CAP_DAC_OVERRIDE": 1, "CAP_MKNOD": 27}

SCRIPT = r"""
section() { echo "== $1"; }
section status; /probe status
section syscalls; /probe syscalls
section sockets; find / -path /proc -prune -o -path /sys -prune -o -type s -print 2>/dev/null
section blockdevs; find /dev -type b 2>/dev/null
section fdisk; fdisk -l 2>&1
section pids; echo /proc/[0-9]*  # the shell's own glob: no other process runs meanwhile
section route_localnet
cat /proc/sys/net/ipv4/conf/all/route_localnet /proc/sys/net/ipv4/conf/eth0/route_localnet
section escapes
try() {
  name=$1; shift
  if "$@" >/dev/null 2>&1; then echo "$name OK"; else echo "$name REFUSED"; fi
}
mkdir -p /tmp/m
try mount-cgroup mount -t cgroup -o memory cgroup /tmp/m
try mount-cgroup2 mount -t cgroup2 none /tmp/m
try mount-procfs mount -t proc proc /tmp/m
try mount-tmpfs mount -t tmpfs none /tmp/m
try remount-sys-rw mount -o remount,rw /sys
try unpriv-userns unshare -U true
mknod /tmp/sda b 8 0 2>/dev/null  # allowed: Docker's default CAP_MKNOD and devices rule
try read-disk dd if=/tmp/sda of=/dev/null bs=512 count=1
section writes  # each file's own content written back (or only opened): harmless if it works
for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/*/notify_on_release \
         /sys/fs/cgroup/devices/devices.allow /sys/fs/cgroup/unified/cgroup.procs \
         /proc/sysrq-trigger /proc/sys/kernel/core_pattern; do
  [ -e "$f" ] && /probe rewrite "$f"
done
section escapes2
try read-kmsg dd if=/dev/kmsg of=/dev/null bs=8192 count=1
try docker-sock ls /var/run/docker.sock /run/docker.sock /run/isobox.sock /run/podman
"""


def _sections(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("== "):
            current = line[3:]
            found[current] = []
        elif current:
            found[current].append(line)
    return found


def test_case59_probe_suite_in_a_default_container(isobox: Any, probe_binary: str) -> None:
    p = isobox("run", "--rm", "-v", f"{probe_binary}:/probe:ro", "busybox", "sh", "-c", SCRIPT,
               timeout=120)
    sec = _sections(p.stdout)
    out = p.stdout + p.stderr

    # amicontained: seccomp filtering, blocking (at least) case 17's list; capabilities as
    # case 11 (Docker's 14), none of deepce's dangerous ones but Docker's two defaults
    status = status_fields("\n".join(sec["status"]))
    assert status["Seccomp"] == "2", out
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == DOCKER_CAP_MASK, out
    assert status["CapInh"] == status["CapAmb"] == "0000000000000000", out
    eff = int(status["CapEff"], 16)
    assert not [n for n, bit in DANGEROUS.items() if eff >> bit & 1], out
    assert all(eff >> bit & 1 for bit in ACCEPTED.values()), out
    blocked = parse("\n".join(sec["syscalls"]))
    assert [n for n in BLOCKED if blocked.get(n) != "EPERM"] == [], out

    # deepce: no runtime or API socket, no disk to mount, `fdisk -l` shows nothing
    assert sec["sockets"] == [], out
    assert sec["blockdevs"] == [], out
    assert [ln for ln in sec["fdisk"] if ln.strip()] == [], out

    # no host process to ptrace: the shell is PID 1 of its own namespace, and alone in it
    assert sec["pids"] == ["/proc/1"], out

    # CDK: route_localnet (CVE-2020-8558) off in the container's network namespace
    assert sec["route_localnet"] == ["0", "0"], out

    # CDK's escaping exploits: every one refused
    escapes = dict(ln.rsplit(" ", 1) for ln in sec["escapes"] + sec["escapes2"]
                   if ln.strip())
    for name in ("mount-cgroup", "mount-cgroup2", "mount-procfs", "mount-tmpfs",
                 "remount-sys-rw", "unpriv-userns", "read-disk", "read-kmsg", "docker-sock"):
        assert escapes.get(name) == "REFUSED", (name, out)
    writes = parse("\n".join(sec["writes"]))
    assert "/proc/sys/kernel/core_pattern" in writes, out
    assert [path for path, res in writes.items() if res == "OK"] == [], out
