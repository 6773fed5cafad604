"""System VMs (``isobox vm …``): full machines that boot their disk's own init.

A system VM is an engine record like any ``--isolation vm`` instance, labelled
``org.isobox.vm.system=true``: conmon, stop/kill/rm, networks and published ports are the
engine's. Its bundle carries ``org.isobox.vm.system=true``, so isobox-vm-runtime gives it a
serial console socket (``con.sock``, logged to ``console.log`` in the container directory) and
a balloon, and at ``start`` the guest agent hands PID 1 to the disk's ``/sbin/init``
(``process.args``) while a forked copy keeps serving ``exec``.

Disks: ``--image`` gives the image's cached ext4 base under a qcow2 overlay grown to
``--disk-size`` (the agent grows the filesystem online at boot); ``--disk FILE`` is used
directly (the user's file holds the machine's state and keeps it after ``vm rm``), after
``check_user_disk`` refused backing files, data files and foreign formats — at create and again
at every start.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isobox.engine.options import CreateOptions, PortSpec, Resources
from isobox.errors import ConfigError, IsoboxError, NotFoundError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.state import ContainerRow

SYSTEM_LABEL = "org.isobox.vm.system"
MIB = 1 << 20
GIB = 1 << 30
DEFAULT_MEMORY = 512 * MIB
DEFAULT_DISK_SIZE = 4 * GIB
STOP_TIMEOUT = 90      # seconds of ACPI/systemd shutdown before SIGKILL (TCG is slow)
INIT = ("/sbin/init",)
# The serial console is logged through the monitor (QEMU's own fd 1 is conmon's stdout pipe):
# `isobox logs NAME` shows it, and conmon's rotation bounds what a guest writing its console
# without end can take of the host's disk (QEMU's chardev logfile has no size limit).
CONSOLE_TO_MONITOR = "/proc/self/fd/1"
CONSOLE_LOG_OPTS = {"max-size": "1m", "max-file": "3"}
SCRATCH_COMMENT = "isobox vm create --disk: no image, the user's disk is the root"


@dataclass(frozen=True)
class SystemVMOptions:
    name: str
    image: str = ""
    disk: str = ""
    cpus: int = 1
    memory: int = 0            # bytes; 0 = DEFAULT_MEMORY
    disk_size: int = 0         # bytes; 0 = DEFAULT_DISK_SIZE (only with --image)
    network: str = "bridge"
    ports: tuple[PortSpec, ...] = ()


def is_system(row: ContainerRow) -> bool:
    return (row.options.get("labels") or {}).get(SYSTEM_LABEL) == "true"


def get_system_vm(engine: Engine, ref: str) -> ContainerRow:
    try:
        row = engine.get(ref)
    except NotFoundError:
        raise NotFoundError(f"No such VM: {ref}") from None
    if not is_system(row):
        raise NotFoundError(f"No such VM: {ref} (a container or micro-VM of that name exists:"
                            " use the container commands)")
    return row


def list_system_vms(engine: Engine) -> list[ContainerRow]:
    return [r for r in engine.list() if is_system(r)]


def vm_summary(row: ContainerRow) -> dict[str, Any]:
    """What ``isobox vm ls`` shows of a VM (also ``GET /isobox/v1/vms``)."""
    res = row.options.get("resources") or {}
    info = row.options.get("system_vm") or {}
    saved = row.options.get("saved_state") or None
    return {"Id": row.id, "Name": row.name, "State": row.status,
            "Cpus": int(res.get("nano_cpus") or 1_000_000_000) // 1_000_000_000,
            "Memory": int(res.get("memory") or DEFAULT_MEMORY),
            "Image": str(info.get("image") or ""), "Disk": str(info.get("disk") or ""),
            "SavedState": {"File": saved["file"], "Saved": saved.get("saved", "")}
            if saved else None}


# create -----------------------------------------------------------------------------------
def _check(o: SystemVMOptions) -> None:
    from isobox.engine.names import validate_name
    from isobox.vm.runtime.machine import MIN_MEMORY_MIB, host_memory_mib

    if not o.name:
        raise ConfigError("NAME", "a system VM needs a name")
    validate_name(o.name)
    if bool(o.image) == bool(o.disk):
        raise ConfigError("--image/--disk", "give exactly one of --image IMAGE or --disk FILE")
    if o.disk and o.disk_size:
        raise ConfigError("--disk-size", "--disk-size applies to --image; grow a --disk with "
                          "qemu-img resize")
    host_cpus = os.cpu_count() or 1
    if not 1 <= o.cpus <= host_cpus:
        raise ConfigError("--cpus", f"{o.cpus}: must be between 1 and the host's {host_cpus}")
    memory = o.memory or DEFAULT_MEMORY
    host = host_memory_mib()
    if memory // MIB < MIN_MEMORY_MIB:
        raise ConfigError("--memory", f"{memory} bytes is too little for a VM (minimum "
                          f"{MIN_MEMORY_MIB} MiB)")
    if host and memory // MIB >= host:
        raise ConfigError("--memory", f"{memory // MIB} MiB is more memory than the host has "
                          f"({host} MiB)")
    if o.disk_size and o.disk_size < 256 * MIB:
        raise ConfigError("--disk-size", f"{o.disk_size} bytes: at least 256 MiB")


def check_disk(path: str) -> tuple[str, str]:
    """(resolved path, format) of a user's disk, refused if hostile (SECURITY.md 55/56)."""
    from isobox.vm.disk import check_user_disk

    if not os.path.isfile(path):
        raise ConfigError("--disk", f"{path}: no such file")
    try:
        info = check_user_disk(path)
    except IsoboxError as e:
        raise ConfigError("--disk", str(e)) from None
    return os.path.realpath(path), info.format


def _layer_path(engine: Engine, layers: list[str], rel: str) -> str | None:
    """``rel`` in the topmost layer holding it (whiteouts ignored: a best-effort check)."""
    for diff_id in reversed(layers):
        path = os.path.join(engine.store.layer_dir(diff_id), rel)
        if os.path.lexists(path):
            return path
    return None


def check_init(engine: Engine, image: str) -> None:
    """The image must have an init to boot; minbase Debian (before systemd-sysv) has none."""
    rec = engine.store.resolve(image)
    rel = INIT[0].lstrip("/")
    for _ in range(8):
        path = _layer_path(engine, list(rec.diff_ids), rel)
        if path is None:
            break
        if not os.path.islink(path):
            return
        target = os.readlink(path)
        rel = os.path.normpath(os.path.join(os.path.dirname(rel), target)
                               if not target.startswith("/") else target).lstrip("/")
    raise ConfigError("--image", f"{image}: has no {INIT[0]} to boot (a system VM boots its "
                      "image's init; `isobox image bootstrap debian:bookworm` includes "
                      "systemd-sysv)")


def _scratch_image(engine: Engine) -> str:
    """An empty untagged image: the engine record of a ``--disk`` VM needs one."""
    from isobox.oci import image as oci

    plat = oci.host_platform()
    config = {"architecture": plat.architecture, "os": plat.os,
              "config": {"Cmd": list(INIT)}, "created": "1970-01-01T00:00:00Z",
              "history": [{"created": "1970-01-01T00:00:00Z", "created_by": SCRATCH_COMMENT}],
              "rootfs": {"type": "layers", "diff_ids": []}}
    return engine.store.create_image(config, []).id


def create_system_vm(engine: Engine, o: SystemVMOptions) -> ContainerRow:
    """Check everything, then make the record, disk and bundle — all of it or none."""
    from isobox.engine.create import create_container
    from isobox.engine.remove import remove_container

    _check(o)
    disk: tuple[str, str] | None = None
    if o.disk:
        disk = check_disk(o.disk)
        for other in list_system_vms(engine):
            if (other.options.get("system_vm") or {}).get("disk") == disk[0]:
                raise ConfigError("--disk", f"{disk[0]} is the disk of VM {other.name}")
        image = _scratch_image(engine)
    else:
        image = o.image
        check_init(engine, image)
    memory = o.memory or DEFAULT_MEMORY
    from isobox.vm.runtime.machine import valid_hostname

    hostname = o.name if valid_hostname(o.name) and "." not in o.name else ""
    opts = CreateOptions(
        image=image, command=INIT, entrypoint=(), name=o.name, hostname=hostname,
        labels={SYSTEM_LABEL: "true"}, ports=o.ports, network=o.network,
        resources=Resources(memory=memory, nano_cpus=o.cpus * 1_000_000_000),
        isolation="vm", stop_signal="SIGTERM", stop_timeout=STOP_TIMEOUT,
        log_opts=dict(CONSOLE_LOG_OPTS))
    row = create_container(engine, opts)
    try:
        cdir = engine.layout.container_dir(row.id)
        notes = {SYSTEM_LABEL: "true", "org.isobox.vm.console-log": CONSOLE_TO_MONITOR}
        size = 0
        if disk is not None:
            notes["org.isobox.vm.disk"], notes["org.isobox.vm.disk-format"] = disk
            notes["org.isobox.vm.disk-user"] = "true"  # checked again at every start
            st = os.stat(disk[0])  # the very file: a later swap for another is refused
            notes["org.isobox.vm.disk-id"] = f"{st.st_dev}:{st.st_ino}"
            os.unlink(os.path.join(cdir, "disk.qcow2"))  # the empty image's overlay
        else:
            size = o.disk_size or DEFAULT_DISK_SIZE
            _grow(os.path.join(cdir, "disk.qcow2"), size)
        _edit_spec(engine, row.id, lambda spec: spec.setdefault("annotations", {}).update(notes))
        row.options["system_vm"] = {"disk": disk[0] if disk else os.path.join(cdir, "disk.qcow2"),
                                    "disk_format": disk[1] if disk else "qcow2",
                                    "disk_mode": "direct" if disk else "overlay",
                                    "disk_size": size, "image": o.image,
                                    "console_log": engine.layout.log_path(row.id)}
        engine.db.update(row.id, options=row.options)
    except BaseException:
        remove_container(engine, row.id, force=True)
        raise
    return row


def _grow(qcow2: str, size: int) -> None:
    """The overlay's virtual size up to ``size`` (never shrunk: the base must fit)."""
    import struct

    with open(qcow2, "rb") as f:  # our own overlay: the header's size field (offset 24)
        (current,) = struct.unpack(">Q", f.read(32)[24:32])
    if current >= size:
        return
    proc = subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", qcow2, str(size)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemSetupError(f"qemu-img resize {qcow2}: {proc.stderr.strip()[-300:]}")


def _edit_spec(engine: Engine, cid: str, change: Any) -> None:
    path = os.path.join(engine.layout.container_dir(cid), "config.json")
    with open(path) as f:
        spec = json.load(f)
    change(spec)
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(spec))
    os.rename(path + ".tmp", path)


# start: the user's disk is checked again (it may have been replaced since create) ---------
def start_system_vm(engine: Engine, ref: str) -> ContainerRow:
    from isobox.engine.start import start_container

    row = get_system_vm(engine, ref)
    info = row.options.get("system_vm") or {}
    if info.get("disk_mode") == "direct":
        check_disk(str(info["disk"]))
    start_container(engine, row.id)
    return engine.get(row.id)


# console ----------------------------------------------------------------------------------
def console_socket(engine: Engine, row: ContainerRow) -> str:
    from isobox.vm.runtime.create import CONSOLE_SOCKET

    return os.path.join(engine.layout.vm_runtime_root, row.id, CONSOLE_SOCKET)


def console_log(engine: Engine, row: ContainerRow) -> str:
    return str((row.options.get("system_vm") or {}).get("console_log") or
               os.path.join(engine.layout.container_dir(row.id), "console.log"))


# resize -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResizeResult:
    lines: tuple[str, ...]


def resize_system_vm(engine: Engine, ref: str, *, memory: int = 0, cpus: int = 0
                     ) -> ResizeResult:
    """New sizes for the next boot (bundle and record); memory also live through the balloon
    when the VM runs and the new size is at most its boot size. vCPUs are never live: the
    microvm machine has no CPU hotplug."""
    from isobox.vm.runtime.machine import MIN_MEMORY_MIB, host_memory_mib

    if not memory and not cpus:
        raise ConfigError("--memory/--cpus", "nothing to resize: give --memory or --cpus")
    row = get_system_vm(engine, ref)
    host_cpus = os.cpu_count() or 1
    if cpus and not 1 <= cpus <= host_cpus:
        raise ConfigError("--cpus", f"{cpus}: must be between 1 and the host's {host_cpus}")
    if memory:
        host = host_memory_mib()
        if memory // MIB < MIN_MEMORY_MIB or (host and memory // MIB >= host):
            raise ConfigError("--memory", f"{memory // MIB} MiB: must be at least "
                              f"{MIN_MEMORY_MIB} MiB and less than the host's {host} MiB")
    lines: list[str] = []
    with engine.locked(row.id) as row:
        res = dict(row.options.get("resources") or {})
        boot_memory = int(res.get("memory") or DEFAULT_MEMORY)
        running = row.status == "running"
        if memory:
            live = running and memory <= boot_memory
            if live:
                _balloon(engine, row, memory)
            res["memory"] = memory
            lines.append(f"memory: {memory // MIB} MiB "
                         + ("now (balloon) and at next boot" if live else
                            "at next boot" + (f" (a running VM cannot grow past its boot size "
                                              f"{boot_memory // MIB} MiB)" if running else "")))
        if cpus:
            res["nano_cpus"] = cpus * 1_000_000_000
            lines.append(f"cpus: {cpus} at next boot" +
                         (" (no vCPU hotplug on the microvm machine)" if running else ""))

        def apply(spec: dict[str, Any]) -> None:
            r = spec.setdefault("linux", {}).setdefault("resources", {})
            if memory:
                r.setdefault("memory", {})["limit"] = memory
            if cpus:
                r.setdefault("cpu", {}).update({"quota": cpus * 100_000, "period": 100_000})

        _edit_spec(engine, row.id, apply)
        row.options["resources"] = res
        engine.db.update(row.id, options=row.options)
    return ResizeResult(tuple(lines))


def _balloon(engine: Engine, row: ContainerRow, memory: int) -> None:
    from pathlib import Path

    from isobox.vm.qmp import QMPClient

    sock = os.path.join(engine.layout.vm_runtime_root, row.id, "qmp.sock")
    with QMPClient(Path(sock)) as qmp:
        qmp.execute("balloon", {"value": memory})


def balloon_actual(engine: Engine, row: ContainerRow) -> int:
    """The guest's current size as the balloon reports it (bytes; 0 when not running)."""
    from pathlib import Path

    from isobox.vm.qmp import QMPClient

    if row.status != "running":
        return 0
    sock = os.path.join(engine.layout.vm_runtime_root, row.id, "qmp.sock")
    try:
        with QMPClient(Path(sock)) as qmp:
            return int(qmp.execute("query-balloon").get("actual", 0))
    except (IsoboxError, OSError, AttributeError):
        return 0


# inspect ----------------------------------------------------------------------------------
def inspect_system_vm(engine: Engine, ref: str) -> dict[str, Any]:
    from isobox.engine.inspect import inspect_container

    row = get_system_vm(engine, ref)
    full = inspect_container(engine, row)
    info = row.options.get("system_vm") or {}
    res = row.options.get("resources") or {}
    return {
        "Id": row.id, "Name": row.name, "State": full.get("State", {}).get("Status"),
        "Cpus": int(res.get("nano_cpus") or 1_000_000_000) // 1_000_000_000,
        "MemoryMiB": int(res.get("memory") or DEFAULT_MEMORY) // MIB,
        "BalloonMiB": balloon_actual(engine, row) // MIB,
        "Image": info.get("image") or "",
        "Disk": {"Path": info.get("disk"), "Format": info.get("disk_format"),
                 "Mode": info.get("disk_mode"), "SizeBytes": info.get("disk_size")},
        "Console": {"Socket": console_socket(engine, row), "Log": console_log(engine, row)},
        "NetworkSettings": full.get("NetworkSettings"),
        "HostConfig": {"PortBindings": (full.get("HostConfig") or {}).get("PortBindings")},
    }
