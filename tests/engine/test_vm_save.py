"""System VMs booted from the busybox image (its own init, ~6 s under TCG): `vm save`/`vm
restore` to a file, `vm restart`, published ports and live balloon resize."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_helpers import Isobox

from harness import RUN_PREFIX, wait_for

pytestmark = [pytest.mark.engine, pytest.mark.vm, pytest.mark.slow]
COUNTER = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done'


@pytest.fixture
def vm(isobox: Isobox) -> Iterator[str]:
    name = f"{RUN_PREFIX}sv"
    isobox("vm", "create", name, "--image", "busybox", "--memory", "256m", "--network", "none")
    try:
        yield name
    finally:
        isobox("vm", "rm", "-f", name, check=False)


def _count(isobox: Isobox, name: str) -> int:
    return int(isobox("vm", "exec", name, "cat", "/tmp/count").stdout)


def test_save_restore_resumes_memory_and_reverts_disk(isobox: Isobox, vm: str,
                                                      tmp_path: Path) -> None:
    state = tmp_path / "vm.state"
    isobox("vm", "start", vm, timeout=120)
    isobox("vm", "exec", vm, "sh", "-c", "echo before > /root/disk-file; sync")
    isobox("vm", "exec", "-d", vm, "sh", "-c", COUNTER)
    wait_for(lambda: isobox("vm", "exec", vm, "cat", "/tmp/count", check=False).stdout
             .strip().isdigit(), timeout=60)
    time.sleep(1)
    isobox("vm", "save", vm, str(state), timeout=300)
    assert state.read_bytes()[:18] == b"ISOBOX-VM-STATE 1\n"
    assert os.stat(state).st_mode & 0o777 == 0o600
    assert isobox.record(vm)["status"] == "exited"
    assert "saved (" in isobox("vm", "ls").stdout
    # the VM boots normally meanwhile and changes its disk: restore brings back the saved disk
    isobox("vm", "start", vm, timeout=120)
    assert isobox("vm", "exec", vm, "cat", "/tmp/count", check=False).returncode != 0  # booted
    isobox("vm", "exec", vm, "sh", "-c", "echo after > /root/disk-file; sync")
    p = isobox("vm", "restore", str(state), check=False)
    assert p.returncode != 0 and "stop it first" in p.stderr  # running: refused
    isobox("vm", "stop", "-t", "30", vm, timeout=60)
    isobox("vm", "restore", str(state), timeout=300)
    assert isobox.record(vm)["status"] == "running"
    first = _count(isobox, vm)
    assert first > 3  # the counter loop kept its value: the memory came back, no boot
    wait_for(lambda: _count(isobox, vm) > first, timeout=30)  # and it runs on
    assert isobox("vm", "exec", vm, "cat", "/root/disk-file").stdout == "before\n"
    # restoring the same state again works (the disk goes back to the save point again)
    isobox("vm", "kill", vm)
    wait_for(lambda: isobox.record(vm)["status"] == "exited", timeout=30)
    isobox("vm", "restore", str(state), timeout=300)
    assert isobox("vm", "exec", vm, "cat", "/root/disk-file").stdout == "before\n"


def test_restore_refuses_foreign_stale_and_tampered_files(isobox: Isobox, vm: str,
                                                          tmp_path: Path) -> None:
    p = isobox("vm", "save", vm, str(tmp_path / "x"), check=False)
    assert p.returncode != 0 and "the VM is created" in p.stderr
    assert not (tmp_path / "x").exists()
    isobox("vm", "start", vm, timeout=120)
    first, second = tmp_path / "first.state", tmp_path / "second.state"
    isobox("vm", "save", vm, str(first), timeout=300)
    isobox("vm", "start", vm, timeout=120)
    isobox("vm", "save", vm, str(second), timeout=300)
    assert sorted(os.listdir(tmp_path)) == ["first.state", "second.state"]  # no temp files
    p = isobox("vm", "restore", str(first), check=False)
    assert p.returncode != 0 and "not the latest state saved" in p.stderr, p.stderr
    # a flipped byte in QEMU's stream: refused before QEMU ever reads it
    data = bytearray(second.read_bytes())
    data[-100] ^= 0xFF
    tampered = tmp_path / "tampered.state"
    tampered.write_bytes(bytes(data))
    p = isobox("vm", "restore", str(tampered), check=False)
    assert p.returncode != 0 and "changed since it was written" in p.stderr, p.stderr
    assert isobox.record(vm)["status"] == "exited"
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"not a state\n")
    for path, msg in ((bogus, "not a VM state file"), (tmp_path / "missing", "no such file"),
                      (tmp_path, "is a directory")):
        p = isobox("vm", "restore", str(path), check=False)
        assert p.returncode != 0 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr
    isobox("vm", "resize", vm, "--memory", "192m")  # QEMU could not load it into 192 MiB
    p = isobox("vm", "restore", str(second), check=False)
    assert p.returncode != 0 and "resized since the save" in p.stderr, p.stderr
    isobox("vm", "resize", vm, "--memory", "256m")
    isobox("vm", "restore", str(second), timeout=300)  # the genuine latest one still works
    assert isobox.record(vm)["status"] == "running"
    isobox("vm", "rm", "-f", vm)
    p = isobox("vm", "restore", str(second), check=False)
    assert p.returncode != 0 and "no longer exists" in p.stderr


def test_restart_published_port_and_live_balloon(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}svp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    isobox("vm", "create", name, "--image", "busybox", "--memory", "256m",
           "-p", f"127.0.0.1:{port}:80")
    try:
        isobox("vm", "start", name, timeout=120)
        isobox("vm", "exec", "-d", name, "sh", "-c",
               "mkdir -p /www && hostname > /www/index.html && httpd -f -p 80 -h /www")

        def fetch() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    return str(r.read().decode())
            except OSError:
                return ""

        assert wait_for(fetch, timeout=60).strip()

        def mem_total_kib() -> int:
            return int(isobox("vm", "exec", name, "head", "-1", "/proc/meminfo").stdout.split()[1])

        booted_256 = mem_total_kib()
        # live balloon: the guest gives memory back; the record keeps the new size for next boot
        out = isobox("vm", "resize", name, "--memory", "160m").stdout
        assert "now (balloon)" in out
        wait_for(lambda: json.loads(isobox("vm", "inspect", name).stdout)[0]["BalloonMiB"]
                 == 160, timeout=60)
        ballooned = mem_total_kib()
        assert abs(booted_256 - ballooned - 96 * 1024) < 8 * 1024  # 96 MiB went to the host
        pid_before = isobox.record(name)["pid"]
        isobox("vm", "restart", "-t", "30", name, timeout=180)
        assert isobox.record(name)["pid"] != pid_before
        uptime = float(isobox("vm", "exec", name, "cat", "/proc/uptime").stdout.split()[0])
        assert uptime < 60  # a new boot
        assert abs(mem_total_kib() - ballooned) < 16 * 1024  # booted with 160m this time
        assert fetch() == ""  # the httpd went with the old boot
        isobox("vm", "exec", "-d", name, "sh", "-c",
               "mkdir -p /www && echo again > /www/index.html && httpd -f -p 80 -h /www")
        assert wait_for(fetch, timeout=60) == "again\n"  # the port survived the restart
    finally:
        isobox("vm", "rm", "-f", name, check=False)


def test_console_output_is_logged_with_a_size_cap(isobox: Isobox, vm: str) -> None:
    """A guest writing its serial console without end cannot fill the host's disk: the
    console goes through conmon to the container log, rotated at 1 MiB x 3 files."""
    isobox("vm", "start", vm, timeout=120)
    isobox("vm", "exec", vm, "sh", "-c",
           "head -c 5000000 /dev/zero | tr '\\0' x > /dev/console; echo END-MARK > /dev/console",
           timeout=120)
    wait_for(lambda: "END-MARK" in isobox("logs", "--tail", "5", vm).stdout, timeout=60)
    cid = isobox.record(vm)["id"]
    cdir = Path(isobox.root, "containers", cid)
    logs = sorted(p.name for p in cdir.iterdir() if p.name.startswith("ctr.log"))
    total = sum((cdir / n).stat().st_size for n in logs)
    assert 1 << 20 < total < 4 << 20, (logs, total)  # rotated, bounded
    assert len(logs) <= 3
    assert not (cdir / "console.log").exists()


def test_user_disk_reaches_qemu_by_descriptor(isobox: Isobox, vm: str, tmp_path: Path) -> None:
    """`vm create --disk`: the runtime opens the disk once, checks that very file and hands QEMU
    the descriptor (-add-fd, /dev/fdset): QEMU never opens the path, so the file checked cannot
    be swapped for another before QEMU opens it."""
    import shutil
    import subprocess

    base = next(Path(isobox.root, "vm", "rootfs").glob("*.ext4"))  # the busybox image's root
    disk = tmp_path / "own.raw"
    shutil.copyfile(base, disk)
    name = f"{RUN_PREFIX}svd"
    isobox("vm", "create", name, "--disk", str(disk), "--memory", "256m", "--network", "none")
    try:
        isobox("vm", "start", name, timeout=120)
        assert isobox("vm", "exec", name, "sh", "-c", "echo kept > /root/f; sync; cat /root/f"
                      ).stdout == "kept\n"
        pid = isobox.record(name)["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert any(a.startswith(b"fd=") and b",set=" in a for a in cmdline)
        assert any(b'"filename":"/dev/fdset/' in a for a in cmdline)
        assert not any(str(disk).encode() in a and b"filename" in a for a in cmdline)
        isobox("vm", "stop", "-t", "30", name, timeout=60)
        # the file is the VM's from now on: another file in its place is refused at start
        other = tmp_path / "other.raw"
        shutil.copyfile(disk, other)
        disk.rename(tmp_path / "moved.raw")
        other.rename(disk)
        p = isobox("vm", "start", name, check=False, timeout=120)
        assert p.returncode != 0 and "not the file the VM was created with" in p.stderr, p.stderr
        disk.unlink()
        os.symlink(tmp_path / "moved.raw", disk)  # nor a symlink, wherever it points
        p = isobox("vm", "start", name, check=False, timeout=120)
        assert p.returncode != 0 and "--disk" in p.stderr and "Traceback" not in p.stderr
        disk.unlink()
        (tmp_path / "moved.raw").rename(disk)
    finally:
        isobox("vm", "rm", "-f", name, check=False)
    # the guest's write went to the user's file, which stays after rm
    out = subprocess.run(["debugfs", "-R", "cat /root/f", str(disk)], capture_output=True,
                         text=True, check=False).stdout
    assert out == "kept\n"


def test_exec_user_is_resolved_in_the_guest(isobox: Isobox, vm: str) -> None:
    """`-u NAME` in a VM: the guest's own /etc/passwd and /etc/group, so a user added inside
    the running VM is known (the image's files are not asked)."""
    isobox("vm", "start", vm, timeout=120)
    isobox("vm", "exec", vm, "sh", "-c",
           "echo 'alice:x:1234:1234::/:/bin/sh' >> /etc/passwd && "
           "echo 'team:x:2345:bob,alice' >> /etc/group")
    out = isobox("vm", "exec", "-u", "alice", vm, "id").stdout
    assert "uid=1234(alice)" in out and "2345(team)" in out, out
    assert "uid=55 gid=66" in isobox("vm", "exec", "-u", "55:66", vm, "id").stdout
    out = isobox("vm", "exec", "-u", "alice:team", vm, "id").stdout
    assert "uid=1234(alice) gid=2345(team)" in out, out
    p = isobox("vm", "exec", "-u", "nobody-here", vm, "id", check=False)
    assert p.returncode == 126
    assert "unable to find user nobody-here: no matching entries in passwd file" in p.stderr
    p = isobox("vm", "exec", "-u", "alice:nogroup-here", vm, "id", check=False)
    assert p.returncode == 126 and "unable to find group nogroup-here" in p.stderr
