"""The engine's seccomp policy: Docker's default profile and ``--security-opt seccomp=FILE``.

:func:`default_profile` is an allow-list (``defaultAction: SCMP_ACT_ERRNO``, EPERM), as
moby's ``profiles/seccomp/default.json``: every syscall an ordinary program needs, plus
groups unlocked only by the capability that makes them useful (``CAP_SYS_ADMIN`` -> mount,
namespaces…; ``CAP_SYS_PTRACE`` -> ptrace, process_vm_*…). Never allowed: the kernel
keyring, io_uring, obsolete and kernel-module calls. ``ptrace`` and ``process_vm_*`` are
allowed, as Docker allows them on kernels >= 4.8 (where ptrace no longer bypasses seccomp;
catalogue case 17). Stricter than Docker in one place, on purpose: ``socketcall`` (the 32-bit
multiplexer that would hide the socket family) is not allowed.

Arguments are filtered where Docker does: ``clone`` with a namespace flag and ``clone3``
(ENOSYS, so libc falls back to clone) need CAP_SYS_ADMIN, ``personality`` takes only the
harmless personas, ``socket`` refuses AF_VSOCK and AF_ALG.

:func:`load_profile` reads Docker's profile JSON (``archMap``, ``includes``/``excludes`` by
caps, arches and ``minKernel``) or a plain OCI ``linux.seccomp`` object.
"""

from __future__ import annotations

import json
import os
import platform
import stat
from collections.abc import Collection
from typing import Any

from isobox.errors import ConfigError
from isobox.linux import capabilities
from isobox.linux import seccomp as lseccomp

EPERM = 1
ENOSYS = 38

# Everything a program without special capabilities uses (x86_64 and its 32-bit ABIs).
_BASE: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev",
    "accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk",
    "cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2",
    "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
    "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
    "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
    "get_mempolicy", "get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
    "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit", "ioctl", "ioprio_get",
    "ioprio_set", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat",
    "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
    "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
    "mmap2", "modify_ldt", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync",
    "munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "_newselect", "open",
    "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "rename", "renameat", "renameat2", "restart_syscall",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "set_robust_list",
    "set_thread_area", "set_tid_address", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
    "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority",
    "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
    "setreuid", "setreuid32", "setrlimit", "setsid", "setsockopt", "setuid", "setuid32",
    "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketpair", "splice", "stat", "stat64",
    "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range",
    "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
)

# Unlocked by one capability each (moby's "includes": {"caps": [...]}).
_BY_CAP: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "bpf", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
        "perf_event_open", "pivot_root", "quotactl", "quotactl_fd", "setdomainname",
        "sethostname", "setns", "swapoff", "swapon", "syslog", "umount", "umount2", "unshare",
    ),
    "CAP_SYS_BOOT": ("reboot", "kexec_load", "kexec_file_load"),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "userfaultfd"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64",
                     "clock_adjtime", "clock_adjtime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
    "CAP_DAC_READ_SEARCH": ("name_to_handle_at", "open_by_handle_at"),
}

#: Never allowed by the default profile, whatever the capabilities (cap-less obsolete or
#: kernel-attack-surface calls). Listed for the tests and documentation.
NEVER: tuple[str, ...] = (
    "add_key", "keyctl", "request_key", "io_uring_enter", "io_uring_register",
    "io_uring_setup", "create_module", "get_kernel_syms", "query_module", "nfsservctl",
    "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "socketcall",
)

# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (CLONE_NEWTIME is CSIGNAL's bit
# for clone(2); unshare(2), which could take it, needs CAP_SYS_ADMIN anyway).
CLONE_NAMESPACE_FLAGS = 0x7E020000
_PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
AF_ALG, AF_VSOCK = 38, 40

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}
# Docker profile "arches" (Go names) -> runtime-spec architectures.
_GO_ARCHES = {
    "amd64": "SCMP_ARCH_X86_64", "x86_64": "SCMP_ARCH_X86_64", "386": "SCMP_ARCH_X86",
    "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32", "arm64": "SCMP_ARCH_AARCH64",
    "aarch64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM",
}


def _native_arches() -> list[str]:
    return list(_ARCHES.get(platform.machine(), []))


def _norm_caps(caps: Collection[str]) -> set[str]:
    out = set()
    for cap in caps:
        upper = cap.upper()
        out.add(upper if upper.startswith("CAP_") else f"CAP_{upper}")
    return out


def _allow(names: list[str], *args: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ALLOW"}
    if args:
        rule["args"] = list(args)
    return rule


def _arg(index: int, op: str, value: int, value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def default_profile(caps: Collection[str] = capabilities.DOCKER_DEFAULT) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a container holding ``caps`` (bounding set)."""
    held = _norm_caps(caps)
    allowed = list(_BASE)
    for cap, names in _BY_CAP.items():
        if cap in held:
            allowed.extend(n for n in names if n not in allowed)
    rules: list[dict[str, Any]] = [_allow(allowed)]
    rules.extend(_allow(["personality"], _arg(0, "SCMP_CMP_EQ", p)) for p in _PERSONALITIES)
    # socket(domain): everything but AF_ALG (38) and AF_VSOCK (40); one condition per rule
    # (rules of one syscall are ORed, conditions on one index in a rule would be too).
    rules.extend([
        _allow(["socket"], _arg(0, "SCMP_CMP_LT", AF_ALG)),
        _allow(["socket"], _arg(0, "SCMP_CMP_EQ", AF_ALG + 1)),
        _allow(["socket"], _arg(0, "SCMP_CMP_GT", AF_VSOCK)),
    ])
    if "CAP_SYS_ADMIN" in held:
        rules.append(_allow(["clone"]))
    else:
        rules.append(_allow(["clone"], _arg(0, "SCMP_CMP_MASKED_EQ", CLONE_NAMESPACE_FLAGS, 0)))
        # ENOSYS: glibc then falls back to clone(2), whose flags can be checked.
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    profile: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM,
                               "syscalls": rules}
    arches = _native_arches()
    if arches:
        profile["architectures"] = arches
    return profile


# --------------------------------------------------------------------------- Docker JSON

def _kernel_at_least(spec: str) -> bool:
    def nums(text: str) -> tuple[int, ...]:
        out = []
        for part in text.split("-")[0].split(".")[:2]:
            digits = "".join(ch for ch in part if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return nums(platform.release()) >= nums(spec)


def _applies(rule: dict[str, Any], where: str, held: set[str], arches: set[str]) -> bool:
    for key, want in (("includes", True), ("excludes", False)):
        cond = rule.get(key) or {}
        if not isinstance(cond, dict):
            raise ConfigError(f"{where}.{key}", "must be an object")
        checks = []
        if cond.get("caps"):
            checks.append(bool(_norm_caps(cond["caps"]) & held) if not want
                          else _norm_caps(cond["caps"]) <= held)
        if cond.get("arches"):
            mapped = {_GO_ARCHES.get(a, a) for a in cond["arches"]}
            checks.append(bool(mapped & arches))
        if cond.get("minKernel"):
            checks.append(_kernel_at_least(str(cond["minKernel"])))
        if want and not all(checks):
            return False
        if not want and any(checks):
            return False
    return True


def convert_profile(doc: Any, where: str, caps: Collection[str]) -> dict[str, Any]:
    """Docker's seccomp profile JSON -> an OCI ``linux.seccomp`` object (validated)."""
    if not isinstance(doc, dict):
        raise ConfigError(where, "must be a JSON object")
    held = _norm_caps(caps)
    native = _native_arches()
    out: dict[str, Any] = {k: doc[k] for k in ("defaultAction", "defaultErrnoRet", "flags",
                                               "listenerPath", "listenerMetadata") if k in doc}
    arches: list[str] = []
    arch_map = doc.get("archMap")
    if arch_map:
        if not isinstance(arch_map, list):
            raise ConfigError(f"{where}.archMap", "must be an array")
        for i, entry in enumerate(arch_map):
            if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), str):
                raise ConfigError(f"{where}.archMap[{i}]", "must name an architecture")
            if native and entry["architecture"] == native[0]:
                arches = [entry["architecture"], *(entry.get("subArchitectures") or [])]
    elif doc.get("architectures"):
        arches = list(doc["architectures"])
    if arches:
        out["architectures"] = arches
    rules = doc.get("syscalls") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{where}.syscalls", "must be an array")
    out_rules = []
    for i, rule in enumerate(rules):
        rwhere = f"{where}.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(rwhere, "must be an object")
        if not _applies(rule, rwhere, held, set(arches or native)):
            continue
        names = rule.get("names")
        if names is None and rule.get("name"):
            names = [rule["name"]]
        new = {"names": names, "action": rule.get("action")}
        for key in ("args", "errnoRet"):
            if rule.get(key) is not None:
                new[key] = rule[key]
        out_rules.append(new)
    out["syscalls"] = out_rules
    lseccomp.validate(out, where)
    return out


MAX_PROFILE = 4 * 1024 * 1024


def load_profile(path: str, caps: Collection[str] = capabilities.DOCKER_DEFAULT
                 ) -> dict[str, Any]:
    """``--security-opt seccomp=PATH``: the file (Docker's format or OCI's), converted."""
    where = f"seccomp profile {path}"
    try:
        # O_NONBLOCK: a FIFO given as the profile is refused, never waited on
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise ConfigError(where, f"cannot read: {e.strerror}") from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(where, "not a regular file")
        data = f.read(MAX_PROFILE + 1)
    if len(data) > MAX_PROFILE:
        raise ConfigError(where, f"larger than {MAX_PROFILE} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(where, f"invalid JSON: {e}") from None
    return convert_profile(doc, where, caps)
