"""``isobox system boot``: what a daemon would do when it starts, for a daemonless engine.

Run once after the host boots (the systemd unit in docs/engine.md does): every record that
still says running belongs to a process that died with the old boot, so it becomes
``exited`` (255) and its leftovers (network endpoints, mounts) are released; then the
containers whose restart policy asks for it are started again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isobox.errors import IsoboxError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine


def boot(engine: Engine) -> tuple[list[str], list[tuple[str, str]]]:
    """Reconcile all records and restart per policy; (started names, [(name, error)])."""
    from isobox.engine.start import start_container

    restarting = {r.id for r in engine.db.all() if r.status == "restarting"}
    if restarting:
        for cid in restarting:
            engine.db.update(cid, status="running")  # let reconcile process its exit
    rows = engine.list()
    live = {r.id for r in rows if r.status in ("running", "paused")}
    try:
        engine.networks.cleanup_stale(live)
    except (IsoboxError, OSError):
        pass
    started: list[str] = []
    failed: list[tuple[str, str]] = []
    for row in rows:
        if row.status in ("running", "paused"):
            continue
        policy = str((row.options.get("restart") or {}).get("name") or "no")
        wanted = policy == "always" or (policy == "unless-stopped" and not row.manually_stopped)
        if policy == "on-failure" and row.id in restarting:
            wanted = True
        if row.status == "restarting" or (wanted and row.status == "exited"):
            try:
                start_container(engine, row.id)
                started.append(row.name)
            except IsoboxError as e:
                failed.append((row.name, str(e)))
    return started, failed
