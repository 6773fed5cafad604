"""isobox.linux.seccomp: validation errors, and filters loaded for real in a forked child."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from isobox.errors import ConfigError, SystemSetupError
from isobox.linux import seccomp

RunInChild = Callable[..., Any]  # harness.run_in_child, via the in_child fixture

libc = ctypes.CDLL(None, use_errno=True)
libc.personality.argtypes = [ctypes.c_ulong]
libc.syscall.restype = ctypes.c_long

X32_SYSCALL_BIT = 0x40000000
NR_MKDIR = 83

# What this Python needs to keep running after the filter (report through the pipe, exit).
PYTHON_ALLOW = [
    "read", "write", "readv", "writev", "pread64", "close", "fstat", "newfstatat", "lseek",
    "mmap", "munmap", "mremap", "mprotect", "madvise", "brk", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "sigaltstack", "futex", "getpid", "gettid", "clock_gettime", "ioctl",
    "fcntl", "openat", "getrandom", "exit", "exit_group",
]


def rule(names: list[str], action: str, **kw: Any) -> dict[str, Any]:
    return {"names": names, "action": action, **kw}


def arg(index: int, value: int, op: str = "SCMP_CMP_EQ", value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def personality(persona: int) -> int:
    """personality(2) -> 0 if allowed (the old persona), else -errno."""
    ret = libc.personality(persona)
    return -ctypes.get_errno() if ret == -1 else 0


def try_mkdir(path: str) -> int:
    """0 if mkdir worked, else the errno."""
    try:
        os.mkdir(path)
    except OSError as e:
        return e.errno or -1
    os.rmdir(path)
    return 0


def status(key: str, path: str = "/proc/self/status") -> str:
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(key)


@pytest.fixture
def tmpdir_path(tmp_path: Any) -> str:
    return str(tmp_path / "d")


# -- validate (pure) -------------------------------------------------------------------------

@pytest.mark.parametrize(("obj", "where", "text"), [
    ([], "", "must be an object"),
    ({}, "", "defaultAction is required"),
    ({"defaultAction": "SCMP_ACT_FOO"}, ".defaultAction", 'unknown action "SCMP_ACT_FOO"'),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, ".defaultAction", "notify"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}, ".defaultErrnoRet",
     "only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000}, ".defaultErrnoRet",
     "from 0 to 4095"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]},
     ".architectures[1]", 'unknown architecture "SCMP_ARCH_Z80"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]},
     ".flags[0]", 'unknown flag "SECCOMP_FILTER_FLAG_BOGUS"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"},
     ".listenerPath", "seccomp notify (listenerPath) is not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, ".syscalls", "must be an array"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule([], "SCMP_ACT_ERRNO")]},
     ".syscalls[0].names", "non-empty array"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [rule(["read"], "SCMP_ACT_ERRNO"), rule(["mkdir"], "SCMP_ACT_FOO")]},
     ".syscalls[1].action", 'unknown action "SCMP_ACT_FOO"'),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(["read"], "SCMP_ACT_NOTIFY")]},
     ".syscalls[0].action", 'seccomp notify ("SCMP_ACT_NOTIFY") is not supported'),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], "SCMP_ACT_KILL", errnoRet=1)]},
     ".syscalls[0].errnoRet", "only valid with"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [rule(["personality"], "SCMP_ACT_ERRNO", args=[arg(0, 0, "SCMP_CMP_FOO")])]},
     ".syscalls[0].args[0].op", 'unknown operator "SCMP_CMP_FOO"'),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [rule(["personality"], "SCMP_ACT_ERRNO", args=[arg(0, 0), arg(6, 0)])]},
     ".syscalls[0].args[1].index", "from 0 to 5"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [rule(["personality"], "SCMP_ACT_ERRNO", args=[arg(0, 1 << 64)])]},
     ".syscalls[0].args[0].value", "unsigned 64-bit"),
])
def test_validate_names_the_field(obj: Any, where: str, text: str) -> None:
    with pytest.raises(ConfigError) as ei:
        seccomp.validate(obj)
    assert ei.value.where == "config.json: linux.seccomp" + where
    assert text in ei.value.message


def test_validate_accepts_unknown_syscalls_and_all_known_names() -> None:
    seccomp.validate({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": list(seccomp.KNOWN_ARCHES), "flags": list(seccomp.KNOWN_FLAGS),
        "listenerMetadata": "ignored without a listener",
        "syscalls": [rule(["no_such_syscall_2099"], a) for a in seccomp.KNOWN_ACTIONS
                     if a != "SCMP_ACT_ERRNO"]
        + [rule(["personality"], "SCMP_ACT_ALLOW", args=[arg(0, 0, op)])
           for op in seccomp.KNOWN_OPERATORS],
    }, where="x")


def test_constants_and_version() -> None:
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_LOG",
            "SCMP_ACT_TRACE", "SCMP_ACT_TRAP", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"} \
        == set(seccomp.KNOWN_ACTIONS)
    assert len(seccomp.KNOWN_OPERATORS) == 7
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"} <= set(seccomp.KNOWN_ARCHES)
    assert "SECCOMP_FILTER_FLAG_TSYNC" in seccomp.KNOWN_FLAGS
    assert re.fullmatch(r"\d+\.\d+\.\d+", seccomp.libseccomp_version())


def test_import_does_not_load_ctypes() -> None:
    code = ("import sys; import isobox.linux.seccomp as s; "
            "s.validate({'defaultAction': 'SCMP_ACT_ALLOW'}); "
            "bad = {'ctypes', 'typing', 're', 'enum', 'dataclasses', 'json'} & set(sys.modules); "
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_load_rejects_listener_without_touching_the_process() -> None:
    with pytest.raises(ConfigError, match="listenerPath"):
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x.sock"})
    assert status("Seccomp") == "0"


# -- loaded for real, in a child -------------------------------------------------------------

def test_errno_rule_on_mkdir(in_child: RunInChild, tmpdir_path: str) -> None:
    def child() -> tuple[int, str, str]:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW",
                      "syscalls": [rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO")]})
        return try_mkdir(tmpdir_path), status("Seccomp"), status("Seccomp_filters")

    assert in_child(child).ok() == (errno.EPERM, "2", "1")
    assert not os.path.exists(tmpdir_path)


def test_errno_ret_38(in_child: RunInChild, tmpdir_path: str) -> None:
    def child() -> int:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW",
                      "syscalls": [rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", errnoRet=38)]})
        return try_mkdir(tmpdir_path)

    assert in_child(child).ok() == errno.ENOSYS


def test_unknown_syscall_names_are_skipped(in_child: RunInChild, tmpdir_path: str) -> None:
    def child() -> int:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            rule(["no_such_syscall_2099", "mkdir", "mkdirat", "another_one"], "SCMP_ACT_ERRNO"),
        ]})
        return try_mkdir(tmpdir_path)

    assert in_child(child).ok() == errno.EPERM


def test_syscalls_newer_than_the_profile_get_enosys(in_child: RunInChild) -> None:
    """As runc: a syscall newer than every syscall the profile names returns ENOSYS (libc
    falls back from clone3 only on ENOSYS); an older unnamed one gets the default action."""
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
               "syscalls": [rule(PYTHON_ALLOW, "SCMP_ACT_ALLOW")]}

    def child() -> tuple[int, int, int]:
        seccomp.load(profile)
        out = []
        for nr in (435, 434, 165):  # clone3, pidfd_open (newer than any named), mount (older)
            libc.syscall(nr, 0, 0, 0)
            out.append(ctypes.get_errno())
        return out[0], out[1], out[2]

    assert in_child(child).ok() == (errno.ENOSYS, errno.ENOSYS, errno.EPERM)


def test_errno_default_with_python_allow_list(in_child: RunInChild, tmpdir_path: str) -> None:
    """defaultAction ERRNO(EPERM); personality allowed only for arg0 == 0."""
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "syscalls": [
            rule(PYTHON_ALLOW, "SCMP_ACT_ALLOW"),
            rule(["personality"], "SCMP_ACT_ALLOW", args=[arg(0, 0)]),
            rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", errnoRet=1),  # == default: skipped
        ],
    }

    def child() -> tuple[int, int, int, int]:
        seccomp.load(profile)
        try:
            os.getcwd()
            cwd = 0
        except OSError as e:
            cwd = e.errno or -1
        return personality(0), personality(0x40000), try_mkdir(tmpdir_path), cwd

    assert in_child(child).ok() == (0, -errno.EPERM, errno.EPERM, errno.EPERM)


def test_rule_without_errno_ret_is_eperm_not_default_errno_ret(
    in_child: RunInChild, tmpdir_path: str
) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "syscalls": [rule(PYTHON_ALLOW, "SCMP_ACT_ALLOW"),
                     rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO")],
    }

    def child() -> tuple[int, int]:
        seccomp.load(profile)
        return try_mkdir(tmpdir_path), personality(0)

    assert in_child(child).ok() == (errno.EPERM, -errno.ENOSYS)


def test_masked_eq_value_is_mask_value_two_is_datum(in_child: RunInChild) -> None:
    def child() -> list[int]:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            rule(["personality"], "SCMP_ACT_ERRNO",
                 args=[arg(0, 0xFFFF0000, "SCMP_CMP_MASKED_EQ", value_two=0x40000)]),
        ]})
        return [personality(p) for p in (0x40000, 0x40008, 0x60000, 0x20000, 0)]

    # (0x60000 & 0xFFFF0000) != 0x40000; swapped (mask 0x40000), it would match
    assert in_child(child).ok() == [-errno.EPERM, -errno.EPERM, 0, 0, 0]


def test_same_index_args_become_separate_rules(in_child: RunInChild) -> None:
    """Two conditions on arg 0: runc adds one rule each, so either matches (OR)."""
    def child() -> list[int]:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            rule(["personality"], "SCMP_ACT_ERRNO", args=[arg(0, 0x40000), arg(0, 0x20000)]),
        ]})
        return [personality(p) for p in (0x40000, 0x20000, 0)]

    assert in_child(child).ok() == [-errno.EPERM, -errno.EPERM, 0]


def test_different_index_args_are_anded(in_child: RunInChild) -> None:
    def child() -> list[int]:
        fd = os.open("/proc/self/status", os.O_RDONLY)
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            rule(["lseek"], "SCMP_ACT_ERRNO", errnoRet=errno.EBADMSG,
                 args=[arg(1, 5), arg(2, os.SEEK_SET)]),
        ]})
        out = []
        for off, whence in ((5, os.SEEK_SET), (5, os.SEEK_CUR), (6, os.SEEK_SET)):
            try:
                os.lseek(fd, off, whence)
                out.append(0)
            except OSError as e:
                out.append(e.errno or -1)
        return out

    assert in_child(child).ok() == [errno.EBADMSG, 0, 0]


def test_trace_without_tracer_is_enosys(in_child: RunInChild, tmpdir_path: str) -> None:
    def child() -> int:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW",
                      "syscalls": [rule(["mkdir", "mkdirat"], "SCMP_ACT_TRACE")]})
        return try_mkdir(tmpdir_path)

    assert in_child(child).ok() == errno.ENOSYS


def test_log_allows(in_child: RunInChild, tmpdir_path: str) -> None:
    def child() -> int:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                      "syscalls": [rule(["mkdir", "mkdirat"], "SCMP_ACT_LOG")]})
        return try_mkdir(tmpdir_path)

    assert in_child(child).ok() == 0


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"])
def test_kill_and_trap_end_with_sigsys(in_child: RunInChild, action: str) -> None:
    def child() -> str:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["getcwd"], action)]})
        return os.getcwd()

    res = in_child(child)
    assert res.signal == signal.SIGSYS, res


def test_kill_process_kills_every_thread(in_child: RunInChild) -> None:
    def child() -> str:
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW",
                      "syscalls": [rule(["getcwd"], "SCMP_ACT_KILL_PROCESS")]})
        return os.getcwd()

    assert in_child(child).signal == signal.SIGSYS


@pytest.mark.parametrize("flags", [["SECCOMP_FILTER_FLAG_TSYNC"], []])
def test_tsync_filters_every_thread(in_child: RunInChild, flags: list[str]) -> None:
    """TSYNC is always requested (as libseccomp-golang does); the flag is accepted."""
    def child() -> tuple[str, str]:
        ready, stop = threading.Event(), threading.Event()
        tids: list[int] = []

        def other() -> None:
            tids.append(threading.get_native_id())
            ready.set()
            stop.wait()

        t = threading.Thread(target=other, daemon=True)
        t.start()
        ready.wait()
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "flags": flags,
                      "syscalls": [rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO")]})
        result = (status("Seccomp"), status("Seccomp", f"/proc/self/task/{tids[0]}/status"))
        stop.set()
        t.join()
        return result

    assert in_child(child).ok() == ("2", "2")


def test_spec_allow_flag(in_child: RunInChild) -> None:
    def child() -> str:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW",
                      "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]})
        return status("Seccomp")

    assert in_child(child).ok() == "2"


def test_x86_architectures_and_the_x32_abi(in_child: RunInChild, tmpdir_path: str) -> None:
    """With X32 in the filter, an x32 mkdir gets the rule's errno (the filter runs first)."""
    arches = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]

    def child() -> tuple[int, int]:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "architectures": arches,
                      "syscalls": [rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", errnoRet=77)]})
        ret = libc.syscall(X32_SYSCALL_BIT | NR_MKDIR, tmpdir_path.encode(), 0o755)
        return try_mkdir(tmpdir_path), -ctypes.get_errno() if ret == -1 else 0

    assert in_child(child).ok() == (77, -77)
    assert not os.path.exists(tmpdir_path)


def test_x32_abi_is_killed_when_not_listed(in_child: RunInChild, tmpdir_path: str) -> None:
    def child() -> int:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]})
        return int(libc.syscall(X32_SYSCALL_BIT | NR_MKDIR, tmpdir_path.encode(), 0o755))

    assert in_child(child).signal == signal.SIGSYS
    assert not os.path.exists(tmpdir_path)


def test_arch_unknown_to_libseccomp(in_child: RunInChild) -> None:
    if tuple(int(x) for x in seccomp.libseccomp_version().split(".")) >= (2, 6, 0):
        pytest.skip("libseccomp >= 2.6 knows loongarch64")

    def child() -> str:
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW",
                      "architectures": ["SCMP_ARCH_LOONGARCH64"]})
        return status("Seccomp")

    res = in_child(child)
    assert res.error is not None and "ConfigError" in res.error
    assert "architectures[0]" in res.error and "not supported by libseccomp" in res.error


def test_without_nnp_loading_needs_cap_sys_admin(in_child: RunInChild) -> None:
    """The runtime's order: no NNP -> load before dropping capabilities; NNP -> any time."""
    def child(nnp: bool) -> str:
        if nnp:
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW"})
        return status("Seccomp") + status("NoNewPrivs")

    res = in_child(lambda: child(False))
    assert res.error is not None and res.error.startswith(SystemSetupError.__name__)
    assert "CAP_SYS_ADMIN" in res.error
    assert in_child(lambda: child(True)).ok() == "21"
