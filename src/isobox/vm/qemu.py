"""The QEMU command line for an isobox micro-VM (``-M microvm``, PVH kernel, virtio-mmio).

Every disk gets an explicit format driver (never format probing, SECURITY.md cases 55/56),
QEMU runs with ``-nodefaults -no-user-config`` and a seccomp sandbox that denies spawning,
and QMP is a unix socket whose access control comes from its parent directory (case 52)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from isobox.vm.accel import Accelerator
from isobox.vm.errors import VMError

QEMU = "qemu-system-x86_64"
DISK_FORMATS = ("raw", "qcow2")
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
# With -runas QEMU calls setuid itself once everything is open (after the filter is in place):
# set*uid must pass the filter then. The uid it drops to has no capabilities, and seccomp sets
# no_new_privs, so set*uid can never raise its privileges again.
SANDBOX_RUNAS = SANDBOX.replace("elevateprivileges=deny", "elevateprivileges=allow")
# These skip the timer checks and the PCI, i8042 and legacy-UART probes a micro-VM does not need.
# Devices come from ACPI (acpi=on), so no virtio_mmio.device= cmdline; no option ROMs, no
# i8259. The PIT goes only when the guest is told the TSC rate (tsc_early_khz, see accel.py):
# it is the kernel's only other TSC reference. rtc=off measured ~1 s slower: it stays.
MACHINE_OPTS = "acpi=on,pic=off,x-option-roms=off,auto-kernel-cmdline=off"
BASE_CMDLINE = ("panic=-1", "reboot=t", "pci=off", "no_timer_check", "tsc=reliable",
                "i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd")

# "stdio": QEMU's fd 0 in and fd 1 out (the end of fd 0 closes the port); "file": output
# appended to a file; "serial": a terminal, bidirectional, put in raw mode; "socket": a unix
# socket server.
Backend = Literal["stdio"] | tuple[Literal["file", "serial", "socket"], Path]


@dataclass(frozen=True)
class Drive:
    path: Path
    fmt: str
    readonly: bool = False
    node: str = "vda"
    user: bool = False  # a user's disk: its header may not name a backing file (checked too)
    fd: int = -1        # an open descriptor QEMU gets instead of the path (-add-fd)


@dataclass(frozen=True)
class SerialPort:
    """A virtio-serial port the guest finds by ``name`` (/sys/class/virtio-ports/*/name)."""

    name: str
    backend: Backend


@dataclass(frozen=True)
class MachineSpec:
    kernel: Path
    initrd: Path
    cmdline: str
    memory_mib: int
    cpus: int
    accel: Accelerator
    drives: Sequence[Drive] = ()
    ports: Sequence[SerialPort] = ()
    qmp_socket: Path | None = None
    console_log: Path | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)
    # Drop root before the guest runs: QEMU opens its files, sockets and devices as root, then
    # chroots to an empty directory and becomes this uid:gid (SECURITY.md case 54).
    run_as: tuple[int, int] | None = None
    chroot: Path | None = None


def opt_value(value: str | Path) -> str:
    """A value inside a QemuOpts ``key=value,…`` list: commas are doubled."""
    text = str(value)
    if "\n" in text or "\0" in text:
        raise VMError(f"QEMU option value {text!r}: contains a newline or NUL")
    return text.replace(",", ",,")


def kernel_cmdline(spec: MachineSpec) -> str:
    """Defaults first so the caller's ``cmdline`` can override any of them."""
    parts = list(BASE_CMDLINE)
    if spec.accel.name == "tcg" and spec.accel.tsc_khz:
        parts.append(f"tsc_early_khz={spec.accel.tsc_khz}")
    parts += ["console=ttyS0"] if spec.console_log is not None else ["quiet", "8250.nr_uarts=0"]
    if spec.cmdline:
        parts.append(spec.cmdline)
    return " ".join(parts)


def _chardev(cid: str, backend: Backend) -> str:
    if backend == "stdio":
        return f"stdio,id={cid},signal=off"
    kind, path = backend
    if kind == "file":
        return f"file,id={cid},path={opt_value(path)},append=on"
    if kind == "serial":
        return f"serial,id={cid},path={opt_value(path)}"
    if kind == "socket":
        return f"socket,id={cid},path={opt_value(path)},server=on,wait=off"
    raise VMError(f"serial port backend {backend!r}: must be stdio, file, serial or socket")


def qemu_argv(spec: MachineSpec, qemu: str = QEMU) -> list[str]:
    if spec.memory_mib < 64:
        raise VMError(f"VM memory {spec.memory_mib} MiB: at least 64 MiB is needed")
    if spec.cpus < 1:
        raise VMError(f"VM cpus {spec.cpus}: at least 1")
    serial = "on" if spec.console_log is not None else "off"
    pit = "off" if spec.accel.name == "tcg" and spec.accel.tsc_khz else "auto"
    argv = [
        qemu, "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-sandbox", SANDBOX if spec.run_as is None else SANDBOX_RUNAS,
        "-M", f"microvm,{MACHINE_OPTS},pit={pit},isa-serial={serial}",
        "-global", "virtio-mmio.force-legacy=false",
        "-m", f"{spec.memory_mib}M", "-smp", str(spec.cpus),
        # -kernel/-initrd values are taken verbatim (no QemuOpts parsing, commas stay single).
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd),
        "-append", kernel_cmdline(spec),
    ]
    if spec.accel.name == "kvm":
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        argv += ["-accel", "tcg,thread=multi" if spec.cpus > 1 else "tcg", "-cpu", "max"]
    if spec.console_log is not None:
        argv += ["-chardev", f"file,id=console,path={opt_value(spec.console_log)}",
                 "-serial", "chardev:console"]
    nodes: set[str] = set()
    for d in spec.drives:
        if d.fmt not in DISK_FORMATS:
            raise VMError(f"disk {d.path}: format {d.fmt!r} is not one of "
                          f"{', '.join(DISK_FORMATS)}")
        if d.node in nodes or not d.node.isidentifier():
            raise VMError(f"disk {d.path}: node name {d.node!r} is invalid or used twice")
        nodes.add(d.node)
        filename = str(d.path)
        if d.fd >= 0:  # QEMU dups the descriptor for /dev/fdset/N: it never opens the path
            fdset = len(nodes)
            argv += ["-add-fd", f"fd={d.fd},set={fdset},opaque={opt_value(d.path)}"]
            filename = f"/dev/fdset/{fdset}"
        blockdev: dict[str, object] = {
            "driver": d.fmt, "node-name": d.node, "read-only": d.readonly,
            "file": {"driver": "file", "filename": filename, "read-only": d.readonly}}
        if d.user and d.fmt == "qcow2":
            blockdev["backing"] = None  # even if the header was changed after the check
        argv += ["-blockdev", json.dumps(blockdev, separators=(",", ":")),
                 "-device", f"virtio-blk-device,drive={d.node}"]
    if spec.ports:
        argv += ["-device", "virtio-serial-device,id=vser0"]
        for i, port in enumerate(spec.ports):
            cid = f"port{i}"
            argv += ["-chardev", _chardev(cid, port.backend),
                     "-device", f"virtserialport,bus=vser0.0,chardev={cid},"
                                f"name={opt_value(port.name)}"]
    if spec.qmp_socket is not None:
        argv += ["-chardev", f"socket,id=qmp,path={opt_value(spec.qmp_socket)},"
                             "server=on,wait=off",
                 "-mon", "chardev=qmp,mode=control"]
    if spec.run_as is not None:
        uid, gid = spec.run_as
        if uid <= 0 or gid <= 0:
            raise VMError(f"QEMU user {uid}:{gid}: must not be root")
        argv += ["-runas", f"{uid}:{gid}"]
    if spec.chroot is not None:
        argv += ["-chroot", str(spec.chroot)]
    argv += list(spec.extra_args)
    return argv
