"""``run``: create + start, and in the foreground wait for the exit and delete."""

from __future__ import annotations

import os

from isobox.errors import ConfigError
from isobox.linux import syscalls as sc
from isobox.runtime.container_create import CreateOptions, create
from isobox.runtime.container_start import start
from isobox.runtime.state import StateStore


def _wants_own_console(opts: CreateOptions) -> bool:
    from isobox.runtime.container_create import load_bundle

    if opts.console_socket:
        return False
    config, _ = load_bundle(os.path.abspath(opts.bundle or "."))
    return bool(config["process"].get("terminal"))


def run(store: StateStore, cid: str, opts: CreateOptions, detach: bool = False,
        keep: bool = False) -> int:
    console = None
    if _wants_own_console(opts):
        if detach:
            raise ConfigError("--console-socket", "cannot allocate a terminal for a detached "
                              "container without --console-socket")
        from isobox.runtime.console import ForegroundConsole

        console = ForegroundConsole()
        opts.console_fd = console.init_end()
    if not detach:
        # The init's parent (stage A) exits during create: as subreaper we inherit it.
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    st = create(store, cid, opts)
    try:
        if console is not None:
            console.receive()
        start(store, cid)
    except BaseException:
        from isobox.runtime.container_delete import destroy

        destroy(store, st)
        raise
    if detach:
        return 0
    if console is not None:
        code = console.proxy(st.pid)
    else:
        from isobox.runtime.waiting import wait_forwarding_signals

        code = wait_forwarding_signals(st.pid)
    if not keep:
        from isobox.runtime.container_delete import destroy

        destroy(store, store.load(cid))
    return code
