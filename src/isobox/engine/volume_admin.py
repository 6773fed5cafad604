"""Volumes as the CLI and the API manage them: create and remove with their events (and the
in-use check the store cannot make alone), and the list filters. Storage and copy-up are in
:mod:`.volumes`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isobox.engine import filters as flt
from isobox.errors import NotFoundError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.volumes import VolumeInfo

LIST_FILTERS = ("dangling", "driver", "label", "name")


def create_volume(engine: Engine, name: str = "", *, driver: str = "local",
                  labels: dict[str, str] | None = None,
                  options: dict[str, str] | None = None) -> VolumeInfo:
    """Create (or, for an existing name, return) a volume; "" makes an anonymous one."""
    info = engine.volumes.create(name, labels=labels, driver=driver or "local",
                                 options=options)
    engine.db.add_event("volume", "create", info.name, {"driver": info.driver})
    return info


def remove_volume(engine: Engine, name: str, *, force: bool = False) -> None:
    """A volume some container mounts is a ConflictError (with ``force`` too, as Docker);
    ``force`` makes a missing volume a no-op."""
    from isobox.engine.volume_use import volume_users

    try:
        engine.volumes.get(name)
    except NotFoundError:
        if force:
            return
        raise
    engine.volumes.remove(name, force=force, in_use_by=volume_users(engine).get(name))
    engine.db.add_event("volume", "destroy", name, {"driver": "local"})


def list_volumes(engine: Engine, filters: flt.Filters | None = None) -> list[VolumeInfo]:
    """``volume ls`` with Docker's filters: every key must match one of its values
    (``label``: all of them)."""
    from isobox.engine.volume_use import volume_users

    filters = filters or {}
    flt.check_keys(filters, LIST_FILTERS)
    users = volume_users(engine) if "dangling" in filters else {}

    def one(v: VolumeInfo, key: str, value: str) -> bool:
        if key == "dangling":
            return (v.name not in users) == flt.parse_bool(key, value)
        if key == "driver":
            return v.driver == value
        return flt.text_matches(value, v.name)

    return [v for v in engine.volumes.list()
            if all(flt.labels_match(v.labels, values) if key == "label"
                   else any(one(v, key, x) for x in values)
                   for key, values in filters.items())]
