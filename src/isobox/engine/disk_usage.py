"""``system df``: the disk used by images, containers, volumes and the build cache, per
object (``GET /system/df``, ``system df -v``) and summed per type (``system df``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from isobox.engine.filters import rfc3339_time

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.state import ContainerRow
    from isobox.engine.volumes import VolumeInfo

LIVE = ("running", "paused", "restarting")
TYPES = ("images", "containers", "volumes", "build-cache")


@dataclass(frozen=True)
class ImageUsage:
    id: str
    tags: tuple[str, ...]
    digests: tuple[str, ...]
    created: int
    size: int
    shared_size: int                 # bytes of its layers other images use as well
    labels: dict[str, str]
    containers: int


@dataclass(frozen=True)
class ContainerUsage:
    row: ContainerRow
    status: str
    size_rw: int
    size_rootfs: int


@dataclass(frozen=True)
class VolumeUsage:
    info: VolumeInfo
    size: int
    ref_count: int


@dataclass
class DiskUsage:
    layers_size: int = 0
    images_reclaimable: int = 0
    images: list[ImageUsage] = field(default_factory=list)
    containers: list[ContainerUsage] = field(default_factory=list)
    volumes: list[VolumeUsage] = field(default_factory=list)
    build_cache: int = 0             # entries of the classic builder's step cache

    def summary(self) -> list[dict[str, Any]]:
        """One row per type, as ``docker system df`` prints them."""
        c_size = sum(c.size_rw for c in self.containers)
        return [
            {"Type": "Images", "TotalCount": len(self.images),
             "Active": sum(1 for i in self.images if i.containers), "Size": self.layers_size,
             "Reclaimable": self.images_reclaimable},
            {"Type": "Containers", "TotalCount": len(self.containers),
             "Active": sum(1 for c in self.containers if c.status in LIVE), "Size": c_size,
             "Reclaimable": sum(c.size_rw for c in self.containers if c.status not in LIVE)},
            {"Type": "Local Volumes", "TotalCount": len(self.volumes),
             "Active": sum(1 for v in self.volumes if v.ref_count),
             "Size": sum(v.size for v in self.volumes),
             "Reclaimable": sum(v.size for v in self.volumes if not v.ref_count)},
            {"Type": "Build Cache", "TotalCount": self.build_cache, "Active": 0, "Size": 0,
             "Reclaimable": 0},
        ]


def disk_usage(engine: Engine, types: tuple[str, ...] = TYPES) -> DiskUsage:
    """Measure the ``types`` asked for (container and volume sizes walk their trees)."""
    out = DiskUsage()
    rows = engine.list()
    if "images" in types or "build-cache" in types:
        figures = engine.store.disk_usage()
        out.layers_size = int(figures["size"])
        out.images_reclaimable = int(figures["reclaimable"])
        out.build_cache = int(figures["build_cache"])
    if "images" in types:
        out.images = _images(engine, rows)
    if "containers" in types:
        out.containers = [_container(engine, r) for r in rows]
    if "volumes" in types:
        from isobox.engine.volume_use import volume_users
        from isobox.engine.volumes import tree_size

        users = volume_users(engine)
        out.volumes = [VolumeUsage(v, tree_size(v.mountpoint), len(users.get(v.name, [])))
                       for v in engine.volumes.list()]
    return out


def _images(engine: Engine, rows: list[ContainerRow]) -> list[ImageUsage]:
    from isobox.images.inspect import familiar

    store = engine.store
    records = store.images()
    sizes = store.db.layer_sizes()
    users: dict[str, int] = {}
    for rec in records:
        for d in set(rec.diff_ids):
            users[d] = users.get(d, 0) + 1
    per_image: dict[str, int] = {}
    for r in rows:
        per_image[r.image_id] = per_image.get(r.image_id, 0) + 1
    out = []
    for rec in records:
        shared = sum(sizes.get(d, 0) for d in set(rec.diff_ids) if users[d] > 1)
        labels = rec.config.config.get("Labels") or {}
        out.append(ImageUsage(
            id=rec.id, tags=tuple(familiar(t) for t in rec.tags),
            digests=tuple(familiar(d) for d in rec.repo_digests),
            created=int(rfc3339_time(rec.created) or 0), size=rec.size, shared_size=shared,
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict)
            else {}, containers=per_image.get(rec.id, 0)))
    return out


def _container(engine: Engine, row: ContainerRow) -> ContainerUsage:
    from isobox.engine.inspect import container_sizes

    rw, rootfs = container_sizes(engine, row)
    return ContainerUsage(row, engine.effective_status(row), rw, rootfs)
