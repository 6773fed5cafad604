"""``system prune``: remove stopped containers (and the debris of killed creates), unused user
networks, dangling (or, with ``all_images``, all unused) images and, with ``volumes``, unused
anonymous volumes; then drop network state of containers that no longer exist, and the
cached VM root disks (``<root>/vm/rootfs``) of images that are gone.

Each step is also a prune of its own (``container/network/volume prune``, the API's
``POST /…/prune``) with Docker's filters: ``until``, ``label``, ``label!`` and, for volumes,
``all``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from isobox.engine import filters as flt
from isobox.errors import ConfigError, IsoboxError

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


@dataclass(frozen=True)
class PruneFilters:
    """What a prune may remove: created before ``until``, carrying every ``labels`` filter,
    and not carrying all of the ``not_labels`` ones (Docker's ``label!``)."""

    until: float | None = None
    labels: tuple[str, ...] = ()
    not_labels: tuple[str, ...] = ()
    all_volumes: bool = False        # volumes: named ones too, not only anonymous ones

    def allows(self, created: float | None, labels: Mapping[str, str]) -> bool:
        if self.until is not None and (created is None or created >= self.until):
            return False
        if not flt.labels_match(labels, self.labels):
            return False
        return not (self.not_labels and flt.labels_match(labels, self.not_labels))


CONTAINER_PRUNE_FILTERS = ("until", "label", "label!")
NETWORK_PRUNE_FILTERS = ("until", "label", "label!")
VOLUME_PRUNE_FILTERS = ("label", "label!", "all")


def prune_filters(filters: flt.Filters, allowed: tuple[str, ...]) -> PruneFilters:
    """Docker's prune ``filters`` (grouped by key) → :class:`PruneFilters`; an unknown key
    or a bad value is a ConfigError naming it."""
    flt.check_keys(filters, allowed)
    all_values = filters.get("all") or []
    if len(all_values) > 1:
        raise ConfigError("filters", "more than one all filter specified")
    return PruneFilters(until=flt.until_time(filters.get("until") or []),
                        labels=tuple(filters.get("label") or ()),
                        not_labels=tuple(filters.get("label!") or ()),
                        all_volumes=bool(all_values) and flt.parse_bool("all", all_values[0]))


def prune_containers(engine: Engine, report: PruneReport,
                     filters: PruneFilters = PruneFilters()) -> None:
    from isobox.engine.remove import remove_container

    for row in engine.list():
        if engine.effective_status(row) not in PRUNABLE:
            continue
        if not filters.allows(row.created, row.options.get("labels") or {}):
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


def prune_networks(engine: Engine, report: PruneReport,
                   filters: PruneFilters = PruneFilters()) -> None:
    """User networks no remaining container names (Docker keeps only those in use)."""
    from isobox.engine.networks import networks_in_use, remove_network

    engine.networks.cleanup_stale({r.id for r in engine.db.all()})
    wanted = networks_in_use(engine)
    for net in engine.networks.list():
        if net.predefined or net.name in wanted or net.containers:
            continue
        if not filters.allows(flt.rfc3339_time(net.created), net.labels):
            continue
        try:
            remove_network(engine, net.id)
        except IsoboxError as e:
            report.errors.append(f"network {net.name}: {e}")
            continue
        report.networks.append(net.name)


def prune_volumes(engine: Engine, report: PruneReport,
                  filters: PruneFilters = PruneFilters()) -> None:
    """Unused volumes: anonymous ones, or all with ``filters.all_volumes``."""
    from isobox.engine.volume_use import volume_users

    names, size = engine.volumes.prune(
        set(volume_users(engine)), anonymous_only=not filters.all_volumes,
        select=lambda v: filters.allows(None, v.labels))
    for name in names:
        engine.db.add_event("volume", "destroy", name, {"driver": "local"})
    report.volumes.extend(names)
    report.space_reclaimed += size


def prune_system(engine: Engine, *, all_images: bool = False, volumes: bool = False
                 ) -> PruneReport:
    report = PruneReport()
    prune_containers(engine, report)
    prune_networks(engine, report)
    if volumes:
        prune_volumes(engine, report)
    deleted, freed = prune_images(engine, all_images=all_images)
    report.images.extend(deleted)
    report.space_reclaimed += freed
    return report


def prune_images(engine: Engine, *, all_images: bool = False) -> tuple[list[str], int]:
    """The store's image prune, then the cached VM root disks of images no longer there:
    (deleted image IDs, bytes reclaimed)."""
    from isobox.engine.vm_disk import prune_base_disks

    deleted, freed = engine.store.prune(all_images=all_images)
    return deleted, freed + prune_base_disks(engine)
