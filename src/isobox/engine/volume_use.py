"""Which containers use which volumes: the volume store does not know containers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isobox.engine.engine import Engine


def volume_users(engine: Engine) -> dict[str, list[str]]:
    """Volume name -> ids of the containers (in any state) that mount it."""
    users: dict[str, list[str]] = {}
    for row in engine.db.all():
        for m in row.options.get("mounts_resolved") or []:
            if m.get("type") == "volume" and m.get("source"):
                users.setdefault(str(m["source"]), []).append(row.id)
    return users
