"""Which containers use which volumes: the volume store does not know containers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isobox.engine.engine import Engine


def volume_users(engine: Engine) -> dict[str, list[str]]:
    """Volume name -> ids of the containers (in any state) that mount it (anonymous volumes
    count from the moment they are made, before the mounts are resolved)."""
    users: dict[str, list[str]] = {}
    for row in engine.db.all():
        names = [str(m["source"]) for m in row.options.get("mounts_resolved") or []
                 if m.get("type") == "volume" and m.get("source")]
        names += [str(v) for v in row.options.get("anonymous_volumes") or []]
        for name in dict.fromkeys(names):
            users.setdefault(name, []).append(row.id)
    return users
