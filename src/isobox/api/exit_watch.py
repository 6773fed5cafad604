"""The exits of containers the server started, handled by the server itself.

The monitor's exit hook is a fresh Python interpreter that imports the engine: about 150 ms
on this machine between a process's end and its record saying "exited", which every
``wait`` (the docker CLI's ``run``, docker-py's ``containers.run``) sits through. An attached
``isobox run`` avoids it by naming itself in the start (``attached_pid``): the monitor's exit
script then waits for that process to handle the exit, and runs the hook only if it died
first. The server, a long-lived process, does the same for the containers it starts: one
thread waits on their pidfds and calls the engine's ``handle_exit`` (restart policy and
``AutoRemove`` included) as soon as a process ends. If the server stops first, the exit
script sees it gone and runs the hook as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

log = logging.getLogger("isobox.api")


class ExitWatcher:
    def __init__(self, root: str) -> None:
        self.root = root
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    def watch(self, engine: Engine, cid: str) -> None:
        """Handle ``cid``'s exit once its process ends (it was started with this process's
        pid as ``attached_pid``)."""
        row = engine.get(cid)
        try:
            pidfd = os.pidfd_open(row.pid) if row.pid > 0 else -1
        except ProcessLookupError:
            pidfd = -1
        if pidfd < 0:  # ended already
            self._handle_soon(cid)
            return
        with self._lock:
            self._sel.register(pidfd, selectors.EVENT_READ, cid)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="exit-watch",
                                                daemon=True)
                self._thread.start()
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    self._sel.unregister(key.fd)
                os.close(key.fd)
                self._handle_soon(key.data)

    def _handle_soon(self, cid: str) -> None:
        # a thread each: one exit's lock wait (a concurrent rm) must not delay the others
        threading.Thread(target=self._handle, args=(cid,), name="exit-handle",
                         daemon=True).start()

    def _handle(self, cid: str) -> None:
        from isobox.engine.engine import Engine
        from isobox.engine.exits import handle_exit
        from isobox.engine.stop import wait_exit
        from isobox.errors import IsoboxError

        engine = Engine(self.root)
        marker = os.path.join(engine.layout.persist_dir(cid), "attached")
        try:
            row = engine.db.get(cid)
            if row is None or row.status not in ("running", "paused"):
                return
            wait_exit(engine, row, 30.0)  # the monitor writes the exit file just after
            handle_exit(engine, cid)
        except IsoboxError as e:
            log.warning("container %s: handling its exit: %s", cid[:12], e)
        except Exception:
            log.exception("container %s: handling its exit failed", cid[:12])
        finally:
            # as an attached CLI: the monitor's exit script ends without running the hook
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)
            engine.close()
