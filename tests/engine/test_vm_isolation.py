"""`isobox run --isolation vm`: OCI images as QEMU micro-VMs through the engine (TCG here).

Each VM boots a real kernel under software emulation (about 3-5 s), so the group is marked
`vm` and `slow`; it still runs in `make test`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import pytest
from engine_helpers import Isobox

from harness import RUN_PREFIX, wait_for

pytestmark = [pytest.mark.engine, pytest.mark.vm, pytest.mark.slow]

VM = ("--isolation", "vm")


@pytest.fixture(autouse=True)
def _needs_qemu() -> None:
    if not os.path.exists("/usr/bin/qemu-system-x86_64"):
        pytest.fail("qemu-system-x86 is not installed (make deps installs it)")


def test_run_rm_streams_exit_code_and_own_kernel(isobox: Isobox) -> None:
    p = isobox("run", "--rm", *VM, "--network", "none", "busybox", "sh", "-c",
               "echo out; echo err >&2; uname -r; exit 3", check=False)
    assert p.returncode == 3, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "out"
    assert p.stderr == "err\n"
    assert lines[1] != platform.release()  # the guest's kernel, not the host's
    assert lines[1].endswith("-amd64")
    assert isobox.ids() == []


def test_stdin_reaches_the_guest_and_ends(isobox: Isobox) -> None:
    p = isobox("run", "--rm", "-i", *VM, "--network", "none", "busybox", "tr", "a-z", "A-Z",
               input_=b"hello vm\n")
    assert p.stdout == "HELLO VM\n"


def test_detached_vm_ps_exec_logs_stop(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}vm1"
    cid = isobox("run", "-d", "--name", name, *VM, "--network", "none", "--memory", "256m",
                 "busybox", "sh", "-c",
                 'echo started; trap "echo bye; exit 5" TERM; while :; do sleep 0.2; done'
                 ).stdout.strip()
    ps = [json.loads(line) for line in isobox("ps", "--format", "json").stdout.splitlines()]
    mine = next(r for r in ps if r["Names"] == name)
    assert mine["Isolation"] == "vm" and mine["State"] == "running"
    assert "ISOLATION" in isobox("ps").stdout.splitlines()[0]
    wait_for(lambda: "started" in isobox("logs", name).stdout, timeout=30)
    ex = isobox("exec", name, "sh", "-c", "cat /proc/meminfo | head -1; exit 4", check=False)
    assert ex.returncode == 4
    total_kib = int(ex.stdout.split()[1])
    assert 150_000 < total_kib <= 256 * 1024  # the guest has its --memory, not the host's
    assert isobox("exec", name, "hostname").stdout.strip() == cid[:12]
    info = json.loads(isobox("inspect", name).stdout)[0]
    assert info["HostConfig"]["Isolation"] == "vm"
    vm = info["VM"]  # guest size, QEMU's cgroup limit and its measured overhead
    assert vm["GuestMemory"] == 256 << 20 and vm["VCPUs"] == 1
    assert vm["MemoryLimit"] == vm["GuestMemory"] + vm["OverheadAllowance"]
    assert 0 < vm["GuestRamResident"] <= vm["GuestMemory"]
    assert 0 < vm["MeasuredOverhead"] < vm["OverheadAllowance"]
    assert vm["QemuPss"] >= vm["MeasuredOverhead"] and vm["QemuUid"] != 0
    isobox("pause", name)  # QMP stop: the vCPUs halt
    assert isobox.record(name)["status"] == "paused"
    isobox("unpause", name)
    assert isobox("exec", name, "echo", "back").stdout == "back\n"
    t0 = time.monotonic()
    isobox("stop", "-t", "20", name)
    assert time.monotonic() - t0 < 15  # the workload's TERM trap ran, no timeout kill
    rec = isobox.record(name)
    assert rec["status"] == "exited" and rec["exit_code"] == 5
    assert "bye" in isobox("logs", name).stdout
    isobox("rm", name)


def test_kill_ends_the_vm(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}vmk"
    isobox("run", "-d", "--name", name, *VM, "--network", "none", "busybox", "sleep", "600")
    isobox("kill", name)
    wait_for(lambda: isobox.record(name)["status"] == "exited", timeout=20)
    assert isobox.record(name)["exit_code"] == 137
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    assert isobox.run_dir() not in out
    isobox("rm", name)


def _cgroup_limit(pid: int, controller: str, v1_file: str, v2_file: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path(f"/sys/fs/cgroup/{controller}{path}/{v1_file}").read_text().strip()
    path = next(ln.split(":", 2)[2] for ln in Path(f"/proc/{pid}/cgroup").read_text()
                .splitlines() if ln.startswith("0::"))
    return Path(f"/sys/fs/cgroup{path}/{v2_file}").read_text().strip()


def test_qemu_runs_unprivileged_chrooted_and_limited(isobox: Isobox) -> None:
    """SECURITY.md case 54: uid != 0, no capabilities, no_new_privs, seccomp, an empty chroot,
    its own cgroup with memory and pids limits; a second VM gets another uid."""
    names = [f"{RUN_PREFIX}vmu1", f"{RUN_PREFIX}vmu2"]
    try:
        cids = [isobox("run", "-d", "--name", n, *VM, "--network", "none", "--memory", "128m",
                       "busybox", "sleep", "600").stdout.strip() for n in names]
        uids = []
        for cid in cids:
            state = json.loads(Path(isobox.run_dir(), "vm", cid, "state.json").read_text())
            pid = int(state["pid"])
            status = dict(line.split(":\t", 1) for line in
                          Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
            uid = int(status["Uid"].split()[0])
            assert uid != 0 and status["Uid"].split() == [str(uid)] * 4
            assert status["CapEff"] == status["CapPrm"] == "0000000000000000"
            assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
            root = os.readlink(f"/proc/{pid}/root")
            assert root.startswith(isobox.run_dir()) and os.listdir(root) == []
            memory = int(_cgroup_limit(pid, "memory", "memory.limit_in_bytes", "memory.max"))
            assert 128 << 20 < memory < 1 << 30  # guest + QEMU's overhead, not unlimited
            assert _cgroup_limit(pid, "pids", "pids.max", "pids.max") != "max"
            uids.append(uid)
        assert uids[0] != uids[1]
        assert isobox("exec", names[0], "echo", "ok").stdout == "ok\n"
    finally:
        isobox("rm", "-f", *names, check=False)


def test_vm_and_container_reach_each_other_by_name(isobox: Isobox) -> None:
    net = f"{RUN_PREFIX}vmnet"
    isobox("network", "create", net)
    try:
        vm = f"{RUN_PREFIX}vmweb"
        ctr = f"{RUN_PREFIX}ctrweb"
        isobox("run", "-d", "--name", vm, *VM, "--network", net, "busybox", "sh", "-c",
               "mkdir -p /www && echo from-vm > /www/index.html && httpd -f -p 8080 -h /www")
        isobox("run", "-d", "--name", ctr, "--network", net, "busybox", "sh", "-c",
               "mkdir -p /www && echo from-ctr > /www/index.html && httpd -f -p 8080 -h /www")
        got = {}

        def fetched() -> bool:
            p = isobox("exec", ctr, "wget", "-q", "-O", "-",
                       f"http://{vm}:8080/", check=False)
            got["ctr->vm"] = p.stdout
            return p.returncode == 0

        wait_for(fetched, timeout=60)
        assert got["ctr->vm"] == "from-vm\n"
        p = isobox("exec", vm, "wget", "-q", "-O", "-", f"http://{ctr}:8080/")
        assert p.stdout == "from-ctr\n"
    finally:
        isobox("rm", "-f", f"{RUN_PREFIX}vmweb", f"{RUN_PREFIX}ctrweb", check=False)
        isobox("network", "rm", net, check=False)


def test_published_port_reaches_the_vm(isobox: Isobox) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"{RUN_PREFIX}vmpub"
    isobox("run", "-d", "--name", name, *VM, "-p", f"127.0.0.1:{port}:80", "busybox", "sh",
           "-c", "mkdir -p /www && echo published > /www/index.html && httpd -f -p 80 -h /www")
    body = {}

    def served() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                body["text"] = r.read().decode()
            return True
        except OSError:
            return False

    wait_for(served, timeout=60)
    assert body["text"] == "published\n"
    isobox("rm", "-f", name)


@pytest.mark.parametrize("flags, field", [
    (("-v", "/etc/hostname:/mnt/h"), "--volume"),
    (("--tmpfs", "/scratch"), "--tmpfs"),
    (("--network", "host"), "--network host"),
    (("--privileged",), "--privileged"),
    (("--kernel", "/nonexistent/vmlinux"), "--kernel"),
    (("--memory", "100g"), "--memory"),
    (("--hostname", "x rdinit=/bin/sh"), "--hostname"),  # no kernel parameters by the name
])
def test_bad_vm_input_is_refused_cleanly(isobox: Isobox, flags: tuple[str, ...],
                                         field: str) -> None:
    p = isobox("run", "--rm", *VM, *flags, "busybox", "true", check=False)
    assert p.returncode == 125, p.stderr
    assert field in p.stderr and "Traceback" not in p.stderr
    assert isobox.ids() == []


def test_kernel_flag_without_vm_is_refused(isobox: Isobox) -> None:
    p = isobox("run", "--rm", "--kernel", "/boot/vmlinuz", "busybox", "true", check=False)
    assert p.returncode == 125 and "--isolation vm" in p.stderr


def test_vm_that_does_not_come_up_leaves_nothing(isobox: Isobox) -> None:
    env = {"ISOBOX_VM_BOOT_TIMEOUT": "0.5"}
    p = isobox("run", "--rm", *VM, "--network", "none", "busybox", "true", check=False,
               env=env)
    assert p.returncode != 0
    assert "guest agent did not answer" in p.stderr
    assert isobox.ids() == []


def test_qemu_failing_at_start_is_reported_at_once(isobox: Isobox, tmp_path: Path) -> None:
    """The runtime does not wait for QEMU's start-up: a QEMU that dies before the guest runs
    is seen by `start` (QEMU's own message), promptly, and nothing is left."""
    initrd = tmp_path / "big.initrd"
    with open(initrd, "wb") as f:
        f.truncate(100 << 20)  # more than a 64 MiB guest can hold: QEMU refuses it
    t0 = time.monotonic()
    p = isobox("run", "--rm", *VM, "--network", "none", "--memory", "64m", "--initrd",
               str(initrd), "busybox", "true", check=False)
    assert p.returncode == 125, p.stderr
    assert "initrd is too large" in p.stderr and "Traceback" not in p.stderr
    assert time.monotonic() - t0 < 10
    assert isobox.ids() == []


def test_host_directory_and_named_volume_are_shared(isobox: Isobox, tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "in.txt").write_text("host-data\n")
    vol = f"{RUN_PREFIX}vmvol"
    try:
        p = isobox("run", "--rm", *VM, "--network", "none", "-v", f"{share}:/data",
                   "-v", f"{vol}:/vol", "busybox", "sh", "-c",
                   "cat /data/in.txt; echo from-guest > /data/out.txt; echo kept > /vol/v")
        assert p.stdout == "host-data\n"
        assert (share / "out.txt").read_text() == "from-guest\n"
        p = isobox("run", "--rm", "--network", "none", "-v", f"{vol}:/vol", "busybox",
                   "cat", "/vol/v")  # a container sees what the VM wrote
        assert p.stdout == "kept\n"
        # the guest's root cannot leave a setuid program or a device node on the host
        # (SECURITY.md: 9p mapped-xattr, never passthrough)
        isobox("run", "--rm", *VM, "--network", "none", "-v", f"{share}:/data", "busybox",
               "sh", "-c", "cp /bin/busybox /data/suid && chown 0:0 /data/suid && "
               "chmod 4755 /data/suid; mknod /data/dev b 8 0; true")
        import stat

        mode = os.stat(share / "suid").st_mode
        assert not mode & (stat.S_ISUID | stat.S_ISGID), oct(mode)
        if (share / "dev").exists():
            assert not stat.S_ISBLK(os.lstat(share / "dev").st_mode)
        p = isobox("run", "--rm", *VM, "--network", "none", "-v", f"{share}:/data:ro",
                   "busybox", "sh", "-c", "echo x > /data/y", check=False)
        assert p.returncode != 0 and "Read-only file system" in p.stderr
        assert not (share / "y").exists()
    finally:
        isobox("volume", "rm", vol, check=False)


def test_interactive_terminal(isobox: Isobox) -> None:
    from pty_session import PtySession

    term = PtySession([isobox.binary(), "run", "--rm", "-it", *VM, "--network", "none",
                       "busybox", "sh"], isobox.env, rows=31, cols=97)
    try:
        assert term.expect(b"/ # ", 90), term.out
        term.send(b"stty size\r")
        assert term.expect(b"31 97", 30), term.out[-300:]  # the size at start reached the guest
        term.set_size(43, 111)  # and a resize while it runs
        deadline = time.monotonic() + 30
        while not term.expect(b"43 111", 2) and time.monotonic() < deadline:
            term.send(b"stty size\r")
        assert b"43 111" in term.out, term.out[-300:]
        term.send(b"tty; echo marker-$((6*7)); exit 4\r")
        assert term.wait(60) == 4
    finally:
        term.close()
    assert b"/dev/pts/" in term.out and b"marker-42" in term.out
