"""``system prune``: remove stopped containers (and the debris of killed creates), unused user
networks, dangling (or, with ``all_images``, all unused) images and, with ``volumes``, unused
anonymous volumes; then drop network state of containers that no longer exist."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from isobox.errors import IsoboxError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

PRUNABLE = ("created", "exited", "dead", "removing")


@dataclass
class PruneReport:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    space_reclaimed: int = 0
    errors: list[str] = field(default_factory=list)


def prune_containers(engine: Engine, report: PruneReport) -> None:
    from isobox.engine.remove import remove_container

    for row in engine.list():
        if engine.effective_status(row) not in PRUNABLE:
            continue
        try:
            size = engine.snapshots.size(row.id)
        except (IsoboxError, OSError):
            size = 0
        try:
            remove_container(engine, row.id, force=True, volumes=False)
        except IsoboxError as e:
            report.errors.append(f"container {row.id[:12]}: {e}")
            continue
        report.containers.append(row.id)
        report.space_reclaimed += size
    _prune_orphan_dirs(engine)


def _prune_orphan_dirs(engine: Engine) -> None:
    """Container directories without a record: left by an `rm` killed after the record went
    (a record is always inserted before its directory is made, so none is in use)."""
    import os

    from isobox.images.store import remove_tree

    try:
        names = os.listdir(engine.layout.containers_dir)
    except OSError:
        return
    for name in names:
        if len(name) == 64 and engine.db.get(name) is None:
            remove_tree(engine.layout.container_dir(name))


def prune_networks(engine: Engine, report: PruneReport) -> None:
    """User networks no remaining container names (Docker keeps only those in use)."""
    rows = engine.db.all()
    engine.networks.cleanup_stale({r.id for r in rows})
    wanted = {str(r.options.get("network") or "") for r in rows}
    for net in engine.networks.list():
        if net.predefined or net.name in wanted or net.containers:
            continue
        try:
            engine.networks.remove(net.name)
        except IsoboxError as e:
            report.errors.append(f"network {net.name}: {e}")
            continue
        report.networks.append(net.name)


def prune_volumes(engine: Engine, report: PruneReport) -> None:
    in_use: set[str] = set()
    for row in engine.db.all():
        for m in row.options.get("mounts_resolved") or []:
            if m.get("type") == "volume" and m.get("source"):
                in_use.add(str(m["source"]))
        in_use.update(str(v) for v in row.options.get("anonymous_volumes") or [])
    names, size = engine.volumes.prune(in_use, anonymous_only=True)
    report.volumes.extend(names)
    report.space_reclaimed += size


def prune_system(engine: Engine, *, all_images: bool = False, volumes: bool = False
                 ) -> PruneReport:
    report = PruneReport()
    prune_containers(engine, report)
    prune_networks(engine, report)
    if volumes:
        prune_volumes(engine, report)
    deleted, freed = engine.store.prune(all_images=all_images)
    report.images.extend(deleted)
    report.space_reclaimed += freed
    return report
