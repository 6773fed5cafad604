"""Writable root filesystems for containers and build steps: an overlayfs mount whose lower
layers are the image's unpacked layers (shared, read-only) and whose upper and work directories
belong to the snapshot alone.

    snapshots/<id>/upper   the snapshot's changes, overlay format (whiteouts: char 0:0)
    snapshots/<id>/work    overlayfs scratch
    snapshots/<id>/rootfs  the mount point
    snapshots/<id>/empty   the lower of an image without layers (``FROM scratch``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from isobox.errors import ConfigError, ConflictError, NotFoundError, SystemSetupError
from isobox.images.store import ImageStore, remove_tree
from isobox.oci.ids import validate_container_id

MNT_DETACH = 2
_PAGE = 4096


@dataclass(frozen=True)
class Snapshot:
    id: str
    path: str
    image_id: str | None
    layers: tuple[str, ...]

    @property
    def rootfs(self) -> str:
        return os.path.join(self.path, "rootfs")

    @property
    def upper(self) -> str:
        return os.path.join(self.path, "upper")


class Snapshots:
    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def _dir(self, snap_id: str) -> str:
        try:
            validate_container_id(snap_id)
        except ConfigError as e:
            raise ConfigError("snapshot id", e.message) from None
        return os.path.join(self.store.snapshot_root, snap_id)

    def create(self, snap_id: str, *, image_id: str | None = None,
               layers: list[str] | None = None, kind: str = "container",
               mount: bool = True) -> Snapshot:
        """A new snapshot on top of ``image_id``'s layers (or an explicit list, lowest first)."""
        path = self._dir(snap_id)
        if image_id is not None and layers is None:
            layers = self.store.get(image_id).diff_ids
        layers = list(layers or [])
        for diff_id in layers:
            if not self.store.has_layer(diff_id):
                raise NotFoundError(f"layer {diff_id} is not in the store")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise ConflictError(f"snapshot {snap_id} already exists") from None
        try:
            for sub in ("upper", "work", "rootfs", "empty"):
                os.mkdir(os.path.join(path, sub), 0o755)
            self.store.db.add_snapshot(snap_id, image_id, layers, kind)
        except BaseException:
            remove_tree(path)
            raise
        snap = Snapshot(snap_id, path, image_id, tuple(layers))
        if mount:
            try:
                self.mount(snap)
            except BaseException:
                self.remove(snap_id)
                raise
        return snap

    def get(self, snap_id: str) -> Snapshot:
        row = self.store.db.snapshot(snap_id)
        if row is None:
            raise NotFoundError(f"no such snapshot: {snap_id}")
        return Snapshot(snap_id, self._dir(snap_id), row["image_id"], tuple(row["layers"]))

    def all(self) -> list[Snapshot]:
        return [self.get(s["id"]) for s in self.store.db.snapshots()]

    def lowerdirs(self, snap: Snapshot) -> list[str]:
        """Lower directories, top-most first (overlayfs order)."""
        if not snap.layers:
            return [os.path.join(snap.path, "empty")]
        return [self.store.layer_dir(d) for d in reversed(snap.layers)]

    def mount(self, snap: Snapshot) -> None:
        from isobox.linux.syscalls import mount

        if os.path.ismount(snap.rootfs):
            return
        lowers = self.lowerdirs(snap)
        # Layers named through an fd of the layer root keep the option string short (about 80
        # bytes a layer, under one page for ~45 layers) without chdir, which is process-wide.
        rootfd = os.open(self.store.layer_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            base = f"/proc/self/fd/{rootfd}/"
            names = [base + os.path.relpath(d, self.store.layer_root) if
                     d.startswith(self.store.layer_root + "/") else d for d in lowers]
            opts = (f"lowerdir={':'.join(names)},upperdir={snap.upper},"
                    f"workdir={os.path.join(snap.path, 'work')},index=off,redirect_dir=off")
            if len(opts) >= _PAGE:
                raise SystemSetupError(f"snapshot {snap.id}: {len(lowers)} layers are more "
                                       f"than one overlay mount can stack")
            mount("overlay", snap.rootfs, "overlay", 0, opts)
        finally:
            os.close(rootfd)

    def unmount(self, snap: Snapshot) -> None:
        from isobox.linux.syscalls import umount2

        while os.path.ismount(snap.rootfs):
            umount2(snap.rootfs, MNT_DETACH)

    def remove(self, snap_id: str) -> None:
        path = self._dir(snap_id)
        rootfs = os.path.join(path, "rootfs")
        if os.path.isdir(rootfs):
            from isobox.linux.syscalls import umount2

            while os.path.ismount(rootfs):
                umount2(rootfs, MNT_DETACH)
        remove_tree(path)
        self.store.db.delete_snapshot(snap_id)

    def diff(self, snap_id: str, out: BinaryIO, compression: str = "gzip") -> object:
        """Write the snapshot's changes as an OCI layer (whiteouts translated back)."""
        from isobox.images.layertar import write_layer

        snap = self.get(snap_id)
        return write_layer(snap.upper, out, source="overlay-upper",
                           compression="gzip" if compression == "gzip" else "none")

    def size(self, snap_id: str) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.get(snap_id).upper):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        return total
