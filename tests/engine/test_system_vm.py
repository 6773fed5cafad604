"""`isobox vm …`: system VMs that boot their own init (TCG here).

The fast tests check bad input leaves nothing behind; the acceptance test (marked vm + slow)
boots debian:bookworm with systemd to a serial-console login prompt, runs `vm exec`, stops it
through ACPI/systemd and removes it. The bootstrapped image is cached as an archive under
/var/cache/isobox-sysvm (debootstrap takes minutes)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from engine_helpers import Isobox, read_until

from harness import RUN_PREFIX

pytestmark = [pytest.mark.engine]
CACHE = "/var/cache/isobox-sysvm"
IMAGE_TAR = os.path.join(CACHE, "debian-bookworm.tar")


def _vm_state(isobox: Isobox) -> tuple[list[str], list[str]]:
    cdir = os.path.join(isobox.root, "containers")
    containers = sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []
    return isobox.ids(), containers


def _refused(isobox: Isobox, *args: str, expect: str) -> None:
    before = _vm_state(isobox)
    p = isobox("vm", "create", *args, check=False)
    assert p.returncode != 0
    assert expect in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert _vm_state(isobox) == before


def test_missing_disk_refused(isobox: Isobox) -> None:
    _refused(isobox, f"{RUN_PREFIX}v1", "--disk", "/nonexistent/disk.img",
             expect="/nonexistent/disk.img: no such file")


def test_hostile_disk_refused(isobox: Isobox) -> None:
    d = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-disk")
    try:
        evil = os.path.join(d, "evil.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        "/etc/shadow", evil, "64M"], check=True)
        _refused(isobox, f"{RUN_PREFIX}v2", "--disk", evil, expect="backing")
        vmdk = os.path.join(d, "x.vmdk")
        with open(vmdk, "wb") as f:
            f.write(b"KDMV" + b"\0" * 4092)
        _refused(isobox, f"{RUN_PREFIX}v3", "--disk", vmdk, expect="vmdk")
    finally:
        subprocess.run(["rm", "-rf", d], check=False)


def test_memory_above_host_and_bad_flags_refused(isobox: Isobox) -> None:
    _refused(isobox, f"{RUN_PREFIX}v4", "--image", "busybox", "--memory", "100t",
             expect="more memory than the host has")
    _refused(isobox, f"{RUN_PREFIX}v5", expect="exactly one of --image IMAGE or --disk FILE")
    _refused(isobox, f"{RUN_PREFIX}v6", "--image", "busybox", "--cpus", "999",
             expect="--cpus")


def test_unknown_name(isobox: Isobox) -> None:
    for verb in ("start", "stop", "rm", "inspect", "console"):
        p = isobox("vm", verb, f"{RUN_PREFIX}nosuch", check=False)
        assert p.returncode != 0
        assert "No such VM" in p.stderr, (verb, p.stderr)
    p = isobox("vm", "exec", f"{RUN_PREFIX}nosuch", "true", check=False)
    assert "No such VM" in p.stderr


# the acceptance test -----------------------------------------------------------------------
@pytest.fixture
def debian(isobox: Isobox) -> Iterator[str]:
    if not os.path.exists(IMAGE_TAR):
        store = os.path.join(CACHE, "store")
        subprocess.run(["rm", "-rf", store], check=False)
        os.makedirs(CACHE, exist_ok=True)
        env = {**os.environ, "ISOBOX_ROOT": store}
        subprocess.run([Isobox.binary(), "image", "bootstrap", "debian:bookworm"], env=env,
                       check=True, timeout=1800, stdout=subprocess.DEVNULL)
        subprocess.run([Isobox.binary(), "image", "save", "-o", IMAGE_TAR + ".tmp",
                        "debian:bookworm"], env=env, check=True, timeout=600)
        os.rename(IMAGE_TAR + ".tmp", IMAGE_TAR)
    isobox("image", "load", "-i", IMAGE_TAR, timeout=300)
    yield "debian:bookworm"


@pytest.mark.vm
@pytest.mark.slow
def test_debian_boots_to_login_exec_stop_rm(isobox: Isobox, debian: str) -> None:
    name = f"{RUN_PREFIX}deb"
    isobox("vm", "create", name, "--image", debian, "--memory", "512m", "--disk-size", "2g",
           "--network", "none")
    t0 = time.monotonic()
    isobox("vm", "start", name, timeout=120)
    # the console: Enter makes getty print its prompt again (output before attach is only in
    # the console log)
    con = isobox.popen("vm", "console", name, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        assert con.stdin is not None
        seen = b""
        deadline = time.monotonic() + 300
        while b"login:" not in seen and time.monotonic() < deadline:
            con.stdin.write(b"\r")
            con.stdin.flush()
            seen += read_until(con, b"login:", 10)
        boot_s = time.monotonic() - t0
        assert b"login:" in seen, seen[-2000:]
        print(f"\nsystem VM boot to login prompt (TCG): {boot_s:.1f} s")
        con.stdin.write(b"\x1d")  # ctrl-]: detach, the VM keeps running
        con.stdin.flush()
        assert con.wait(10) == 0
    finally:
        if con.poll() is None:
            con.kill()
            con.wait()
    p = isobox("vm", "exec", name, "cat", "/etc/os-release")
    assert 'VERSION_CODENAME=bookworm' in p.stdout
    df = isobox("vm", "exec", name, "df", "-k", "/").stdout.splitlines()[-1].split()
    assert int(df[1]) > 1_500_000  # the root grew to --disk-size at boot
    assert isobox("vm", "exec", name, "sh", "-c", "exit 7", check=False).returncode == 7
    t1 = time.monotonic()
    isobox("vm", "stop", name, timeout=200)
    print(f"system VM clean shutdown: {time.monotonic() - t1:.1f} s")
    ls = isobox("vm", "ls").stdout
    assert name in ls and "exited" in ls
    assert "Exited (0)" in isobox("ps", "-a").stdout  # powered off, not killed (137)
    log = isobox("logs", name).stdout.encode()  # the serial console, through conmon
    assert b"login:" in log and b"Power down" in log
    isobox("vm", "rm", name)
    assert name not in isobox("vm", "ls").stdout
