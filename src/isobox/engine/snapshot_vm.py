"""A VM's snapshots: internal snapshots of its qcow2 overlay (``disk.qcow2``).

Running VM (QMP on ``<run_dir>/vm/<id>/qmp.sock``): ``savevm`` for a memory snapshot (RAM,
devices and disk), ``blockdev-snapshot-internal-sync`` on node ``vda`` for a disk-only one
(crash-consistent: the guest is not asked to flush). Stopped VM: ``qemu-img snapshot``. A memory
snapshot restored on a stopped VM starts it with ``-loadvm`` (annotation
``org.isobox.vm.loadvm``, read by isobox-vm-runtime): the workload continues where it was.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isobox.engine.state import ContainerRow
from isobox.errors import ConflictError, IsoboxError, NotFoundError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.instance_snapshots import InstanceSnapshot
    from isobox.vm.runtime.state import VMState

NODE = "vda"
LOADVM = "org.isobox.vm.loadvm"
QMP_TIMEOUT = 300.0  # savevm writes all guest RAM; generous under TCG on a busy host
USABLE = ("created", "exited", "running", "paused")


def disk_path(engine: Engine, row: ContainerRow) -> str:
    from isobox.engine.vm_disk import DISK_NAME

    system = row.options.get("system_vm") or {}
    if system.get("disk_mode") == "direct":
        raise ConflictError(f"cannot snapshot {row.name}: it runs on your own disk "
                            f"{system.get('disk')} (vm create --disk); snapshots live in "
                            "isobox's own overlays (vm create --image)")
    return os.path.join(engine.layout.container_dir(row.id), DISK_NAME)


def live_state(engine: Engine, row: ContainerRow) -> VMState | None:
    """The running QEMU's state, or None when the VM is stopped."""
    if row.status not in USABLE:
        raise ConflictError(f"cannot snapshot {row.name}: the VM is {row.status}")
    if row.status not in ("running", "paused"):
        return None
    from isobox.vm.runtime.state import VMStore

    try:
        st = VMStore(engine.layout.vm_runtime_root).load(row.id)
    except NotFoundError:
        return None
    return st if st.alive() else None


def image_opts(disk: str) -> str:
    """``--image-opts`` naming the format explicitly (never probed)."""
    return f"driver=qcow2,file.driver=file,file.filename={disk.replace(',', ',,')}"


def qemu_img(*args: str) -> str:
    try:
        p = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=600,
                           check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemSetupError(f"qemu-img {args[0]}: {e}") from None
    if p.returncode != 0:
        raise SystemSetupError(f"qemu-img {' '.join(args[:2])}: "
                               f"{p.stderr.strip() or p.returncode}")
    return p.stdout


def qcow2_snapshots(disk: str) -> dict[str, dict[str, Any]]:
    """The overlay's internal snapshots by name (``-U``: readable while QEMU has it open)."""
    info = json.loads(qemu_img("info", "-U", "--output=json", "--image-opts", image_opts(disk)))
    return {str(s["name"]): s for s in info.get("snapshots") or []}


def qmp(st: VMState, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    from isobox.vm.qmp import QMPClient

    with QMPClient(Path(st.qmp_socket), timeout=QMP_TIMEOUT) as q:
        return q.execute(cmd, args)


def hmp(st: VMState, command: str) -> None:
    """An HMP command (savevm/loadvm have no synchronous QMP twin): HMP reports failure as
    text, not as a QMP error."""
    out = str(qmp(st, "human-monitor-command", {"command-line": command}).get("return", ""))
    if "rror" in out:
        raise SystemSetupError(f"{command}: {out.strip()}")


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def vm_create(engine: Engine, row: ContainerRow, name: str, *, memory: bool) -> int:
    """Take snapshot ``name``; returns its size (saved VM state, or what the disk grew by)."""
    disk = disk_path(engine, row)
    st = live_state(engine, row)
    if memory and st is None:
        raise ConflictError(f"cannot take a memory snapshot of {row.name}: the VM is not "
                            "running (without --memory a disk snapshot is taken)")
    if name in qcow2_snapshots(disk):  # debris of an interrupted create: no index entry
        vm_delete(engine, row, name)
    before = allocated(disk)
    if st is not None and memory:
        hmp(st, f"savevm {name}")
    elif st is not None:
        qmp(st, "blockdev-snapshot-internal-sync", {"device": NODE, "name": name})
    else:
        qemu_img("snapshot", "-q", "--image-opts", "-c", name, image_opts(disk))
    try:
        made = qcow2_snapshots(disk).get(name)
        if made is None:
            raise SystemSetupError(f"snapshot {name} of {row.name}: QEMU reported success but "
                                   f"{disk} has no such snapshot")
    except BaseException:
        vm_delete(engine, row, name)
        raise
    if memory:
        return int(made.get("vm-state-size") or 0)
    return max(0, allocated(disk) - before)


def vm_delete(engine: Engine, row: ContainerRow, name: str) -> None:
    disk = disk_path(engine, row)
    if name not in qcow2_snapshots(disk):
        return
    st = live_state(engine, row)
    if st is not None:
        qmp(st, "blockdev-snapshot-delete-internal-sync", {"device": NODE, "name": name})
    else:
        qemu_img("snapshot", "-q", "--image-opts", "-d", name, image_opts(disk))


def vm_restore(engine: Engine, row: ContainerRow, snap: InstanceSnapshot) -> None:
    disk = disk_path(engine, row)
    if snap.name not in qcow2_snapshots(disk):
        raise NotFoundError(f"snapshot {snap.name} of {row.name} is listed but {disk} no "
                            "longer has it")
    st = live_state(engine, row)
    if st is not None:
        if not snap.memory:
            raise ConflictError(f"cannot restore disk snapshot {snap.name} of running VM "
                                f"{row.name}: stop it first (only a --memory snapshot can "
                                "replace a running VM's state)")
        hmp(st, f"loadvm {snap.name}")
    elif snap.memory:
        start_from(engine, row, snap.name)
    else:
        qemu_img("snapshot", "-q", "--image-opts", "-a", snap.name, image_opts(disk))


def start_from(engine: Engine, row: ContainerRow, name: str) -> None:
    """Start the stopped VM from memory snapshot ``name`` (QEMU ``-loadvm``)."""
    start_once_with(engine, row, {LOADVM: name}, f"from snapshot {name}")


def start_once_with(engine: Engine, row: ContainerRow, notes: dict[str, str],
                    what: str) -> None:
    """Start the stopped VM with extra bundle annotations that hold for this start only, so a
    later start boots normally. The caller holds the VM's lock."""
    from isobox.engine.start import start_locked

    config = os.path.join(engine.layout.container_dir(row.id), "config.json")
    _set_annotations(config, notes)
    try:
        start_locked(engine, engine.reload(row.id), once=True)
    except IsoboxError as e:
        raise SystemSetupError(f"cannot start {row.name} {what}: {e}") from None
    finally:
        _set_annotations(config, dict.fromkeys(notes))


ONCE_ANNOTATIONS = (LOADVM, "org.isobox.vm.incoming", "org.isobox.vm.incoming-offset",
                    "org.isobox.vm.incoming-sha256")


def clear_once_annotations(engine: Engine, row: ContainerRow) -> None:
    """Drop start-once annotations an interrupted :func:`start_once_with` left behind: a
    normal start must boot, not load a saved memory onto a disk that was not reverted."""
    config = os.path.join(engine.layout.container_dir(row.id), "config.json")
    with open(config) as f:
        notes = json.load(f).get("annotations") or {}
    if any(k in notes for k in ONCE_ANNOTATIONS):
        _set_annotations(config, dict.fromkeys(ONCE_ANNOTATIONS))


def _set_annotations(config_path: str, notes: Mapping[str, str | None]) -> None:
    """Set (or with None, remove) bundle annotations."""
    from isobox.atomicfile import atomic_file

    with open(config_path) as f:
        config = json.load(f)
    current = config.setdefault("annotations", {})
    for key, value in notes.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    with atomic_file(config_path, 0o644) as f:
        f.write(json.dumps(config).encode())
