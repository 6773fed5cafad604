"""The QEMU command line: unit checks of the argv, QMP and the seccomp sandbox on a paused
machine, and a real boot of the guest kernel to a busybox /init (marker ``vm``)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isobox.vm.accel import Accelerator, detect
from isobox.vm.disk import create_overlay, ext4_image_from_dir
from isobox.vm.errors import VMError
from isobox.vm.initramfs import guest_initramfs
from isobox.vm.kernel import GuestKernel
from isobox.vm.qemu import Drive, MachineSpec, SerialPort, kernel_cmdline, qemu_argv
from isobox.vm.qmp import QMPClient

TCG = Accelerator("tcg", "test", tsc_khz=2100000)

INIT = """#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
err=""
while read -r m; do /bin/busybox insmod "$m" 2>/dev/null || err="$err insmod:$m"; done < /modules
/bin/busybox mount -t ext4 /dev/vda /rootfs 2>/dev/null || err="$err mount"
for n in /sys/class/virtio-ports/*/name; do
  d=${n%/name}
  case "$(/bin/busybox cat "$n")" in
    isobox.test) echo "MARKER-FILE $(/bin/busybox cat /proc/uptime)" \
      "$(/bin/busybox cat /rootfs/hello) errors:$err" > /dev/${d##*/} ;;
    isobox.stdio) echo "MARKER-STDIO" > /dev/${d##*/} ;;
  esac
done
/bin/busybox poweroff -f
"""


def _spec(tmp: Path, **kw: object) -> MachineSpec:
    base: dict[str, object] = dict(kernel=tmp / "vmlinux", initrd=tmp / "initrd", cmdline="",
                                   memory_mib=256, cpus=1, accel=TCG)
    base.update(kw)
    return MachineSpec(**base)  # type: ignore[arg-type]


def test_run_as_drops_root_in_an_empty_chroot(vm_tmp: Path) -> None:
    argv = qemu_argv(_spec(vm_tmp, run_as=(2100000001, 2100000001), chroot=vm_tmp / "empty"))
    assert argv[argv.index("-runas") + 1] == "2100000001:2100000001"
    assert argv[argv.index("-chroot") + 1] == str(vm_tmp / "empty")
    # QEMU's own setuid comes after its filter: it must pass; spawning stays denied
    assert argv[argv.index("-sandbox") + 1] == \
        "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"
    with pytest.raises(VMError, match="must not be root"):
        qemu_argv(_spec(vm_tmp, run_as=(0, 0)))


def test_user_disk_by_descriptor(vm_tmp: Path) -> None:
    argv = qemu_argv(_spec(vm_tmp, drives=[Drive(vm_tmp / "own,disk.qcow2", "qcow2", user=True,
                                                 fd=7)]))
    assert argv[argv.index("-add-fd") + 1] == f"fd=7,set=1,opaque={vm_tmp}/own,,disk.qcow2"
    blockdev = argv[argv.index("-blockdev") + 1]
    assert '"filename":"/dev/fdset/1"' in blockdev and '"backing":null' in blockdev
    assert "own,disk" not in blockdev


def test_argv_is_locked_down(vm_tmp: Path) -> None:
    drives = [Drive(vm_tmp / "a,b.raw", "raw", readonly=True),
              Drive(vm_tmp / "c.qcow2", "qcow2", node="vdb")]
    spec = _spec(vm_tmp, kernel=vm_tmp / "k,1", drives=drives,
                 ports=[SerialPort("isobox.stdio", "stdio"),
                        SerialPort("isobox.ctl0", ("socket", vm_tmp / "ctl,0"))],
                 qmp_socket=vm_tmp / "qmp.sock")
    argv = qemu_argv(spec)
    joined = " ".join(argv)
    assert argv[argv.index("-kernel") + 1] == str(vm_tmp / "k,1")
    for flag in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"):
        assert flag in argv
    assert argv[argv.index("-sandbox") + 1] == \
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    assert "microvm,acpi=on" in argv[argv.index("-M") + 1]
    blockdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-blockdev"]
    assert len(blockdevs) == 2
    assert '"driver":"raw"' in blockdevs[0] and '"read-only":true' in blockdevs[0]
    assert '"filename":"' + str(vm_tmp / "a,b.raw") + '"' in blockdevs[0]
    assert '"driver":"qcow2"' in blockdevs[1]
    assert "-drive" not in argv
    assert f"path={vm_tmp}/ctl,,0,server=on,wait=off" in joined
    assert "virtserialport,bus=vser0.0,chardev=port0,name=isobox.stdio" in joined
    assert "mode=control" in joined and "-monitor" not in argv
    assert argv[argv.index("-cpu") + 1] == "max"
    assert argv[argv.index("-accel") + 1] == "tcg"
    cmdline = argv[argv.index("-append") + 1]
    assert "console=ttyS0" not in cmdline and "quiet" in cmdline
    assert "panic=-1" in cmdline and "tsc_early_khz=2100000" in cmdline


def test_argv_console_smp_and_bad_input(vm_tmp: Path) -> None:
    argv = qemu_argv(_spec(vm_tmp, cpus=2, console_log=vm_tmp / "console.log",
                           cmdline="foo=bar"))
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert "isa-serial=on" in argv[argv.index("-M") + 1]
    cmd = kernel_cmdline(_spec(vm_tmp, console_log=vm_tmp / "c", cmdline="foo=bar"))
    assert "console=ttyS0" in cmd and cmd.endswith("foo=bar")
    with pytest.raises(VMError, match="vmdk"):
        qemu_argv(_spec(vm_tmp, drives=[Drive(vm_tmp / "x", "vmdk")]))
    with pytest.raises(VMError, match="used twice"):
        qemu_argv(_spec(vm_tmp, drives=[Drive(vm_tmp / "x", "raw"), Drive(vm_tmp / "y", "raw")]))
    with pytest.raises(VMError, match="newline"):
        qemu_argv(_spec(vm_tmp, qmp_socket=vm_tmp / "a\nb"))


@pytest.fixture
def initrd(host_kernel: GuestKernel, vm_cache: Path, vm_tmp: Path) -> Path:
    init = vm_tmp / "init.sh"
    init.write_text(INIT)
    return guest_initramfs(vm_cache, host_kernel, init)


class Qemu:
    def __init__(self, argv: list[str], **kw: object) -> None:
        kw.setdefault("stdin", subprocess.DEVNULL)
        self.proc = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def qemus() -> Iterator[list[Qemu]]:
    started: list[Qemu] = []
    yield started
    for q in started:
        q.kill()


def _wait_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "QEMU exited early"
        assert time.monotonic() < deadline, "no QMP socket"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("unprivileged", [False, True], ids=["root", "runas"])
def test_qmp_and_sandbox_on_paused_machine(host_kernel: GuestKernel, initrd: Path,
                                           vm_tmp: Path, qemus: list[Qemu],
                                           unprivileged: bool) -> None:
    sock = vm_tmp / "qmp.sock"
    empty = vm_tmp / "empty"
    empty.mkdir(mode=0o555)
    argv = qemu_argv(_spec(vm_tmp, kernel=host_kernel.vmlinux, initrd=initrd, qmp_socket=sock,
                           extra_args=["-S"], run_as=(2100000007, 2100000007)
                           if unprivileged else None, chroot=empty if unprivileged else None))
    q = Qemu(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    qemus.append(q)
    _wait_socket(sock, q.proc)
    status = Path(f"/proc/{q.proc.pid}/status").read_text()
    assert "Seccomp:\t2" in status
    if unprivileged:  # set*uid is allowed by the filter then: it must not buy back root
        wait_for_uid = time.monotonic() + 10
        while "Uid:\t0" in Path(f"/proc/{q.proc.pid}/status").read_text():
            assert time.monotonic() < wait_for_uid
            time.sleep(0.05)
        status = Path(f"/proc/{q.proc.pid}/status").read_text()
        assert "Uid:\t2100000007\t2100000007\t2100000007" in status
        assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
    pwned = vm_tmp / "pwned"
    with QMPClient(sock) as qmp:
        assert qmp.execute("query-status")["status"] == "prelaunch"
        with pytest.raises(VMError, match="query-nosuch"):
            qmp.execute("query-nosuch")
        # Case 53: an exec: migration is a spawn, which the sandbox punishes with SIGSYS.
        try:
            qmp.execute("migrate", {"uri": f"exec:touch {pwned}"})
        except VMError:
            pass
    assert q.proc.wait(timeout=10) == -signal.SIGSYS
    assert not pwned.exists()


def _communicate_keep_stdin(proc: subprocess.Popen[bytes], timeout: float
                            ) -> tuple[bytes, bytes]:
    """communicate() without closing stdin (it would close it at once with no input)."""
    assert proc.stdin is not None
    stdin = proc.stdin
    proc.stdin = None
    try:
        return proc.communicate(timeout=timeout)
    finally:
        proc.stdin = stdin
        stdin.close()


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.parametrize("cpus", [1, 2])
def test_boot_to_marker(host_kernel: GuestKernel, initrd: Path, vm_tmp: Path,
                        qemus: list[Qemu], cpus: int) -> None:
    out = vm_tmp / "port.out"
    (vm_tmp / "root").mkdir()
    (vm_tmp / "root/hello").write_text("hello-from-ext4\n")
    ext4_image_from_dir(vm_tmp / "root", vm_tmp / "root.ext4", free_mib=8)
    create_overlay(vm_tmp / "root.ext4", "raw", vm_tmp / "root.qcow2")
    spec = _spec(vm_tmp, kernel=host_kernel.vmlinux, initrd=initrd, accel=detect(), cpus=cpus,
                 drives=[Drive(vm_tmp / "root.qcow2", "qcow2")],
                 ports=[SerialPort("isobox.test", ("file", out)),
                        SerialPort("isobox.stdio", "stdio")])
    start = time.monotonic()
    # stdin stays open: at EOF on fd 0 QEMU closes the stdio port and guest writes block.
    q = Qemu(qemu_argv(spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
             stderr=subprocess.PIPE)
    qemus.append(q)
    try:
        stdout, stderr = _communicate_keep_stdin(q.proc, timeout=60)
    except subprocess.TimeoutExpired:
        q.kill()
        pytest.fail(f"guest did not power off within 60 s; port output: "
                    f"{out.read_text() if out.exists() else ''!r}")
    elapsed = time.monotonic() - start
    assert q.proc.returncode == 0, stderr.decode()[-500:]
    text = out.read_text()
    assert text.startswith("MARKER-FILE ") and text.endswith(" hello-from-ext4 errors:\n"), text
    assert b"MARKER-STDIO" in stdout
    print(f"{cpus} CPU(s): boot to marker + power-off: {elapsed:.2f} s wall, "
          f"guest uptime at marker {text.split()[1]} s")
