"""``fork`` straight into a cgroup v2 directory: clone3(CLONE_INTO_CGROUP).

Moving a process with a write to ``cgroup.procs`` takes the kernel's global
threadgroup lock, whose first writer waits for an RCU grace period (12-20 ms here, on
every container create). A child born in the cgroup pays nothing. This behaves like
:func:`os.fork`: the same interpreter hooks run around the syscall (PyOS_BeforeFork /
AfterFork_*), and the GIL is held throughout (the call is made like ``PyDLL``'s).

Caveat: glibc's cached thread id of the child is the parent's (glibc's own fork updates
it, a raw clone3 cannot), which only matters for ``raise``/``pthread_kill`` in the child;
callers use the child for a few syscalls, then ``fork``, ``execve`` or ``_exit``.
"""

from __future__ import annotations

import posix

from isobox.linux import libc as C

CLONE_INTO_CGROUP = 0x200000000
SIGCHLD = 17
_NR_CLONE3 = 435


class _CloneArgs(C.Structure):
    _fields_ = [(name, C.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def fork_into_cgroup(cgroup_fd: int, flags: int = 0) -> int:
    """Like posix.fork(), with the child created in the cgroup2 directory ``cgroup_fd`` (and in
    new namespaces for the CLONE_NEW* bits of ``flags``).

    Raises OSError (ENOSYS, EINVAL, …) when the kernel cannot do it; the caller falls back.
    """
    syscall = C.api_function("syscall", C.c_long)
    before, in_child, in_parent = (C.api_function(f"PyOS_{name}") for name in (
        "BeforeFork", "AfterFork_Child", "AfterFork_Parent"))
    args = _CloneArgs(flags=CLONE_INTO_CGROUP | flags, exit_signal=SIGCHLD, cgroup=cgroup_fd)
    size = C.c_size_t(C.sizeof(args))
    before()
    pid = syscall(_NR_CLONE3, C.byref(args), size)
    if pid == 0:
        in_child()
        return 0
    err = C.get_errno()
    in_parent()
    if pid < 0:
        raise OSError(err, f"clone3(CLONE_INTO_CGROUP): {posix.strerror(err)}")
    return int(pid)
