"""``create``: validate the bundle, make the cgroup and state, fork the init stages, and
return once the init process waits on ``exec.fifo``. On any error nothing is left behind."""

from __future__ import annotations

import posix
import time

from isobox import fastjson
from isobox.errors import ConfigError, IsoboxError, SystemSetupError
from isobox.linux import pathnames
from isobox.runtime.state import EXEC_FIFO, ContainerState, StateStore, write_atomic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from isobox.cgroups import CgroupManager


class CreateOptions:
    __slots__ = ("bundle", "console_fd", "console_socket", "no_new_keyring", "no_pivot",
                 "pid_file", "preserve_fds")

    def __init__(self, bundle: str | None = None, pid_file: str | None = None,
                 console_socket: str | None = None, no_pivot: bool = False,
                 no_new_keyring: bool = False, preserve_fds: int = 0) -> None:
        self.bundle = bundle
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        # An already connected socket to send the pty master to (``run`` in the foreground
        # makes its own console); it takes the place of ``console_socket``.
        self.console_fd = -1


def load_bundle(bundle: str) -> tuple[dict[str, Any], str]:
    """(validated config, absolute rootfs path)."""
    from isobox.oci.config import validate_config

    path = pathnames.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(path, f"cannot read the bundle's config: {e.strerror}") from None
    try:
        doc = fastjson.loads(raw)
    except ValueError as e:
        raise ConfigError(path, f"invalid JSON: {e}") from None
    config = validate_config(doc)
    root = config["root"]["path"]
    rootfs = pathnames.normpath(root if root.startswith("/") else pathnames.join(bundle, root))
    if not pathnames.isdir(rootfs):
        raise ConfigError("config.json: root.path", f"rootfs {rootfs!r} does not exist or is "
                          "not a directory")
    return config, rootfs


def _precheck(config: dict[str, Any], opts: CreateOptions) -> None:
    """Checks that need the host but change nothing, so failures leave nothing behind."""
    from isobox.linux import capabilities as caps
    from isobox.runtime.process import check_rlimits

    process = config["process"]
    check_rlimits(process)
    caps.parse_caps(process.get("capabilities") or {}, "config.json: process.capabilities")
    seccomp = config.get("linux", {}).get("seccomp")
    if seccomp is not None:
        from isobox.linux import seccomp as sec

        sec.validate(seccomp)  # compiled while the init sets up: see _drive_init
    if process.get("terminal") and not opts.console_socket and opts.console_fd < 0:
        raise ConfigError("config.json: process.terminal",
                          "a terminal was requested but no --console-socket was given")
    for key in ("apparmorProfile", "selinuxLabel"):
        if process.get(key):
            raise ConfigError(f"config.json: process.{key}", "not supported by isobox-runtime "
                              "on this host (no LSM support)")


def _rfc3339_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def _own_start_time() -> int | None:
    from isobox.runtime.state import process_start_time

    return process_start_time(posix.getpid())


def _write_id_maps(pid: int, config: dict[str, Any]) -> None:
    linux = config.get("linux", {})
    for key, fname in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n"
                        for m in linux.get(key, []))
        try:
            with open(f"/proc/{pid}/{fname}", "w") as f:
                f.write(lines)
        except OSError as e:
            raise SystemSetupError(f"cannot write linux.{key} to /proc/{pid}/{fname}: "
                                   f"{e.strerror}") from None


def create(store: StateStore, cid: str, opts: CreateOptions) -> ContainerState:
    from isobox.cgroups import CgroupManager, resolve_path
    from isobox.oci.config import validate_container_id
    from isobox.runtime import sync
    from isobox.runtime.init import InitParams, direct_init, stage_a
    from isobox.runtime.namespaces import new_namespaces, open_joins

    validate_container_id(cid)
    bundle = pathnames.abspath(opts.bundle or ".")
    config, rootfs = load_bundle(bundle)
    _precheck(config, opts)
    ns_fds = open_joins(config)
    state_dir = ""
    mgr: CgroupManager | None = None
    pid_a = 0
    host_pid = 0
    forked = False
    fifo_dir_fd = -1
    console_fd = -1
    try:
        state_dir = store.reserve(cid)
        ContainerState(cid, state_dir, {  # what `state` shows while this create runs
            "id": cid, "bundle": bundle, "creating": True, "creator": posix.getpid(),
            "creatorStart": _own_start_time(), "created": _rfc3339_now(),
            "config": {k: config[k] for k in ("ociVersion", "annotations") if k in config},
        }).save()
        fifo = pathnames.join(state_dir, EXEC_FIFO)
        posix.mkfifo(fifo, 0o622)
        # The umask took group/other write: the container's user (any uid, and in a user
        # namespace an unmapped-to-us one) must be able to open it for writing.
        posix.chmod(fifo, 0o622)
        if config.get("hooks", {}).get("startContainer"):
            from isobox.runtime.state import START_FIFO

            fifo = pathnames.join(state_dir, START_FIFO)
            posix.mkfifo(fifo, 0o622)
            posix.chmod(fifo, 0o622)
        fifo_dir_fd = posix.open(state_dir, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
        linux = config.get("linux", {})
        mgr = CgroupManager(resolve_path(linux.get("cgroupsPath"), cid))
        mgr.create()
        if config["process"].get("terminal"):
            from isobox.runtime.console import connect_console_socket

            if opts.console_fd >= 0:
                console_fd = posix.dup(opts.console_fd)
                connect_console_socket("")  # only its imports: setup_terminal needs them
            else:
                console_fd = connect_console_socket(opts.console_socket or "")
        params = InitParams(
            config=config, rootfs=rootfs, bundle=bundle, cid=cid, cgroup=mgr,
            cgroup_mounts=mgr.hierarchies_for_mount(), ns_fds=ns_fds,
            new_ns=new_namespaces(config), fifo_dir_fd=fifo_dir_fd, console_fd=console_fd,
            no_pivot=opts.no_pivot, no_new_keyring=opts.no_new_keyring,
            preserve_fds=opts.preserve_fds)
        parent, child, parent_only = sync.pair()
        from isobox.runtime.spawn import clone_init, fork_in_cgroup

        # Stage B straight from here when stage A would only unshare and fork.
        direct_pid = clone_init(mgr, params.new_ns) if not ns_fds else None
        if direct_pid == 0:  # pragma: no cover - runs in the child
            posix.close(parent.rfd)
            posix.close(parent.wfd)
            direct_init(params, child)
        host_pid = direct_pid or 0  # our own child: a failure from here on kills and reaps it
        if direct_pid is None:
            pid_a, born_in_cgroup = fork_in_cgroup(mgr)
            if pid_a == 0:  # pragma: no cover - runs in the child
                posix.close(parent.rfd)
                posix.close(parent.wfd)
                stage_a(params, child, born_in_cgroup)
        forked = True
        for fd in parent_only:
            posix.close(fd)
        if console_fd >= 0:
            posix.close(console_fd)
            console_fd = -1
        # The limits are worked out and written while the init stages set up (two cores):
        # stage B runs no code of the container's before the "cg" message, which follows.
        from isobox.runtime.devices_policy import effective_resources

        resources = effective_resources(config)
        # The pids limit is applied once stage A has forked the init: a limit of 0 or 1
        # (runc: "0 means 1") must not stop the runtime's own fork.
        pids_limit = resources.pop("pids", None)
        mgr.apply(resources)
        stage_b = [host_pid]  # _drive_init records B's pid here as soon as it learns it
        try:
            host_pid = _drive_init(parent, pid_a, config, cid, bundle, mgr, pids_limit,
                                   direct_pid or 0, store.root, stage_b)
        finally:
            host_pid = host_pid or stage_b[0]
        parent.close()
        if pid_a:
            posix.waitpid(pid_a, 0)
        pid_a = 0
        from isobox.runtime.state import process_start_time

        data: dict[str, Any] = {
            "id": cid, "pid": host_pid, "pidStart": process_start_time(host_pid),
            "bundle": bundle, "rootfs": rootfs, "created": _rfc3339_now(), "owner": "",
            "cgroup": mgr.to_state(), "config": config,
            "namespaces": new_namespaces(config),
        }
        state = ContainerState(cid, state_dir, data)
        state.save()
        if opts.pid_file:
            write_atomic(pathnames.abspath(opts.pid_file), str(host_pid).encode(), 0o644)
        return state
    except BaseException:
        _undo(pid_a, host_pid, mgr, store, cid if state_dir else "")
        if forked and config.get("hooks", {}).get("poststop"):
            # The spec: a failed create "continues the lifecycle" at delete (poststop).
            from isobox.runtime.hooks import run_hooks

            run_hooks(config, "poststop", {
                "ociVersion": config.get("ociVersion", ""), "id": cid, "pid": 0,
                "status": "stopped", "bundle": bundle,
                "annotations": config.get("annotations", {})}, warn=True)
        raise
    finally:
        for fd in [fifo_dir_fd, console_fd, *ns_fds.values()]:
            if fd >= 0:
                try:
                    posix.close(fd)
                except OSError:
                    pass


def _drive_init(parent: Any, pid_a: int, config: dict[str, Any], cid: str, bundle: str,
                mgr: CgroupManager, pids_limit: dict[str, Any] | None = None,
                direct_pid: int = 0, root: str = "", stage_b: list[int] | None = None) -> int:
    """Answer the init stages until stage B is ready; returns its host pid.

    The pids limit is set here, once stage B exists inside the cgroup (``direct_pid`` when
    the runtime created B itself, else when stage A reports B's pid). The seccomp filter is
    compiled (or read from the cache under ``root``) right after, on this core while stage B
    mounts the root filesystem on the other, and sent when B asks for it."""
    host_pid = direct_pid
    pending_hooks = False
    profile = config.get("linux", {}).get("seccomp")
    compiled: list[Any] = []

    def seccomp_program() -> Any:
        if not compiled:
            from isobox.runtime.seccomp_cache import program_for

            compiled.append(program_for(root, profile))
        return compiled[0]

    if direct_pid:
        if pids_limit:
            mgr.update({"pids": pids_limit})
        _send(parent, "cg", str(direct_pid))
        if profile is not None:
            seccomp_program()
    while True:
        kind, arg = parent.recv()
        if kind == "userns":
            _write_id_maps(pid_a, config)
            _send(parent, "ok")
        elif kind == "pid":
            host_pid = int(arg)
            if stage_b is not None:
                stage_b[0] = host_pid
            if pids_limit:
                mgr.update({"pids": pids_limit})
            _send(parent, "cg", str(host_pid))  # stage A joined the cgroups before forking B
            if profile is not None:
                seccomp_program()
        elif kind == "seccomp" and profile is not None:
            program = seccomp_program()
            _send(parent, "seccomp", f"{program.flags} {program.bpf.hex()}")
        elif kind == "hooks":
            pending_hooks = True
        elif kind == "ready":
            return host_pid
        elif kind == "error":
            raise IsoboxError(arg)
        elif kind == "eof":
            raise SystemSetupError("the container's init process exited during setup")
        if pending_hooks and host_pid:
            pending_hooks = False
            from isobox.runtime.hooks import run_hooks

            state = {"ociVersion": config.get("ociVersion", ""), "id": cid, "pid": host_pid,
                     "status": "creating", "bundle": bundle,
                     "annotations": config.get("annotations", {})}
            try:
                run_hooks(config, "prestart", state)
                run_hooks(config, "createRuntime", state)
            except IsoboxError as e:
                _send(parent, "abort", str(e))
                raise
            _send(parent, "ok", str(host_pid))


def _send(parent: Any, kind: str, arg: str = "") -> None:
    """Send to the init stages; if they are gone, their error (or EOF) is read next."""
    try:
        parent.send(kind, arg)
    except BrokenPipeError:
        pass


def _undo(pid_a: int, host_pid: int, mgr: CgroupManager | None, store: StateStore,
          cid: str) -> None:
    for pid in (host_pid, pid_a):
        if pid:
            try:
                posix.kill(pid, 9)
            except OSError:
                pass
    for pid in (pid_a, host_pid):  # gone, and reaped if ours (stage A, or B made by clone3):
        if pid:                    # a zombie would keep its cgroups from being removed
            _wait_gone(pid)
            try:
                posix.waitpid(pid, posix.WNOHANG)
            except OSError:  # B under stage A is not our child
                pass
    if mgr is not None:
        try:
            mgr.kill_all(9)
        except (IsoboxError, OSError):
            pass
        try:
            mgr.destroy()
        except (IsoboxError, OSError):
            pass
    if cid:
        store.remove(cid)


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    try:
        pidfd = posix.pidfd_open(pid)
    except OSError:
        return
    try:
        import select

        select.select([pidfd], [], [], timeout)
    finally:
        posix.close(pidfd)
