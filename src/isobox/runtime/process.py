"""The last steps before ``execve`` of a container process (init or exec'd):
HOME, rlimits, scheduling, identity, capabilities, no_new_privs, cwd, fd hygiene, seccomp."""

from __future__ import annotations

import posix
import stat

from isobox.errors import ConfigError, SystemSetupError
from isobox.linux import pathnames, safepath
from isobox.linux import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from isobox.linux.seccomp import Program

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
IOPRIO_CLASS = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
SCHED_POLICY = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 1, "SCHED_FLAG_RECLAIM": 2,
               "SCHED_FLAG_DL_OVERRUN": 4, "SCHED_FLAG_KEEP_POLICY": 8,
               "SCHED_FLAG_KEEP_PARAMS": 16, "SCHED_FLAG_UTIL_CLAMP_MIN": 32,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 64}
RLIM_INFINITY = (1 << 64) - 1


def check_rlimits(process: dict[str, Any], where: str = "config.json: process") -> None:
    """Refuse, before anything is made, a limit above what this runtime may set.

    Without CAP_SYS_RESOURCE a hard limit can only be lowered, so a request above the
    current hard limit cannot be honoured and is reported rather than silently clamped.
    """
    for i, rl in enumerate(process.get("rlimits", [])):
        num = RLIMITS[rl["type"]]
        _, cur = sc.getrlimit(num)
        hard = rl["hard"]
        if hard > cur and not _has_cap_sys_resource():
            shown = "unlimited" if cur == RLIM_INFINITY else str(cur)
            raise ConfigError(
                f"{where}.rlimits[{i}].hard",
                f"{rl['type']} hard limit {hard} exceeds this runtime's hard limit {shown} "
                "(raising it needs CAP_SYS_RESOURCE)")


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def apply_rlimits(process: dict[str, Any]) -> None:
    for rl in process.get("rlimits", []):
        try:
            sc.setrlimit(RLIMITS[rl["type"]], min(rl["soft"], RLIM_INFINITY),
                         min(rl["hard"], RLIM_INFINITY))
        except OSError as e:
            raise SystemSetupError(f"setrlimit {rl['type']} soft={rl['soft']} hard={rl['hard']}: "
                                   f"{posix.strerror(e.errno or 0)}") from None


def apply_scheduling(process: dict[str, Any]) -> None:
    if "oomScoreAdj" in process:
        # Only through a verified procfs, never a path the container may have redirected
        # (CVE-2025-52881): for exec, /proc is the container's mount.
        try:
            procfd = safepath.open_procfs("/proc")
            try:
                safepath.proc_write(procfd, f"{posix.getpid()}/oom_score_adj",
                                    str(process["oomScoreAdj"]).encode())
            finally:
                posix.close(procfd)
        except SystemSetupError as e:
            raise SystemSetupError(f"process.oomScoreAdj {process['oomScoreAdj']}: {e}"
                                   ) from None
        except OSError as e:
            raise SystemSetupError(f"process.oomScoreAdj {process['oomScoreAdj']}: "
                                   f"{e.strerror}") from None
    io = process.get("ioPriority")
    if io:
        try:
            sc.ioprio_set(1, 0, (IOPRIO_CLASS[io["class"]] << 13) | io.get("priority", 0))
        except OSError as e:
            raise SystemSetupError(f"process.ioPriority: {e.strerror}") from None
    sched = process.get("scheduler")
    if sched:
        flags = 0
        for name in sched.get("flags", []):
            flags |= SCHED_FLAGS[name]
        try:
            sc.sched_setattr(0, SCHED_POLICY[sched["policy"]], flags, sched.get("nice", 0),
                             sched.get("priority", 0), sched.get("runtime", 0),
                             sched.get("deadline", 0), sched.get("period", 0))
        except OSError as e:
            raise SystemSetupError(f"process.scheduler ({sched['policy']}): {e.strerror}"
                                   ) from None


def apply_identity_and_caps(process: dict[str, Any], where: str = "config.json: process") -> None:
    """Bounding set, then the uid/gid switch keeping caps, then the other four sets."""
    from isobox.linux import capabilities as caps

    user = process.get("user", {})
    parsed = caps.parse_caps(process.get("capabilities") or {}, f"{where}.capabilities")
    caps.apply_bounding(parsed)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    try:
        posix.setgroups(list(user.get("additionalGids", [])))
    except OSError as e:
        # setgroups is denied in a user namespace whose setgroups is "deny".
        if user.get("additionalGids"):
            raise SystemSetupError(f"setgroups {user['additionalGids']}: {e.strerror}") from None
    try:
        posix.setresgid(gid, gid, gid)
        posix.setresuid(uid, uid, uid)
    except OSError as e:
        raise SystemSetupError(f"cannot switch to uid {uid} gid {gid}: {e.strerror}") from None
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    caps.apply_sets(parsed)
    if "umask" in user:
        posix.umask(user["umask"])


MAX_PASSWD = 10 * 1024 * 1024  # containerd's bound on /etc/passwd (as isobox.images.userdb)
_PASSWD_OPEN = posix.O_RDONLY | posix.O_NONBLOCK | posix.O_NOCTTY


def set_default_home(process: dict[str, Any]) -> None:
    """HOME, when ``process.env`` has none or an empty one: the home directory of
    ``process.user.uid`` in the container's ``/etc/passwd``, "/" without an entry (runc's
    prepareEnv). Call it inside the container's root (after pivot_root or the mount
    namespace's setns), before seccomp and the user switch. No env at all stays empty."""
    env = process.get("env")
    if env is None:
        return
    home = next((e[5:] for e in reversed(env) if e.startswith("HOME=")), "")
    if home:
        return
    uid = process.get("user", {}).get("uid", 0)
    process["env"] = [e for e in env if not e.startswith("HOME=")] + [f"HOME={passwd_home(uid)}"]


def passwd_home(uid: int) -> str:
    """The home field of the first ``/etc/passwd`` entry of ``uid``, resolved in the current
    root; "/" when there is none or the file cannot be read (runc: any error, "/"). Only a
    regular file of at most :data:`MAX_PASSWD` bytes is read: a FIFO or device is never
    opened for reading (the O_PATH check, then the same inode re-opened)."""
    data = b""
    try:
        rootfd = posix.open("/", posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
        try:
            pfd = safepath.open_in_root(rootfd, "/etc/passwd")
            try:
                st = posix.fstat(pfd)
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PASSWD:
                    return "/"
                fd = safepath.open_in_root(rootfd, "/etc/passwd", _PASSWD_OPEN)
            finally:
                posix.close(pfd)
        finally:
            posix.close(rootfd)
        try:
            st2 = posix.fstat(fd)
            if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
                return "/"  # swapped between the two opens
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_PASSWD:
                chunk = posix.read(fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_PASSWD:
                return "/"
            data = b"".join(chunks)
        finally:
            posix.close(fd)
    except OSError:
        return "/"
    for line in data.split(b"\n"):
        f = line.split(b":")
        if len(f) >= 6 and f[2].isdigit() and len(f[2]) <= 20 and int(f[2]) == uid:
            return "/" if b"\0" in f[5] else f[5].decode("utf-8", "surrogateescape")
    return "/"


def try_enter_cwd(cwd: str) -> bool:
    """The chdir runc makes before the user switch: with the runtime's own credentials a
    directory the container user cannot search (``-u 1000 -w /root``) is still entered.
    False on EACCES/EPERM only (the user may still reach it: :func:`enter_cwd` after the
    switch); any other error (ENOENT, ENOTDIR, ...) is final."""
    try:
        posix.chdir(cwd)
    except PermissionError:
        return False
    except OSError as e:
        raise SystemSetupError(f"process.cwd {cwd!r}: {e.strerror}") from None
    _check_cwd()
    return True


def enter_cwd(cwd: str) -> None:
    """chdir and prove the result is inside the container root (CVE-2024-21626)."""
    try:
        posix.chdir(cwd)
    except OSError as e:
        raise SystemSetupError(f"process.cwd {cwd!r}: {e.strerror}") from None
    _check_cwd()


def _check_cwd() -> None:
    try:
        real = posix.getcwd()
    except FileNotFoundError:
        real = ""
    if not real.startswith("/"):
        raise SystemSetupError("current working directory is outside of container mount "
                               "namespace root -- possible container breakout detected")


def find_executable(args: list[str], env: list[str]) -> str:
    name = args[0]
    if "/" in name:
        candidates = [name]
    else:
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for e in env:
            if e.startswith("PATH="):
                path = e[5:]
        candidates = [pathnames.join(d or ".", name) for d in path.split(":")]
    found = False
    for cand in candidates:
        try:
            st = posix.stat(cand)
        except OSError:
            continue
        found = True
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return cand
    if "/" in name and found:  # execve's EACCES, as runc reports it (podman: exit 126)
        raise SystemSetupError(f'exec: "{name}": permission denied')
    if "/" in name:
        raise SystemSetupError(f'exec: "{name}": stat {name}: no such file or directory')
    raise SystemSetupError(f'exec: "{name}": executable file not found in $PATH')


def env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in env:
        k, _, v = e.partition("=")
        out[k] = v
    return out


_UNCATCHABLE = frozenset({9, 19})
_GLIBC_SIGNALS = (32, 33)  # thread cancellation and setxid: glibc's sigaction refuses them


def default_signals() -> None:
    """Every signal back to its default action, as a container process starts under runc: an
    ignored signal stays ignored across ``execve``, and Python ignores SIGPIPE and SIGXFSZ
    (a pipeline such as ``yes | head -1`` would print "Broken pipe"), a caller under
    ``nohup`` SIGHUP (a shell could not trap it). The mask is already empty."""
    import _signal  # type: ignore[import-not-found]  # signal without its enum import

    for sig in range(1, _signal.NSIG):
        if sig in _GLIBC_SIGNALS:
            sc.default_signal_action(sig)  # (conmon leaves them ignored)
        elif sig not in _UNCATCHABLE and _signal.getsignal(sig) == _signal.SIG_IGN:
            _signal.signal(sig, _signal.SIG_DFL)


def exec_process(path: str, process: dict[str, Any], seccomp: Program | None,
                 preserve_fds: int) -> None:
    """Close every fd the container must not see, apply seccomp (compiled) last, execve."""
    default_signals()
    posix.closerange(3 + preserve_fds, 1 << 20)
    if seccomp is not None and process.get("noNewPrivileges"):
        from isobox.linux import seccomp as sec

        sec.load_program(seccomp)
    posix.execve(path, process["args"], env_dict(process.get("env", [])))
