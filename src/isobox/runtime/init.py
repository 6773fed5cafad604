"""The container's init, in two forked stages.

Stage A joins or creates the namespaces (a new PID namespace only applies to children)
and forks stage B, which becomes PID 1: it builds the root filesystem, pivots into it,
drops privileges, tells the runtime it is ready, blocks on ``exec.fifo`` until ``start``
and finally ``execve``s the container process.

Stage A joins the container's cgroups without the kernel's global threadgroup lock, whose
first taker waits an RCU grace period (12-20 ms here): it is born in its cgroup2 directory
(clone3 CLONE_INTO_CGROUP) and moves only its single thread on v1 (``tasks``). B inherits
them; it creates its cgroup namespace (whose root must be the container's cgroup) after
the runtime's "cg" message, before it mounts cgroupfs.

Both stages are non-dumpable from their first instruction, so nothing in the container can
ptrace them or open their ``/proc/PID/exe`` (the host's Python) or fds (CVE-2019-5736).
Errors go back to the runtime over the sync pipe; the stages never return.
"""

from __future__ import annotations

import posix

from isobox.errors import IsoboxError, SystemSetupError
from isobox.linux import syscalls as sc
from isobox.runtime.namespaces import JOIN_ORDER, NS_FLAGS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from isobox.cgroups import CgroupManager
    from isobox.runtime.sync import SyncPipe


class InitParams:
    """Everything the init stages need; handed over by fork, never serialised."""

    __slots__ = ("bundle", "cgroup", "cgroup_mounts", "cid", "config", "console_fd", "fifo_dir_fd",
                 "new_ns", "no_new_keyring", "no_pivot", "ns_fds", "preserve_fds", "rootfs")

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

    config: dict[str, Any]
    rootfs: str
    bundle: str
    cid: str
    cgroup: CgroupManager | None
    cgroup_mounts: list[dict[str, Any]]
    ns_fds: dict[str, int]
    new_ns: list[str]
    fifo_dir_fd: int
    console_fd: int
    no_pivot: bool
    no_new_keyring: bool
    preserve_fds: int


def _describe(e: BaseException) -> str:
    from isobox.runtime.log import LOG

    if LOG.debug_enabled and not isinstance(e, IsoboxError):
        try:
            import traceback
        except ImportError:  # after pivot_root the host's modules are gone
            pass
        else:
            return "".join(traceback.format_exception(e)).replace("\n", " | ")
    if isinstance(e, IsoboxError):
        return str(e)
    if isinstance(e, OSError):
        return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    return f"{type(e).__name__}: {e}"


def stage_a(p: InitParams, sync: SyncPipe, born_in_cgroup: bool = False) -> NoReturn:
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        if p.cgroup is not None:
            p.cgroup.add_self(skip_unified=born_in_cgroup)
        if "user" in p.ns_fds:
            _setns(p.ns_fds["user"], "user")
        elif "user" in p.new_ns:
            _unshare(sc.CLONE_NEWUSER, ["user"])
            sync.send("userns")
            kind, arg = sync.recv()
            if kind != "ok":
                raise IsoboxError(arg or "user namespace setup aborted")
            posix.setresgid(0, 0, 0)
            posix.setresuid(0, 0, 0)
        for t in JOIN_ORDER:
            if t != "user" and t in p.ns_fds:
                _setns(p.ns_fds[t], t)
        flags = 0
        types = []
        for t in p.new_ns:
            if t not in ("user", "cgroup"):  # cgroup: in stage B, once in its cgroups
                flags |= NS_FLAGS[t]
                types.append(t)
        if flags:
            _unshare(flags, types)
        offsets = p.config.get("linux", {}).get("timeOffsets")
        if "time" in p.new_ns and offsets:
            _write_time_offsets(offsets)
        for fd in p.ns_fds.values():
            posix.close(fd)
        pid = posix.fork()
        if pid == 0:
            stage_b(p, sync)
        sync.send("pid", str(pid))
    except BaseException as e:
        sync.send("error", _describe(e))
        posix._exit(1)
    posix._exit(0)


def direct_init(p: InitParams, sync: SyncPipe) -> NoReturn:
    """Stage B made by the runtime itself with clone3 (new namespaces and its cgroup2
    directory in one call; see :func:`isobox.runtime.spawn.clone_init`): it only has to
    join the v1 hierarchies before it goes on as stage B."""
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        if p.cgroup is not None:
            p.cgroup.add_self(skip_unified=True)
    except BaseException as e:
        sync.send("error", _describe(e))
        posix._exit(1)
    stage_b(p, sync)


def _setns(fd: int, t: str) -> None:
    try:
        sc.setns(fd, NS_FLAGS[t])
    except OSError as e:
        raise SystemSetupError(f"config.json: linux.namespaces: cannot join the {t} namespace: "
                               f"{posix.strerror(e.errno or 0)}") from None


def _unshare(flags: int, types: list[str]) -> None:
    try:
        sc.unshare(flags)
    except OSError as e:
        raise SystemSetupError(f"config.json: linux.namespaces: cannot create new "
                               f"{', '.join(types)} namespaces: {posix.strerror(e.errno or 0)}"
                               ) from None


def _write_time_offsets(offsets: dict[str, Any]) -> None:
    text = "".join(f"{clock} {off.get('secs', 0)} {off.get('nanosecs', 0)}\n"
                   for clock, off in offsets.items())
    try:
        fd = posix.open("/proc/self/timens_offsets", posix.O_WRONLY | posix.O_CLOEXEC)
        try:
            posix.write(fd, text.encode())
        finally:
            posix.close(fd)
    except OSError as e:
        raise SystemSetupError(f"config.json: linux.timeOffsets: the kernel refused "
                               f"{text.strip()!r}: {posix.strerror(e.errno or 0)}") from None


def stage_b(p: InitParams, sync: SyncPipe) -> NoReturn:
    from isobox.runtime import process as proc
    from isobox.runtime import rootfs as rfs
    from isobox.runtime.state import START_FIFO

    config = p.config
    process = config["process"]
    linux = config.get("linux", {})
    ready = False
    host_pid = 0
    start_fd = -1
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        posix.setsid()
        if not p.no_new_keyring:
            try:
                sc.join_session_keyring(f"_ses.{p.cid}")
            except OSError:
                pass  # keyrings may be unavailable (e.g. ENOSYS or quota); runc also tolerates
        hooks = config.get("hooks", {})
        if "mount" not in p.new_ns:
            raise IsoboxError("config.json: linux.namespaces: a new mount namespace is required")
        builder = rfs.RootfsBuilder(config, p.rootfs, p.bundle, cgroup_mounts=p.cgroup_mounts,
                                    new_cgroupns="cgroup" in p.new_ns,
                                    in_userns="user" in p.new_ns or "user" in p.ns_fds)
        joined: list[bool] = []

        def join_cgroups() -> None:
            if joined:
                return
            nonlocal host_pid
            kind, arg = sync.recv()
            if kind != "cg":
                raise IsoboxError(arg or "cgroup setup aborted")
            host_pid = int(arg or 0)
            if "cgroup" in p.new_ns:
                sc.unshare(sc.CLONE_NEWCGROUP)
            joined.append(True)

        builder.before_cgroup_mount = join_cgroups
        builder.prepare()
        builder.mount_all()
        join_cgroups()
        builder.setup_dev()
        if hooks.get("prestart") or hooks.get("createRuntime") or hooks.get("createContainer"):
            sync.send("hooks")
            kind, arg = sync.recv()
            if kind != "ok":
                raise IsoboxError(arg or "aborted by the runtime")
            if hooks.get("createContainer"):
                from isobox.runtime.hooks import run_hooks

                run_hooks(config, "createContainer", _hook_state(p, host_pid, "creating"))
        if hooks.get("startContainer"):
            import select  # noqa: F401  (after pivot_root the host's modules are gone)

            from isobox.runtime import hooks as _hooks  # noqa: F401
        builder.pivot(p.no_pivot)
        if process.get("terminal"):
            from isobox.runtime.console import setup_terminal

            setup_terminal(p.console_fd, process.get("consoleSize"), True)
        rfs.write_sysctls(linux.get("sysctl", {}))  # before /proc/sys is made read-only
        rfs.mask_paths(linux.get("maskedPaths", []))
        rfs.readonly_paths(linux.get("readonlyPaths", []))
        if "hostname" in config:
            sc.sethostname(config["hostname"])
        if "domainname" in config:
            sc.setdomainname(config["domainname"])
        if config.get("root", {}).get("readonly"):
            rfs.readonly_root()
        proc.set_default_home(process)  # the container's /etc/passwd; before rlimits, seccomp
        proc.apply_rlimits(process)
        proc.apply_scheduling(process)
        if "personality" in linux:
            _set_personality(linux["personality"])
        seccomp = None
        if linux.get("seccomp") is not None:
            from isobox.linux import seccomp as sec

            seccomp = _receive_seccomp(sync)
            if not process.get("noNewPrivileges"):
                sec.load_program(seccomp)  # needs CAP_SYS_ADMIN without no_new_privs: now
        if process.get("noNewPrivileges"):
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        cwd = process.get("cwd", "/")
        in_cwd = proc.try_enter_cwd(cwd)  # as runc: before the user switch, again after
        proc.apply_identity_and_caps(process)
        if not in_cwd:
            proc.enter_cwd(cwd)
        path = proc.find_executable(process["args"], process.get("env", []))
        sync.send("ready")
        ready = True
        sync.close()
        fd = posix.open("exec.fifo", posix.O_WRONLY | posix.O_CLOEXEC, dir_fd=p.fifo_dir_fd)
        posix.write(fd, b"0")
        posix.close(fd)
        if hooks.get("startContainer"):
            from isobox.runtime.hooks import run_hooks

            # start is reading the other end: it sees our error, or EOF at execve.
            start_fd = posix.open(START_FIFO, posix.O_WRONLY | posix.O_NONBLOCK | posix.O_CLOEXEC,
                               dir_fd=p.fifo_dir_fd)
            posix.close(p.fifo_dir_fd)
            run_hooks(config, "startContainer", _hook_state(p, host_pid, "created"))
        else:
            posix.close(p.fifo_dir_fd)
        proc.exec_process(path, process, seccomp, p.preserve_fds)
    except BaseException as e:
        msg = _describe(e)
        if ready:
            posix.write(2, f"isobox-runtime: error: {msg}\n".encode())
            if start_fd >= 0:
                try:
                    posix.write(start_fd, msg.encode())
                except OSError:
                    pass
        else:
            try:
                sync.send("error", msg)
            except OSError:
                pass
        posix._exit(127 if ready else 1)
    posix._exit(127)


def _receive_seccomp(sync: SyncPipe) -> Any:
    """The compiled seccomp filter, from the runtime (which compiled it meanwhile)."""
    from isobox.linux import seccomp as sec

    sync.send("seccomp")
    kind, arg = sync.recv()
    if kind != "seccomp":
        raise IsoboxError(arg or "the runtime sent no seccomp filter")
    flags, _, program = arg.partition(" ")
    return sec.Program(bytes.fromhex(program), int(flags))


def _hook_state(p: InitParams, pid: int, status: str) -> dict[str, Any]:
    return {"ociVersion": p.config.get("ociVersion", ""), "id": p.cid, "pid": pid,
            "status": status, "bundle": p.bundle,
            "annotations": p.config.get("annotations", {})}


def _set_personality(pers: dict[str, Any]) -> None:
    from isobox.linux import libc  # imported with syscalls, before pivot_root

    domain = {"LINUX": 0x0000, "LINUX32": 0x0008}[pers.get("domain", "LINUX")]
    if libc.function("personality")(libc.c_ulong(domain)) < 0:
        raise OSError(libc.get_errno(), "personality")
