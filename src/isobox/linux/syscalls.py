"""Wrappers for mount, namespaces, pivot_root, prctl, openat2 and friends.

Every wrapper raises ``OSError`` with the errno and the offending path, like ``os`` does.
The C calls go through :mod:`isobox.linux.libc` (``_ctypes`` without the cost of importing
:mod:`ctypes`); the runtime imports this module only on the paths that need a syscall
(create, exec), keeping ``start``/``state``/``delete`` lean.
"""

from __future__ import annotations

import errno
import posix
import sys

from isobox.linux import libc as C

_syscall = C.function("syscall", C.c_long)
_mount = C.function("mount")
_umount2 = C.function("umount2")
_unshare = C.function("unshare")
_setdomainname = C.function("setdomainname")
_sethostname = C.function("sethostname")
_prctl = C.function("prctl")
_fstatfs = C.function("fstatfs")
_statfs = C.function("statfs")
_prlimit = C.function("prlimit")  # glibc: prlimit64 on x86_64, 64-bit rlim_t

# Namespaces (linux/sched.h)
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# Mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_POSIXACL = 1 << 16
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_IVERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# prctl (linux/prctl.h)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# openat2 (linux/openat2.h)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# x86_64 syscall numbers Python has no wrapper for.
_NR = {
    "rt_sigaction": 13,
    "pivot_root": 155,
    "setdomainname": 171,
    "keyctl": 250,
    "ioprio_set": 251,
    "setns": 308,
    "sched_setattr": 314,
    "openat2": 437,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "seccomp": 317,
}

# New mount API (linux/mount.h)
FSOPEN_CLOEXEC = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

PROC_SUPER_MAGIC = 0x9FA0
TMPFS_MAGIC = 0x01021994


_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = C.get_errno()
        raise OSError(err, f"{what}: {posix.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode(_FS_ENCODING, _FS_ERRORS)  # = os.fsencode(s)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2). ``target`` may be ``/proc/self/fd/N`` of an O_PATH fd (mount through a handle)."""
    ret = _mount(_b(source), _b(target), _b(fstype), C.c_ulong(flags), _b(data))
    _check(ret, f"mount {source or fstype or ''} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_umount2(_b(target), flags), f"umount {target}", target)


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def default_signal_action(sig: int) -> None:
    """rt_sigaction(2) to SIG_DFL, straight to the kernel: glibc refuses its own two signals
    (32, 33) even to a process about to ``execve``."""
    act = bytes(32)  # struct kernel_sigaction: handler SIG_DFL, no flags, restorer or mask
    _check(_syscall(_NR["rt_sigaction"], sig, act, None, 8), f"rt_sigaction({sig})")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_syscall(_NR["setns"], fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(_NR["pivot_root"], _b(new_root), _b(put_old)), "pivot_root", new_root)


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_setdomainname(raw, len(raw)), "setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _prctl(option, C.c_ulong(arg2), C.c_ulong(arg3), C.c_ulong(arg4), C.c_ulong(arg5)),
        f"prctl({option})",
    )


def join_session_keyring(name: str | None = None) -> None:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING): a fresh session keyring per container, as runc."""
    _check(_syscall(_NR["keyctl"], 1, _b(name)), "keyctl(JOIN_SESSION_KEYRING)")


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    _check(_syscall(_NR["ioprio_set"], which, who, ioprio), "ioprio_set")


class _SchedAttr(C.Structure):
    _fields_ = [
        ("size", C.c_uint32),
        ("sched_policy", C.c_uint32),
        ("sched_flags", C.c_uint64),
        ("sched_nice", C.c_int32),
        ("sched_priority", C.c_uint32),
        ("sched_runtime", C.c_uint64),
        ("sched_deadline", C.c_uint64),
        ("sched_period", C.c_uint64),
    ]


def sched_setattr(pid: int, policy: int, flags: int = 0, nice: int = 0, priority: int = 0,
                  runtime: int = 0, deadline: int = 0, period: int = 0) -> None:
    attr = _SchedAttr(C.sizeof(_SchedAttr), policy, flags, nice, priority, runtime,
                      deadline, period)
    _check(_syscall(_NR["sched_setattr"], pid, C.byref(attr), 0), "sched_setattr")


class _OpenHow(C.Structure):
    _fields_ = [("flags", C.c_uint64), ("mode", C.c_uint64), ("resolve", C.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2); the fd it returns is always O_CLOEXEC."""
    how = _OpenHow(flags | posix.O_CLOEXEC, mode, resolve)
    ret = _syscall(_NR["openat2"], dirfd, _b(path), C.byref(how), C.sizeof(how))
    return _check(ret, f"openat2 {path}", path)


SECCOMP_SET_MODE_FILTER = 1


def seccomp_set_mode_filter(program: bytes, flags: int) -> None:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, &sock_fprog) with a compiled classic-BPF
    ``program`` (8-byte ``sock_filter`` instructions, native byte order)."""
    count = len(program) // 8
    insns = (C.c_uint64 * count).from_buffer_copy(program)
    fprog = (C.c_uint64 * 2)(count, C.addressof(insns))  # unsigned short len, padding, ptr
    ret = _check(_syscall(_NR["seccomp"], SECCOMP_SET_MODE_FILTER, C.c_ulong(flags),
                          C.byref(fprog)), "seccomp(SECCOMP_SET_MODE_FILTER)")
    if ret != 0:  # with TSYNC: the id of a thread that could not be synchronised, and no
        raise OSError(errno.ESRCH, f"seccomp: thread {ret} could not take the filter (TSYNC)")


class _StatFs(C.Structure):
    _fields_ = [("f_type", C.c_long), ("_rest", C.c_long * 15)]


def fstatfs_type(fd: int) -> int:
    """The filesystem magic of the file ``fd`` refers to (e.g. PROC_SUPER_MAGIC)."""
    buf = _StatFs()
    _check(_fstatfs(fd, C.byref(buf)), "fstatfs")
    return int(buf.f_type)


def statfs_type(path: str) -> int:
    buf = _StatFs()
    _check(_statfs(_b(path), C.byref(buf)), f"statfs {path}", path)
    return int(buf.f_type)


def fsmount_new(fstype: str, attrs: int = 0) -> int:
    """A new, detached instance of ``fstype`` (fsopen, fsconfig CREATE, fsmount): an fd of
    its root that no mount in any namespace can redirect. Always O_CLOEXEC."""
    fs = _check(_syscall(_NR["fsopen"], _b(fstype), FSOPEN_CLOEXEC), f"fsopen {fstype}")
    try:
        _check(_syscall(_NR["fsconfig"], fs, FSCONFIG_CMD_CREATE, None, None, 0),
               f"fsconfig {fstype}")
        return _check(_syscall(_NR["fsmount"], fs, FSMOUNT_CLOEXEC, attrs), f"fsmount {fstype}")
    finally:
        posix.close(fs)


def getrlimit(resource: int) -> tuple[int, int]:
    """(soft, hard) of this process; :mod:`resource`'s, without loading its shared library."""
    old = (C.c_ulong * 2)()
    _check(_prlimit(0, resource, None, old), "getrlimit")
    return old[0], old[1]


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """Raises OSError: EPERM to raise a hard limit without CAP_SYS_RESOURCE, EINVAL for a
    soft limit above the hard one."""
    _check(_prlimit(0, resource, (C.c_ulong * 2)(soft, hard), None), "setrlimit")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_sethostname(raw, len(raw)), "sethostname")


NS_GET_NSTYPE = 0xB703
