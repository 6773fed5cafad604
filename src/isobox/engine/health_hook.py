"""One round of a container's health-check loop:
``python -m isobox.engine.health_hook --root R --run-dir D ID``.

Started by the loop of :mod:`isobox.engine.health` every interval. Exit 0: keep looping (the
check ran, or the container is paused); exit 1: the loop ends (the container is gone, not
running, started again under another loop, or has no healthcheck any more).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

KEEP_GOING, STOP = 0, 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = run_dir = ""
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--root" and args:
            root = args.pop(0)
        elif flag == "--run-dir" and args:
            run_dir = args.pop(0)
    if len(args) != 1 or not root:
        sys.stderr.write("usage: health_hook --root ROOT [--run-dir DIR] ID\n")
        return 2
    if not os.path.exists(os.path.join(root, "containers.db")):
        return STOP  # the root was deleted meanwhile: make nothing anew
    if run_dir:
        os.environ["ISOBOX_RUN_DIR"] = run_dir
    from isobox.engine.engine import Engine

    engine = Engine(root)
    try:
        return one_round(engine, args[0])
    except Exception as e:  # nobody reads our stderr; keep the reason with the container
        try:
            engine.db.update(args[0], error=f"health check: {e}")
        except Exception:
            pass
        return STOP
    finally:
        engine.close()


def one_round(engine: Engine, cid: str) -> int:
    from isobox.engine import health
    from isobox.engine.exits import exit_recorded
    from isobox.engine.monitor import read_pid
    from isobox.linux import syscalls as sc

    row = engine.db.get(cid)
    if row is None or row.status not in ("running", "paused"):
        return STOP
    if row.epoch != engine.layout.epoch():
        return STOP
    owner = read_pid(health.pidfile(engine, cid))
    if owner and owner != os.getppid() and health.checker_pid(engine, cid):
        return STOP  # a newer loop owns this container
    probe = health.effective_probe(row.options)
    if probe is None:
        return STOP
    if row.status == "paused":
        return KEEP_GOING  # as podman: no checks while frozen
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)  # reap what a killed check leaves
    result = health.run_probe(engine, row, probe)
    if result.exit_code != 0 and exit_recorded(engine, row):
        return STOP  # the container ended under the check: not a health result
    if health.record_result(engine, cid, probe, result) is None:
        return STOP
    return KEEP_GOING


if __name__ == "__main__":
    sys.exit(main())
