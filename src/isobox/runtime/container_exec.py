"""``exec``: run another process in a container's namespaces and cgroups.

The joining process is non-dumpable from before its first ``setns`` until ``execve``, joins
every cgroup hierarchy of the container (on hybrid hosts too), and gets the same fd,
cwd and seccomp treatment as the init process.
"""

from __future__ import annotations

import os

from isobox.errors import ConflictError, IsoboxError, SystemSetupError, command_failure_status
from isobox.linux import syscalls as sc
from isobox.runtime.namespaces import JOIN_ORDER, NS_FLAGS, PROC_NAMES
from isobox.runtime.state import StateStore, write_atomic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from isobox.cgroups import CgroupManager
    from isobox.linux.seccomp import Program
    from isobox.runtime.sync import SyncPipe


class ExecOptions:
    __slots__ = ("console_socket", "detach", "ignore_paused", "pid_file", "preserve_fds")

    def __init__(self, detach: bool = False, pid_file: str | None = None,
                 console_socket: str | None = None, preserve_fds: int = 0,
                 ignore_paused: bool = False) -> None:
        self.detach = detach
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.preserve_fds = preserve_fds
        self.ignore_paused = ignore_paused


def exec_process(store: StateStore, cid: str, process: dict[str, Any], opts: ExecOptions) -> int:
    from isobox.cgroups import CgroupManager
    from isobox.oci.config import validate_config
    from isobox.runtime import sync
    from isobox.runtime.process import check_rlimits

    st = store.load(cid)
    status = st.status()
    if status == "paused" and not opts.ignore_paused:
        raise ConflictError("cannot exec in a paused container (use --ignore-paused to "
                            "override)")
    if status == "stopped":
        raise ConflictError("cannot exec in a stopped container")  # runc's words
    config = dict(st.config)
    config["process"] = process
    config = validate_config(config, "process.json")
    process = config["process"]
    check_rlimits(process, "process.json: process")
    if process.get("terminal") and not opts.console_socket:
        raise ConflictError("exec with a terminal needs --console-socket")
    mgr = CgroupManager.from_state(st.data["cgroup"])
    _preload()
    seccomp = None
    if config.get("linux", {}).get("seccomp") is not None:
        from isobox.runtime.seccomp_cache import program_for

        seccomp = program_for(store.root, config["linux"]["seccomp"])
    ns_fds: dict[str, int] = {}
    console_fd = -1
    try:
        for t in JOIN_ORDER:
            if t in st.data.get("namespaces", []) or any(
                    ns["type"] == t for ns in config.get("linux", {}).get("namespaces", [])):
                ns_fds[t] = os.open(f"/proc/{st.pid}/ns/{PROC_NAMES[t]}",
                                    os.O_RDONLY | os.O_CLOEXEC)
        if process.get("terminal"):
            from isobox.runtime.console import connect_console_socket

            console_fd = connect_console_socket(opts.console_socket or "")
        if not opts.detach:
            sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        parent, child, parent_only = sync.pair()
        from isobox.runtime.spawn import fork_in_cgroup

        pid_c, born_in_cgroup = fork_in_cgroup(mgr)
        if pid_c == 0:  # pragma: no cover - child
            os.close(parent.rfd)
            os.close(parent.wfd)
            _join(config, seccomp, mgr, ns_fds, console_fd, opts.preserve_fds, child,
                  born_in_cgroup)
        for fd in parent_only:
            os.close(fd)
    finally:
        for fd in [*ns_fds.values(), console_fd]:
            if fd >= 0:
                os.close(fd)
    pid = 0
    error = ""
    while True:
        kind, arg = parent.recv()
        if kind == "pid":
            pid = int(arg)
        elif kind == "error":
            error = arg
        elif kind == "eof":
            break
    parent.close()
    os.waitpid(pid_c, 0)
    if error:
        if pid:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        raise ExecFailed(error)
    if not pid:
        raise SystemSetupError("the exec'd process did not start")
    if opts.pid_file:
        write_atomic(os.path.abspath(opts.pid_file), str(pid).encode(), 0o644)
    if opts.detach:
        return 0
    from isobox.runtime.waiting import wait_forwarding_signals

    return wait_forwarding_signals(pid)


class ExecFailed(IsoboxError):
    """The process could not be started; its exit status is a shell's for that (127: no such
    command, 126: not executable), which callers such as podman and docker report."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.exit_status = command_failure_status(message) or 1


def _preload() -> None:
    """Import now what the child needs after it joins the container's mount namespace,
    where neither the host's Python modules nor its shared libraries are visible."""
    import stat  # noqa: F401  (enter_cwd)

    from isobox.linux import capabilities, safepath  # noqa: F401  (safepath: oomScoreAdj)
    from isobox.runtime import process  # noqa: F401
    from isobox.runtime.init import _describe  # noqa: F401


def _join(config: dict[str, Any], seccomp: Program | None, mgr: CgroupManager,
          ns_fds: dict[str, int], console_fd: int, preserve_fds: int, sync: SyncPipe,
          born_in_cgroup: bool) -> NoReturn:
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        mgr.add_self(skip_unified=born_in_cgroup)
        for t in JOIN_ORDER:
            if t in ns_fds:
                sc.setns(ns_fds[t], NS_FLAGS[t])
        for fd in ns_fds.values():
            os.close(fd)
        pid = os.fork()
        if pid == 0:
            _tenant(config, seccomp, console_fd, preserve_fds, sync)
        sync.send("pid", str(pid))
    except BaseException as e:
        try:
            from isobox.runtime.init import _describe

            sync.send("error", _describe(e))
        finally:
            os._exit(1)  # never return into the caller's code
    os._exit(0)


def _tenant(config: dict[str, Any], seccomp: Program | None, console_fd: int,
            preserve_fds: int, sync: SyncPipe) -> NoReturn:
    from isobox.runtime import process as proc

    process = config["process"]
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        if process.get("terminal"):
            from isobox.runtime.console import setup_terminal

            os.setsid()
            setup_terminal(console_fd, process.get("consoleSize"), False)
        proc.set_default_home(process)  # the container's /etc/passwd; before rlimits, seccomp
        proc.apply_rlimits(process)
        proc.apply_scheduling(process)
        if seccomp is not None and not process.get("noNewPrivileges"):
            from isobox.linux import seccomp as sec

            sec.load_program(seccomp)
        if process.get("noNewPrivileges"):
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        cwd = process.get("cwd", "/")
        in_cwd = proc.try_enter_cwd(cwd)  # as runc: before the user switch, again after
        proc.apply_identity_and_caps(process, "process.json: process")
        if not in_cwd:
            proc.enter_cwd(cwd)
        path = proc.find_executable(process["args"], process.get("env", []))
        keep = {sync.wfd}
        os.closerange(3 + preserve_fds, min(keep))
        os.closerange(min(keep) + 1, 1 << 20)
        proc.default_signals()
        if seccomp is not None and process.get("noNewPrivileges"):
            from isobox.linux import seccomp as sec

            sec.load_program(seccomp)
        os.execve(path, process["args"], proc.env_dict(process.get("env", [])))
    except BaseException as e:
        try:
            from isobox.runtime.init import _describe

            sync.send("error", _describe(e))
        except BaseException:
            pass
        os._exit(127)
