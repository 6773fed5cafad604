"""``fork`` straight into a cgroup v2 directory: clone3(CLONE_INTO_CGROUP).

Moving a process with a write to ``cgroup.procs`` takes the kernel's global
threadgroup lock, whose first writer waits for an RCU grace period (12-20 ms here, on
every container create). A child born in the cgroup pays nothing. This behaves like
:func:`os.fork`: the same interpreter hooks run around the syscall (PyOS_BeforeFork /
AfterFork_*), and the GIL is held throughout (the call goes through ``PyDLL``).

Caveat: glibc's cached thread id of the child is the parent's (glibc's own fork updates
it, a raw clone3 cannot), which only matters for ``raise``/``pthread_kill`` in the child;
callers use the child for a few syscalls, then ``fork``, ``execve`` or ``_exit``.
"""

from __future__ import annotations

import ctypes
import os

CLONE_INTO_CGROUP = 0x200000000
SIGCHLD = 17
_NR_CLONE3 = 435


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def fork_into_cgroup(cgroup_fd: int, flags: int = 0) -> int:
    """Like os.fork(), with the child created in the cgroup2 directory ``cgroup_fd`` (and in
    new namespaces for the CLONE_NEW* bits of ``flags``).

    Raises OSError (ENOSYS, EINVAL, …) when the kernel cannot do it; the caller falls back.
    """
    py = ctypes.PyDLL(None, use_errno=True)
    py.syscall.restype = ctypes.c_long
    api = ctypes.pythonapi
    args = _CloneArgs(flags=CLONE_INTO_CGROUP | flags, exit_signal=SIGCHLD, cgroup=cgroup_fd)
    api.PyOS_BeforeFork()
    pid = py.syscall(_NR_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3(CLONE_INTO_CGROUP): {os.strerror(err)}")
    return int(pid)
