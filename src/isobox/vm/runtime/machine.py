"""From a bundle's ``config.json`` to the QEMU machine that runs it.

The engine passes what only a VM needs as annotations (``org.isobox.vm.*``): the instance's
disk, the cache of kernels/initramfs/agent, a user kernel or initrd. Guest RAM and vCPUs come
from ``linux.resources`` (``--memory``, ``--cpus``), as a container's limits would.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isobox.errors import ConfigError, NotFoundError
from isobox.vm.qemu import Drive, MachineSpec, SerialPort
from isobox.vm.runtime.state import CTL_PORTS, VMState, VMStore

ANNOTATION = "org.isobox.vm."
DEFAULT_CACHE = "/var/lib/isobox/vm"
DEFAULT_MEMORY_MIB = 512
MIN_MEMORY_MIB = 64
MIB = 1 << 20


def annotation(config: dict[str, Any], key: str, default: str = "") -> str:
    return str((config.get("annotations") or {}).get(ANNOTATION + key, default))


def guest_memory_mib(config: dict[str, Any]) -> int:
    limit = (((config.get("linux") or {}).get("resources") or {}).get("memory") or {}).get("limit")
    if not limit or int(limit) <= 0:
        return DEFAULT_MEMORY_MIB
    mib = int(limit) // MIB
    if mib < MIN_MEMORY_MIB:
        raise ConfigError("linux.resources.memory.limit", f"{int(limit)} bytes is too little "
                          f"for a VM (minimum {MIN_MEMORY_MIB} MiB)")
    return mib


def guest_cpus(config: dict[str, Any]) -> int:
    cpu = (((config.get("linux") or {}).get("resources") or {}).get("cpu") or {})
    quota, period = int(cpu.get("quota") or 0), int(cpu.get("period") or 0)
    cpus = math.ceil(quota / period) if quota > 0 and period > 0 else 1
    return max(1, min(cpus, os.cpu_count() or 1))


def host_memory_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


ETC_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


def valid_hostname(name: str) -> bool:
    """RFC 1123: it goes on the guest kernel's command line, where a space would add
    parameters of the caller's choosing."""
    if not name or len(name) > 253:
        return False
    return all(0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
               and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
               for label in name.split("."))


@dataclass(frozen=True)
class Share:
    """A host directory the guest mounts with virtio-9p (a container's bind mount)."""

    tag: str
    source: str
    target: str
    readonly: bool


def shares(config: dict[str, Any]) -> list[Share]:
    """The bundle's bind mounts, but the /etc files the agent writes itself."""
    out: list[Share] = []
    for m in config.get("mounts") or []:
        opts = m.get("options") or []
        if m.get("type") != "bind" and "bind" not in opts and "rbind" not in opts:
            continue
        if m.get("destination") in ETC_FILES:
            continue
        source = str(m.get("source") or "")
        if not os.path.isdir(source):
            raise ConfigError("mounts", f"{source}: a VM can share directories only "
                              "(virtio-9p), not files")
        out.append(Share(f"isobox{len(out)}", source, str(m["destination"]), "ro" in opts))
    return out


def share_args(items: list[Share]) -> list[str]:
    args: list[str] = []
    for i, sh in enumerate(items):
        from isobox.vm.qemu import opt_value

        ro = ",readonly=on" if sh.readonly else ""
        args += ["-fsdev", f"local,id=fs{i},path={opt_value(sh.source)},"
                           f"security_model=mapped-xattr,multidevs=remap{ro}",
                 "-device", f"virtio-9p-device,fsdev=fs{i},mount_tag={sh.tag}"]
    return args


def kernel_cmdline(config: dict[str, Any], extra: str = "") -> str:
    parts = []
    hostname = str(config.get("hostname") or "")
    if hostname and not valid_hostname(hostname):
        raise ConfigError("hostname", f"{hostname!r} is not a valid host name for a VM "
                          "(letters, digits, '-' and '.', at most 253 characters)")
    if hostname:
        parts.append(f"isobox.hostname={hostname}")
    if extra:
        parts.append(extra)
    return " ".join(parts)


def plan(config: dict[str, Any], st: VMState, *, accel: Any, kernel: Path, initrd: Path,
         stderr_fd: int, debug: bool = False) -> MachineSpec:
    """The machine for ``config``; ``stderr_fd`` is the fd QEMU inherits for the workload's
    stderr (conmon's pipe), kept apart from QEMU's own stderr (its log file)."""
    disk = annotation(config, "disk")
    if not disk:
        raise ConfigError("annotations", f"{ANNOTATION}disk is missing: a VM needs its root disk")
    memory = guest_memory_mib(config)
    host = host_memory_mib()
    if host and memory >= host:
        raise ConfigError("--memory", f"{memory} MiB is more memory than the host has "
                          f"({host} MiB)")
    if (config.get("process") or {}).get("terminal"):
        ports = [SerialPort("isobox.stdio", ("serial", Path("/proc/self/fd/0")))]
    else:  # apart: the end of stdin closes its port, which must not stop stdout
        ports = [SerialPort("isobox.stdin", "stdio"),
                 SerialPort("isobox.stdout", ("file", Path("/proc/self/fd/1")))]
    ports += [SerialPort("isobox.stderr", ("file", Path(f"/proc/self/fd/{stderr_fd}"))),
             SerialPort("isobox.status", ("file", Path(st.status_file)))]
    ports += [SerialPort(f"isobox.ctl{n}", ("socket", Path(st.ctl_socket(n))))
              for n in range(CTL_PORTS)]
    shared = shares(config)
    run_as = (st.qemu_uid, st.qemu_uid) if st.qemu_uid and not shared else None
    cmdline = kernel_cmdline(config, " ".join(filter(None, (system_cmdline(config),
                                                           modules_cmdline(config)))))
    extra_args = tuple(share_args(shared) + loadvm_args(config) + system_args(config))
    chroot = Path(empty_dir(os.path.dirname(st.dir))) if run_as is not None else None
    # last: a user's disk is opened here and its descriptor must reach QEMU (no raise after)
    drives = [root_drive(config, disk)]
    return MachineSpec(
        kernel=kernel, initrd=initrd, cmdline=cmdline,
        memory_mib=memory, cpus=guest_cpus(config), accel=accel, drives=drives,
        ports=ports, qmp_socket=Path(st.qmp_socket),
        # the guest can write its serial console without end: kept only for system VMs (a
        # login prompt) and when asked for (ISOBOX_VM_DEBUG=1 in the engine's environment)
        console_log=Path(st.console_log) if is_system(config)
        or annotation(config, "console") == "on" else None,
        extra_args=extra_args, run_as=run_as, chroot=chroot)


# QEMU's uid: one per VM, in a range no login or subordinate-id range uses, so an escaped QEMU
# cannot signal, ptrace or read the files of another VM's QEMU. A VM with 9p shares keeps root
# and no chroot: QEMU reads and writes the shared host files itself (mapped-xattr, with the
# host's ownership, some of it through /proc/self/fd).
QEMU_UID_BASE = 2_100_000_000
QEMU_UID_SPAN = 1 << 24


def allocate_qemu_uid(store: VMStore, st: VMState) -> None:
    """A uid no other VM under this runtime root holds (starting from a hash of the id), saved
    in ``st`` under a lock so that concurrent creates never pick the same one."""
    import fcntl
    import hashlib

    fd = os.open(os.path.join(store.root, ".uids.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        used = set()
        for vid in store.ids():
            if vid != st.id:
                try:
                    used.add(store.load(vid).qemu_uid)
                except (OSError, ValueError, TypeError, NotFoundError):
                    continue
        offset = int(hashlib.sha256(st.id.encode()).hexdigest()[:8], 16)
        for i in range(QEMU_UID_SPAN):
            uid = QEMU_UID_BASE + (offset + i) % QEMU_UID_SPAN
            if uid not in used:
                break
        st.qemu_uid = uid
        st.save()
    finally:
        os.close(fd)


def empty_dir(root: str) -> str:
    """QEMU's ``-chroot``: an empty, root-owned, read-only directory under the runtime root."""
    path = os.path.join(root, "empty")
    try:
        os.mkdir(path, 0o555)
    except FileExistsError:
        pass
    st = os.lstat(path)
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o222 or os.listdir(path):
        raise ConfigError("--root", f"{path}: must be an empty directory owned by root, "
                          "not writable (QEMU's chroot)")
    return path


def root_drive(config: dict[str, Any], disk: str) -> Drive:
    """The root disk; a user's own disk (``vm create --disk``) is checked again here, just
    before QEMU opens it, whoever started the VM (a restart policy, ``system boot``)."""
    fmt = annotation(config, "disk-format", "qcow2")
    if annotation(config, "disk-user") != "true":
        return Drive(Path(disk), fmt)
    from isobox.vm.disk import check_open_disk

    try:  # opened once: checked and given to QEMU by descriptor (no swap in between)
        fd = os.open(disk, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError as e:
        raise ConfigError("--disk", f"{disk}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if annotation(config, "disk-id") not in ("", f"{st.st_dev}:{st.st_ino}"):
            raise ConfigError("--disk", f"{disk}: not the file the VM was created with (it was "
                              "replaced or moved since `vm create`); refusing")
        real = os.readlink(f"/proc/self/fd/{fd}")  # what was opened, whatever the path says
        data_root = os.path.dirname(os.path.realpath(annotation(config, "cache",
                                                                DEFAULT_CACHE)))
        if real == data_root or real.startswith(data_root + "/"):
            raise ConfigError("--disk", f"{disk}: a disk inside isobox's data directory "
                              f"({data_root}) cannot be a VM's own disk")
        info = check_open_disk(fd, real)
        if info.format != fmt:
            raise ConfigError("--disk", f"{disk}: its format changed from {fmt} to "
                              f"{info.format} since the VM was created; refusing")
    except BaseException:
        os.close(fd)
        raise
    return Drive(Path(real), fmt, user=True, fd=fd)


def loadvm_args(config: dict[str, Any]) -> list[str]:
    """``org.isobox.vm.loadvm=NAME`` (a memory snapshot restored on a stopped VM): QEMU
    starts from that snapshot's RAM and disk state instead of booting."""
    name = annotation(config, "loadvm")
    if not name:
        return []
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError("annotations", f"{ANNOTATION}loadvm: invalid snapshot name {name!r}")
    return ["-loadvm", name]


# System VMs (isobox vm …) ------------------------------------------------------------------
def is_system(config: dict[str, Any]) -> bool:
    """``org.isobox.vm.system=true``: the guest boots the disk's own init (the agent hands
    PID 1 over at ``start``) instead of running ``process.args`` as a workload."""
    return annotation(config, "system") == "true"


def module_groups(config: dict[str, Any]) -> list[str]:
    """Which optional guest modules (vm/initramfs.py OPTIONAL_MODULES) this VM needs: its
    initramfs carries them and the agent loads them (``isobox.modules=``)."""
    groups = []
    if any(ns.get("type") == "network" and ns.get("path")
           for ns in (config.get("linux") or {}).get("namespaces") or []):
        groups.append("net")  # a namespace of the engine's: eth0 on a bridge (maybe)
    if shares(config):
        groups.append("9p")
    if is_system(config):
        groups.append("balloon")
    return groups


def modules_cmdline(config: dict[str, Any]) -> str:
    groups = module_groups(config)
    return f"isobox.modules={','.join(groups)}" if groups else ""


def system_cmdline(config: dict[str, Any]) -> str:
    return "isobox.system=1" if is_system(config) else ""


def system_args(config: dict[str, Any]) -> list[str]:
    """A balloon, so ``vm resize --memory`` can shrink and regrow the guest live."""
    return ["-device", "virtio-balloon-device,id=balloon0"] if is_system(config) else []
