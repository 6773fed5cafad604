"""The engine: the one object the CLI and the API talk to for containers.

Daemonless: every ``isobox`` process builds its own :class:`Engine` over the same state on
disk. Operations on one container are serialised by an ``flock`` on its directory; the state
store is SQLite in WAL mode. Before answering a question about a container, the engine
reconciles its record with reality (a monitor that died, a run directory that was cleared by
a reboot), so no command ever shows a container as running when it is not.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from isobox.engine.layout import Layout
from isobox.engine.runtime_client import VM_RUNTIME, RuntimeClient, runtime_client, runtime_path
from isobox.engine.state import ContainerDB, ContainerRow
from isobox.errors import NotFoundError

if TYPE_CHECKING:
    from isobox.engine.volumes import VolumeStore
    from isobox.images.snapshots import Snapshots
    from isobox.images.store import ImageStore
    from isobox.network.manager import NetworkManager

ACTIVE = ("running", "paused", "restarting")


class Engine:
    def __init__(self, root: str, *, store: ImageStore | None = None) -> None:
        self.layout = Layout.for_root(root)
        self.layout.ensure()
        self.db = ContainerDB(self.layout.db_path)
        self._store = store
        self._own_store = store is None

    def close(self) -> None:
        self.db.close()
        if self._own_store and self._store is not None:
            self._store.close()

    # collaborators, opened on first use (most commands need few of them) ------------------
    @property
    def store(self) -> ImageStore:
        if self._store is None:
            from isobox.images.store import ImageStore

            self._store = ImageStore(self.layout.root)
        return self._store

    @cached_property
    def snapshots(self) -> Snapshots:
        from isobox.images.snapshots import Snapshots

        return Snapshots(self.store)

    @cached_property
    def networks(self) -> NetworkManager:
        from isobox.network.manager import NetworkManager

        return NetworkManager(self.layout.network_state,
                              **network_settings(self.layout.network_state))

    @cached_property
    def volumes(self) -> VolumeStore:
        from isobox.engine.volumes import VolumeStore

        return VolumeStore(self.layout.root)

    def runtime(self, row: ContainerRow) -> RuntimeClient:
        if row.options.get("isolation") == "vm":
            return RuntimeClient(runtime_path(VM_RUNTIME), self.runtime_state_root(row))
        return runtime_client(str(row.options.get("runtime") or ""),
                              self.runtime_state_root(row))

    def runtime_state_root(self, row: ContainerRow) -> str:
        """The ``--root`` the container's runtime keeps its state under."""
        if row.options.get("isolation") == "vm":
            return self.layout.vm_runtime_root
        return self.layout.runtime_root

    # lookup ---------------------------------------------------------------------------------
    def get(self, ref: str, *, reconcile: bool = True) -> ContainerRow:
        row = self.db.resolve(ref)
        if reconcile and row.status in ACTIVE:
            from isobox.engine.exits import reconcile_row

            row = reconcile_row(self, row)
        return row

    def list(self, *, reconcile: bool = True) -> list[ContainerRow]:
        rows = self.db.all()
        if not reconcile:
            return rows
        from isobox.engine.exits import reconcile_row

        return [reconcile_row(self, r) if r.status in ACTIVE else r for r in rows]

    def reload(self, cid: str) -> ContainerRow:
        row = self.db.get(cid)
        if row is None:
            raise NotFoundError(f"No such container: {cid}")
        return row

    @contextmanager
    def locked(self, cid: str) -> Iterator[ContainerRow]:
        """Hold the container's lock; yields its current record (NotFoundError if it went)."""
        path = self.layout.container_dir(cid)
        made = False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.reload(cid)  # a record without its directory: debris of a killed create
            os.makedirs(path, mode=0o711, exist_ok=True)
            made = True
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                row = self.reload(cid)
            except NotFoundError:
                if made:  # removed meanwhile: take back the directory made for the lock
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
                raise
            yield row
        finally:
            os.close(fd)
            if made and self.db.get(cid) is None:  # removed while we held our stand-in
                try:
                    os.rmdir(path)
                except OSError:
                    pass

    def effective_status(self, row: ContainerRow) -> str:
        """``creating`` whose creator died is ``dead`` (debris that ``system prune`` removes)."""
        if row.status == "creating" and not pid_alive(row.creator_pid):
            return "dead"
        return row.status

    def event(self, row: ContainerRow, action: str, **extra: str) -> None:
        attrs = {"name": row.name, "image": row.image_ref, **extra}
        labels = row.options.get("labels") or {}
        attrs.update({k: str(v) for k, v in labels.items() if k not in attrs})
        self.db.add_event("container", action, row.id, attrs)


PREFIX_FILE = "names-prefix"


def network_settings(state_dir: str) -> dict[str, str]:
    """Bridge and nft-table names. ``ISOBOX_NET_PREFIX`` (tests, benchmarks) replaces
    ``isobox0`` and the ``isobox`` table so they never touch a real installation's. The prefix
    belongs to the root, not to a process's environment: it is recorded in the root's network
    state on first use and read from there by every process, the exit and health hooks and
    ``system boot`` included, which conmon and systemd start without the variable."""
    path = os.path.join(state_dir, PREFIX_FILE)
    wanted = os.environ.get("ISOBOX_NET_PREFIX", "")
    try:
        with open(path) as f:
            prefix = f.read().strip()
    except FileNotFoundError:  # a root whose networks exist already has the default names
        fresh = not os.path.exists(os.path.join(state_dir, "networks.json"))
        prefix = _record_prefix(path, wanted) if wanted and fresh else ""
    if wanted and wanted != prefix:
        from isobox.errors import ConfigError

        raise ConfigError("ISOBOX_NET_PREFIX", f"{wanted!r}: the networks of this root are "
                          f"named with {prefix or 'the default names'!r} ({path})")
    if not prefix:
        return {}
    return {"bridge_prefix": prefix, "nft_table": prefix, "default_bridge": f"{prefix}0"}


def _record_prefix(path: str, prefix: str) -> str:
    """Write ``prefix`` to ``path`` unless another process did first; the one recorded."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(prefix + "\n")
    try:
        os.link(tmp, path)  # exclusive and atomic: a racing writer's EEXIST reads ours
    except FileExistsError:
        with open(path) as f:
            prefix = f.read().strip()
    finally:
        os.unlink(tmp)
    return prefix


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
