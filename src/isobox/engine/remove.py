"""``rm``: a stopped container's snapshot, anonymous volumes (with ``-v``), files and record.

The record is marked ``removing`` first and deleted last, so a CLI killed half-way leaves a
record that ``rm -f`` or ``system prune`` finishes, never files without a record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isobox.engine.engine import pid_alive
from isobox.engine.state import ContainerRow
from isobox.errors import ConflictError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine


def remove_container(engine: Engine, ref: str, *, force: bool = False,
                     volumes: bool = False) -> str:
    from isobox.engine.stop import kill_locked, wait_exit

    row = engine.get(ref)
    with engine.locked(row.id) as row:
        if row.status in ("running", "paused", "restarting"):
            if not force:
                raise ConflictError(
                    f'cannot remove container "/{row.name}": container is {row.status}: '
                    "stop the container before removing or force remove")
            engine.db.update(row.id, manually_stopped=1, status="running"
                             if row.status == "restarting" else row.status)
            kill_locked(engine, row, "KILL")
            wait_exit(engine, row, 10.0)
            from isobox.engine.exits import end_monitor, exit_status, teardown

            end_monitor(engine, row)  # its exit hook would only find the record gone
            # as Docker's rm -f (a kill): a `wait` meanwhile gets 137, `events` the die
            code = (exit_status(engine, row) or (137, False))[0]
            engine.db.update(row.id, exit_code=code)
            engine.event(row, "kill", signal="9")
            engine.event(row, "die", exitCode=str(code))
            teardown(engine, row)
        elif row.status == "creating" and not force and pid_alive(row.creator_pid):
            raise ConflictError(f"container {row.name} is being created")
        remove_locked(engine, row, volumes=volumes)
    return row.id


def remove_locked(engine: Engine, row: ContainerRow, *, volumes: bool) -> None:
    from isobox.engine.create import discard
    from isobox.engine.exits import release_all

    engine.db.update(row.id, status="removing")
    release_all(engine, row)
    if not volumes:
        row.options["anonymous_volumes"] = []
    discard(engine, row)
    engine.event(row, "destroy")
