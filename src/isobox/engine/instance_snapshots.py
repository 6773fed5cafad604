"""``snapshot create/ls/restore/rm``: local, named snapshots of one instance.

A VM's snapshots are internal to its qcow2 overlay (disk state, and with ``--memory`` the
running state: RAM and devices, ``savevm``); a container's are tars of its writable layer (the
overlay upper directory). Either way the engine keeps the list in
``<container dir>/snapshots/index.json`` (replaced atomically), next to the containers' tars, so
``rm`` of the instance takes its snapshots with it. Every operation holds the instance's lock;
on failure nothing is left half-made (an index entry is written only after the snapshot exists,
and removed before it is deleted).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from isobox.engine.state import ContainerRow
from isobox.engine.vm_guest import is_vm
from isobox.errors import ConfigError, ConflictError, NotFoundError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

# Docker's checkpoint names; never only digits (QEMU would also match a snapshot *id*).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SNAP_DIR = "snapshots"
INDEX = "index.json"


class MemorySnapshotUnavailable(SystemSetupError):
    """A container memory snapshot needs a CRIU this host does not have (CLI exit 125)."""


@dataclass(frozen=True)
class InstanceSnapshot:
    name: str
    created: float
    kind: str          # "vm" or "container"
    memory: bool
    size: int          # bytes: a VM's saved state + what its disk grew by; a container's tar

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_snapshot_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or name.isdigit():
        raise ConfigError("snapshot name", f"invalid snapshot name {name!r}: use 1-64 letters, "
                          "digits, '_', '.' or '-', starting with a letter or digit, and not "
                          "only digits")
    return name


def snapshot_dir(engine: Engine, cid: str) -> str:
    return os.path.join(engine.layout.container_dir(cid), SNAP_DIR)


# the index ---------------------------------------------------------------------------------
def read_index(engine: Engine, cid: str) -> list[InstanceSnapshot]:
    try:
        with open(os.path.join(snapshot_dir(engine, cid), INDEX)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return []
    except ValueError as e:
        raise SystemSetupError(f"{snapshot_dir(engine, cid)}/{INDEX}: corrupt: {e}") from None
    return [InstanceSnapshot(**d) for d in data]


def write_index(engine: Engine, cid: str, snaps: list[InstanceSnapshot]) -> None:
    from isobox.atomicfile import atomic_file

    d = snapshot_dir(engine, cid)
    os.makedirs(d, mode=0o700, exist_ok=True)
    with atomic_file(os.path.join(d, INDEX), 0o600) as f:
        f.write(json.dumps([s.to_dict() for s in snaps]).encode())


def _find(snaps: list[InstanceSnapshot], row: ContainerRow, name: str) -> InstanceSnapshot:
    for s in snaps:
        if s.name == name:
            return s
    raise NotFoundError(f"No such snapshot: {name} (instance {row.name})")


# the verbs ---------------------------------------------------------------------------------
def create_snapshot(engine: Engine, ref: str, name: str, *,
                    memory: bool = False) -> InstanceSnapshot:
    validate_snapshot_name(name)
    cid = engine.get(ref).id
    with engine.locked(cid) as row:
        snaps = read_index(engine, cid)
        if any(s.name == name for s in snaps):
            raise ConflictError(f'snapshot "{name}" of {row.name} already exists')
        if is_vm(row):
            from isobox.engine.snapshot_vm import vm_create, vm_delete

            size = vm_create(engine, row, name, memory=memory)
            undo: Callable[[Engine, ContainerRow, str], None] = vm_delete
        else:
            from isobox.engine.snapshot_fs import fs_create, fs_delete

            if memory:
                check_criu()
            size = fs_create(engine, row, name)
            undo = fs_delete
        snap = InstanceSnapshot(name, time.time(), "vm" if is_vm(row) else "container",
                                memory, size)
        try:
            write_index(engine, cid, [*snaps, snap])
        except BaseException:
            undo(engine, row, name)
            raise
        engine.event(row, "snapshot-create", snapshot=name)
    return snap


def list_snapshots(engine: Engine, ref: str) -> list[InstanceSnapshot]:
    row = engine.get(ref, reconcile=False)
    return sorted(read_index(engine, row.id), key=lambda s: s.created)


def restore_snapshot(engine: Engine, ref: str, name: str) -> InstanceSnapshot:
    """Back to ``name``. A VM: running + memory snapshot → loadvm; stopped → its disk reverted,
    or (memory snapshot) started from the saved state. A container must be stopped."""
    cid = engine.get(ref).id
    with engine.locked(cid) as row:
        snap = _find(read_index(engine, cid), row, name)
        if is_vm(row):
            from isobox.engine.snapshot_vm import vm_restore

            vm_restore(engine, row, snap)
        else:
            from isobox.engine.snapshot_fs import fs_restore

            fs_restore(engine, row, name)
        engine.event(row, "snapshot-restore", snapshot=name)
    return snap


def remove_snapshot(engine: Engine, ref: str, name: str) -> None:
    cid = engine.get(ref).id
    with engine.locked(cid) as row:
        snaps = read_index(engine, cid)
        _find(snaps, row, name)
        write_index(engine, cid, [s for s in snaps if s.name != name])
        try:
            if is_vm(row):
                from isobox.engine.snapshot_vm import vm_delete

                vm_delete(engine, row, name)
            else:
                from isobox.engine.snapshot_fs import fs_delete

                fs_delete(engine, row, name)
        except BaseException:
            write_index(engine, cid, snaps)  # still there: keep it listed
            raise
        engine.event(row, "snapshot-delete", snapshot=name)


def check_criu() -> None:
    """Container memory snapshots are CRIU checkpoints: refuse clearly where CRIU cannot."""
    from isobox.engine.info import CRIU_MIN, criu

    cap = criu()
    need = ".".join(map(str, CRIU_MIN))
    if not cap.usable:
        raise MemorySnapshotUnavailable(f"--memory for a container needs CRIU >= {need}: "
                                        f"{cap.reason}; a filesystem snapshot (without "
                                        "--memory) works")
    raise MemorySnapshotUnavailable(f"--memory for a container: CRIU {cap.version} is usable "
                                    "but isobox-runtime has no checkpoint support yet; a "
                                    "filesystem snapshot (without --memory) works")
