"""Catalogue case 59: the checks of amicontained, deepce and CDK, from inside a container that
``isobox run`` made with its defaults (no flags), as one "am I contained" assertion suite.

The probe (``fixtures/probe.c``) is bind-mounted read-only; everything else is busybox in
the container: the attacker's view of a default container, on the default bridge network.
"""

from __future__ import annotations

import os
import stat
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
for s in /var/run/docker.sock /run/docker.sock /run/isobox.sock /run/podman/podman.sock \
         /run/containerd/containerd.sock; do
  [ -e "$s" ] && echo "$s"
done
section blockdevs; find /dev -type b 2>/dev/null
section fdisk; fdisk -l 2>&1
section pids; echo /proc/[0-9]*  # the shell's own glob: no other process runs meanwhile
section route_localnet
cat /proc/sys/net/ipv4/conf/all/route_localnet /proc/sys/net/ipv4/conf/eth0/route_localnet
section escapes  # each one only tried: nothing is written, nothing outside the container
mkdir -p /tmp/m
/probe mount cgroup /tmp/m cgroup 0 memory
/probe mount none /tmp/m cgroup2 0
/probe mount proc /tmp/m proc 0
/probe mount none /tmp/m tmpfs 0
/probe remount-rw /sys
/probe remount-rw /sys/fs/cgroup
/probe open /dev/kmsg r
if [ -n "$DISK" ]; then  # the host's disk (major:minor): Docker allows mknod, not open
  mknod /tmp/disk b $DISK
  /probe open /tmp/disk r
fi
section writes  # opened for writing only
for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/*/notify_on_release \
         /sys/fs/cgroup/devices/devices.allow /sys/fs/cgroup/*/cgroup.procs \
         /proc/sysrq-trigger /proc/sys/kernel/core_pattern /proc/sys/kernel/modprobe; do
  [ -e "$f" ] && /probe open "$f" w
done
true
"""


def _host_disk(scratch: str) -> str:
    """``MAJOR MINOR`` of the host's first disk (/proc/partitions), if this process can open
    it: "" when it has none or cannot (a host that is itself confined, as these machines
    are, says nothing about the container's devices cgroup)."""
    with open("/proc/partitions") as f:
        rows = [ln.split() for ln in f.read().splitlines()[2:] if ln.strip()]
    if not rows:
        return ""
    node = os.path.join(scratch, "disk")
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(int(rows[0][0]), int(rows[0][1])))
    try:
        os.close(os.open(node, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        return ""
    finally:
        os.unlink(node)
    return f"{rows[0][0]} {rows[0][1]}"


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


def test_case59_probe_suite_in_a_default_container(isobox: Any, probe_binary: str,
                                                   tmp_path: Any) -> None:
    disk = _host_disk(str(tmp_path))
    p = isobox("run", "--rm", "-v", f"{probe_binary}:/probe:ro", "-e", f"DISK={disk}",
               "busybox", "sh", "-c", SCRIPT, timeout=120)
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

    # CDK's escaping exploits (mount-cgroup, mount-procfs, release_agent, rewrite-cgroup-
    # devices, mount-disk, lxcfs-rw, ...): every step refused, for the right reason
    escapes = parse("\n".join(sec["escapes"]))
    mounts = [ln for ln in sec["escapes"] if ln.startswith("/tmp/m ")]
    assert mounts == ["/tmp/m ERR EPERM"] * 4, out  # cgroup, cgroup2, proc, tmpfs
    assert escapes["/sys"] == escapes["/sys/fs/cgroup"] == "EPERM", out
    assert escapes["/dev/kmsg"] in ("ENOENT", "EPERM", "EACCES"), out
    if disk:
        assert escapes["/tmp/disk"] == "EPERM", out  # the devices cgroup
    writes = parse("\n".join(sec["writes"]))
    assert "/proc/sys/kernel/core_pattern" in writes, out
    assert any(path.endswith("/release_agent") or path.endswith("devices.allow")
               for path in writes), out
    assert {path: res for path, res in writes.items() if res not in ("EROFS", "EACCES", "EPERM")
            } == {}, out
