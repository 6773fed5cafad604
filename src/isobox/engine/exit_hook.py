"""The monitor's exit command: ``python -m isobox.engine.exit_hook --root R --run-dir D ID``.

conmon runs it (through the small shell prelude of :mod:`isobox.engine.monitor`) when the
container's process has ended. With ``--restart`` it is the detached waiter that an attached
CLI starts to wait out a restart policy's back-off.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = run_dir = ""
    restart = False
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--root":
            root = args.pop(0)
        elif flag == "--run-dir":
            run_dir = args.pop(0)
        elif flag == "--restart":
            restart = True
    if len(args) != 1 or not root:
        sys.stderr.write("usage: exit_hook --root ROOT [--run-dir DIR] [--restart] ID\n")
        return 2
    cid = args[0]
    if not os.path.exists(os.path.join(root, "containers.db")):
        return 0  # the root was deleted meanwhile (its containers with it): make nothing anew
    if run_dir:
        os.environ["ISOBOX_RUN_DIR"] = run_dir
    from isobox import dataclass_code

    dataclass_code.install()  # as the CLI: the engine's dataclasses without compiling
    from isobox.engine.engine import Engine
    from isobox.engine.exits import handle_exit, restart_delay, restart_now

    engine = Engine(root)
    try:
        if restart:
            row = engine.db.get(cid)
            if row is None or row.status != "restarting":
                return 0
            import time

            delay = restart_delay(row, row.exit_code, row.finished_at)
            time.sleep(delay if delay is not None else 0)
            restart_now(engine, cid)
            return 0
        handle_exit(engine, cid, in_background=True)
    except Exception as e:  # nobody reads our stderr; keep the reason with the container
        try:
            engine.db.update(cid, error=f"exit handler: {e}")
        except Exception:
            pass
        return 1
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
