"""``isobox vm save NAME FILE`` / ``vm restore FILE``: suspend a system VM to a file and resume it.

The file: a line ``ISOBOX-VM-STATE 1``, a JSON line (the VM's id and name, when, a token), then
QEMU's migration stream (RAM and device state), written by ``migrate`` to a descriptor passed
over QMP (``-sandbox spawn=deny`` rules out ``exec:``). The disk is not in the file: in the same
paused instant, save takes a disk snapshot internal to the VM's overlay
(``_isobox-save-<token>``; user snapshot names cannot start with ``_``) and restore reverts the
disk to it, so the memory always meets the disk it was saved with, even if the VM booted in
between. The record keeps the latest save (token, the stream's sha256); restore loads only that
file, verified again by the runtime through the descriptor QEMU reads (QEMU's loader is not made
for hostile input).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isobox.errors import ConfigError, ConflictError, IsoboxError, NotFoundError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.state import ContainerRow
    from isobox.vm.qmp import QMPClient

MAGIC = b"ISOBOX-VM-STATE 1\n"
MAX_HEADER = 4096
SAVE_PREFIX = "_isobox-save-"
FD_NAME = "isobox-save"
MIGRATE_TIMEOUT = 900.0  # all guest RAM through TCG's QEMU on a busy host
INCOMING = "org.isobox.vm.incoming"
# QEMU's default migration bandwidth cap (32 MiB/s) is for live migration over a network
UNLIMITED_BANDWIDTH = 1 << 40


@dataclass(frozen=True)
class SaveResult:
    path: str
    size: int
    seconds: float


def save_vm(engine: Engine, ref: str, path: str) -> SaveResult:
    """Write the running VM's state to ``path`` and stop the VM."""
    from isobox.engine.exits import handle_exit
    from isobox.engine.snapshot_vm import disk_path, live_state
    from isobox.engine.stop import kill_locked, wait_exit
    from isobox.engine.system_vm import get_system_vm

    dest = os.path.abspath(path)
    if os.path.isdir(dest):
        raise ConfigError("FILE", f"{dest}: is a directory")
    if not os.path.isdir(os.path.dirname(dest)):
        raise ConfigError("FILE", f"{os.path.dirname(dest)}: no such directory")
    row = get_system_vm(engine, ref)
    t0 = time.monotonic()
    with engine.locked(row.id) as row:
        if row.status not in ("running", "paused"):
            raise ConflictError(f"cannot save {row.name}: the VM is {row.status} (vm save "
                                "suspends a running VM)")
        disk_path(engine, row)  # refuses a VM on the user's own disk: no place for the snapshot
        st = live_state(engine, row)
        if st is None:
            raise ConflictError(f"cannot save {row.name}: its QEMU is not running")
        token = secrets.token_hex(8)
        header = {"id": row.id, "name": row.name, "token": token,
                  "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        digest, offset = _write_state(Path(st.qmp_socket), dest, header,
                                      resume=row.status == "running")
        previous = (row.options.get("saved_state") or {}).get("snapshot")
        row.options["saved_state"] = {"file": dest, "token": token, "sha256": digest,
                                      "offset": offset, "snapshot": SAVE_PREFIX + token,
                                      "saved": header["saved"], "shape": _shape(row)}
        engine.db.update(row.id, options=row.options, manually_stopped=1)
        # QEMU, paused after the migration, goes before anyone else gets the lock
        kill_locked(engine, row, "KILL")
        wait_exit(engine, row, 30.0)
    handle_exit(engine, row.id, restart_allowed=False)
    if previous:
        _drop_snapshot(engine, engine.reload(row.id), str(previous))
    engine.event(row, "save", file=dest)
    return SaveResult(dest, os.path.getsize(dest), time.monotonic() - t0)


def _write_state(qmp_socket: Path, dest: str, header: dict[str, str], *,
                 resume: bool) -> tuple[str, int]:
    """Pause, snapshot the disk, migrate into a new file beside ``dest`` and move it there.
    On failure the VM runs on as before and nothing is left. Returns (sha256, stream offset)."""
    from isobox.engine.snapshot_vm import NODE
    from isobox.vm.qmp import QMPClient

    snapshot = SAVE_PREFIX + header["token"]
    tmp = f"{dest}.{header['token']}.tmp"
    head = MAGIC + json.dumps(header).encode() + b"\n"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, head)
        with QMPClient(qmp_socket, timeout=60.0) as q:
            if resume:
                q.execute("stop")
            snapped = False
            try:
                q.execute("blockdev-snapshot-internal-sync", {"device": NODE, "name": snapshot})
                snapped = True
                q.send_fd(fd, FD_NAME)
                q.execute("migrate-set-parameters", {"max-bandwidth": UNLIMITED_BANDWIDTH})
                q.execute("migrate", {"uri": f"fd:{FD_NAME}"})
                _wait_migrated(q)
                os.fsync(fd)
                digest = _stream_sha256(fd, len(head))
                os.rename(tmp, dest)
            except BaseException:
                _undo(q, snapshot if snapped else "", resume)
                raise
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(fd)
    return digest, len(head)


def _wait_migrated(q: QMPClient) -> None:
    deadline = time.monotonic() + MIGRATE_TIMEOUT
    delay = 0.01
    while True:
        info = q.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise SystemSetupError(f"saving the VM's state failed: "
                                   f"{info.get('error-desc') or status}")
        if time.monotonic() > deadline:
            raise SystemSetupError(f"saving the VM's state took more than "
                                   f"{MIGRATE_TIMEOUT:.0f} s; cancelled")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


ACTIVE_MIGRATION = ("setup", "active", "cancelling", "pre-switchover", "device")


def _undo(q: QMPClient, snapshot: str, resume: bool) -> None:
    """Back to before the save: the migration cancelled and ended, QEMU's copy of our fd
    closed, the vCPUs running again (which also takes the disks back from a completed
    migration), then the save's disk snapshot deleted. Best effort: QEMU may be gone."""
    from isobox.engine.snapshot_vm import NODE

    def quietly(cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return q.execute(cmd, args)
        except IsoboxError:
            return {}

    quietly("migrate_cancel")
    deadline = time.monotonic() + 30
    while quietly("query-migrate").get("status") in ACTIVE_MIGRATION \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    quietly("closefd", {"fdname": FD_NAME})
    if resume:
        quietly("cont")
    if snapshot:
        quietly("blockdev-snapshot-delete-internal-sync", {"device": NODE, "name": snapshot})


def _shape(row: ContainerRow) -> dict[str, int]:
    """What a saved state must be loaded into: the same guest memory and vCPUs."""
    from isobox.engine.system_vm import DEFAULT_MEMORY

    res = row.options.get("resources") or {}
    return {"memory": int(res.get("memory") or DEFAULT_MEMORY),
            "cpus": int(res.get("nano_cpus") or 1_000_000_000) // 1_000_000_000}


def _stream_sha256(fd: int, offset: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, offset, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _drop_snapshot(engine: Engine, row: ContainerRow, name: str) -> None:
    from isobox.engine.snapshot_vm import vm_delete

    try:
        vm_delete(engine, row, name)
    except IsoboxError:
        pass  # a stale save snapshot costs disk space only; the next save retries


# restore ----------------------------------------------------------------------------------
def read_header(path: str) -> tuple[dict[str, Any], int]:
    """The state file's header and where QEMU's stream starts in it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + MAX_HEADER)
    except FileNotFoundError:
        raise ConfigError("FILE", f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError("FILE", f"{path}: is a directory") from None
    except OSError as e:
        raise ConfigError("FILE", f"{path}: {e.strerror}") from None
    end = head.find(b"\n", len(MAGIC))
    if not head.startswith(MAGIC) or end < 0:
        raise ConfigError("FILE", f"{path}: not a VM state file written by `isobox vm save`")
    try:
        header = json.loads(head[len(MAGIC):end])
    except ValueError:
        header = None
    if not isinstance(header, dict) or not all(isinstance(header.get(k), str)
                                               for k in ("id", "name", "token")):
        raise ConfigError("FILE", f"{path}: its header is damaged")
    return header, end + 1


def restore_vm(engine: Engine, path: str) -> ContainerRow:
    """Start the VM ``path`` was saved from, with that state (and its disk as it was then)."""
    from isobox.engine.snapshot_vm import (
        disk_path,
        image_opts,
        qcow2_snapshots,
        qemu_img,
        start_once_with,
    )
    from isobox.engine.system_vm import get_system_vm

    src = os.path.abspath(path)
    header, offset = read_header(src)
    try:
        row = get_system_vm(engine, header["id"])
    except NotFoundError:
        raise NotFoundError(f"{src}: the VM it was saved from ({header['name']}, "
                            f"{header['id'][:12]}) no longer exists") from None
    with engine.locked(row.id) as row:
        if row.status in ("running", "paused", "restarting"):
            raise ConflictError(f"cannot restore {row.name}: the VM is {row.status}; stop it "
                                "first (restore replaces its state)")
        saved = row.options.get("saved_state") or {}
        if saved.get("token") != header["token"] or int(saved.get("offset", -1)) != offset:
            raise ConflictError(f"{src} is not the latest state saved for VM {row.name}"
                                + (f" (that is {saved.get('file')}, saved {saved.get('saved')})"
                                   if saved else " (it has none)"))
        if saved.get("shape") not in (None, _shape(row)):  # QEMU could not load it
            then, now = saved["shape"], _shape(row)
            raise ConflictError(f"cannot restore {row.name}: it was resized since the save "
                                f"(saved with {then['memory'] >> 20} MiB and {then['cpus']} "
                                f"vCPUs, now {now['memory'] >> 20} MiB and {now['cpus']}); "
                                "resize it back first")
        with open(src, "rb") as f:
            if _stream_sha256(f.fileno(), offset) != saved.get("sha256"):
                raise ConflictError(f"{src}: the saved state changed since it was written (its "
                                    "sha256 does not match the one recorded at save); refusing")
        disk = disk_path(engine, row)
        snapshot = str(saved.get("snapshot"))
        if snapshot not in qcow2_snapshots(disk):
            raise NotFoundError(f"the disk state saved with {src} is gone from {disk}")
        qemu_img("snapshot", "-q", "--image-opts", "-a", snapshot, image_opts(disk))
        start_once_with(engine, row, {INCOMING: src, INCOMING + "-offset": str(offset),
                                      INCOMING + "-sha256": str(saved["sha256"])},
                        f"from {src}")
    engine.event(row, "restore", file=src)
    return engine.get(row.id)
