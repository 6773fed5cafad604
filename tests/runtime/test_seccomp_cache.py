"""The compiled-seccomp cache under --root: reused when it may be, never trusted when it may
not be (a cache entry decides what a container may call)."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest

from harness import Bundle, Runtime, unique_id
from isobox.fastjson import dumps, loads
from isobox.runtime.seccomp_cache import _MAGIC, CACHE_DIR

DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
}
DENY_RMDIR = {**DENY_MKDIR, "syscalls": [{"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"}]}
# one instruction: return SECCOMP_RET_ALLOW (BPF_RET | BPF_K)
ALLOW_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)
PROBE = "mkdir /tmp/d 2>&1 && echo made; grep Seccomp: /proc/self/status"


@pytest.fixture(autouse=True)
def _writable_root(bundle: Bundle) -> None:
    bundle.config["root"]["readonly"] = False


def run(runtime: Runtime, bundle: Bundle, profile: dict[str, Any]) -> str:
    bundle.config["linux"]["seccomp"] = profile
    bundle.set_args("sh", "-c", PROBE)
    return runtime("run", "--bundle", bundle.path, unique_id()).out


def entries(runtime: Runtime) -> list[str]:
    d = os.path.join(runtime.root, CACHE_DIR)
    return sorted(os.path.join(d, n) for n in os.listdir(d))


def split(path: str) -> tuple[dict[str, Any], bytes]:
    with open(path, "rb") as f:
        data = f.read()
    size = int.from_bytes(data[8:12], "little")
    return loads(data[12:12 + size]), data[12 + size:]


def rewrite(path: str, header: dict[str, Any], program: bytes, mode: int = 0o600) -> None:
    raw = dumps(header).encode()
    os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(_MAGIC + len(raw).to_bytes(4, "little") + raw + program)
    os.chmod(path, mode)


def test_compiled_once_then_reused(runtime: Runtime, bundle: Bundle) -> None:
    out = run(runtime, bundle, DENY_MKDIR)
    assert "Permission denied" in out and "Seccomp:\t2" in out
    [entry] = entries(runtime)
    st = os.stat(entry)
    assert st.st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(entry)).st_mode & 0o777 == 0o700
    out = run(runtime, bundle, DENY_MKDIR)
    assert "Permission denied" in out and "made" not in out
    again = os.stat(entry)
    assert (again.st_ino, again.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)  # not rewritten
    run(runtime, bundle, DENY_RMDIR)
    assert len(entries(runtime)) == 2  # another profile, another entry


def test_a_trusted_entry_is_what_gets_loaded(runtime: Runtime, bundle: Bundle) -> None:
    """White-box: an entry owned by the runtime's user and writable by it only is loaded
    as it is (here replaced by allow-all, so mkdir works): the cache really is consulted."""
    run(runtime, bundle, DENY_MKDIR)
    [entry] = entries(runtime)
    header, _ = split(entry)
    rewrite(entry, header, ALLOW_ALL)
    assert "made" in run(runtime, bundle, DENY_MKDIR)


@pytest.mark.parametrize("tamper", ["group-writable", "world-writable", "symlink",
                                    "directory-writable", "other-profile", "library-changed",
                                    "truncated"])
def test_an_untrustworthy_entry_is_ignored(runtime: Runtime, bundle: Bundle,
                                            tamper: str) -> None:
    """Security: an entry anyone else could have written, one reached through a symlink, or
    one made for another profile or library, never becomes the container's filter."""
    run(runtime, bundle, DENY_MKDIR)
    [entry] = entries(runtime)
    header, program = split(entry)
    if tamper in ("group-writable", "world-writable"):
        rewrite(entry, header, ALLOW_ALL, 0o620 if tamper == "group-writable" else 0o602)
    elif tamper == "symlink":
        decoy = os.path.join(os.path.dirname(entry), ".decoy")
        rewrite(entry, header, ALLOW_ALL)
        os.rename(entry, decoy)
        os.symlink(decoy, entry)
    elif tamper == "directory-writable":
        rewrite(entry, header, ALLOW_ALL)
        os.chmod(os.path.dirname(entry), 0o777)
    elif tamper == "other-profile":
        rewrite(entry, {**header, "key": header["key"].replace("mkdir", "rmdir")}, ALLOW_ALL)
    elif tamper == "library-changed":
        library = list(header["library"])
        library[4] += 1  # the library file's mtime: as after an upgrade
        rewrite(entry, {**header, "library": library}, ALLOW_ALL)
    else:
        rewrite(entry, header, program[:-3])
    out = run(runtime, bundle, DENY_MKDIR)
    assert "Permission denied" in out and "made" not in out, out


@pytest.mark.parametrize("tamper", ["entry-owned-by-another-user", "directory-symlink",
                                    "directory-owned-by-another-user"])
def test_ownership_and_symlinked_directories_are_checked(runtime: Runtime, bundle: Bundle,
                                                         tamper: str) -> None:
    run(runtime, bundle, DENY_MKDIR)
    [entry] = entries(runtime)
    header, _ = split(entry)
    rewrite(entry, header, ALLOW_ALL)
    cache = os.path.dirname(entry)
    if tamper == "entry-owned-by-another-user":
        os.chown(entry, 65534, 65534)
    elif tamper == "directory-owned-by-another-user":
        os.chown(cache, 65534, 65534)
    else:  # the trusted-looking entry moved elsewhere, the cache directory a link to it
        elsewhere = os.path.join(runtime.root, ".elsewhere")
        os.rename(cache, elsewhere)
        os.symlink(elsewhere, cache)
    out = run(runtime, bundle, DENY_MKDIR)
    assert "Permission denied" in out and "made" not in out, out


@pytest.mark.parametrize("nnp", [True, False])
def test_exec_uses_the_cache_too(runtime: Runtime, bundle: Bundle, nnp: bool) -> None:
    bundle.config["process"]["noNewPrivileges"] = nnp
    bundle.config["linux"]["seccomp"] = DENY_MKDIR
    bundle.set_args("sleep", "100")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    try:
        [entry] = entries(runtime)
        st = os.stat(entry)
        probe = runtime("exec", cid, "sh", "-c", PROBE).out
        assert "Permission denied" in probe and "Seccomp:\t2" in probe
        assert os.stat(entry).st_ino == st.st_ino  # read, not compiled again
        header, _ = split(entry)
        rewrite(entry, header, ALLOW_ALL)  # white-box: exec installs what the cache holds
        assert "made" in runtime("exec", cid, "sh", "-c", PROBE).out
    finally:
        runtime("delete", "--force", cid, check=False)


def test_a_failed_thread_synchronisation_is_an_error() -> None:
    """seccomp(2) with TSYNC returns the id of a thread it could not synchronise (a thread
    with a filter of its own) and installs nothing: that must not pass for success."""
    from isobox.linux import seccomp as sec

    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        import threading

        code = 3
        try:
            ready = threading.Event()

            def own_filter() -> None:
                sec.load_program(sec.Program(ALLOW_ALL, 0))
                ready.set()
                threading.Event().wait(5)

            threading.Thread(target=own_filter, daemon=True).start()
            ready.wait(5)
            try:
                sec.load_program(sec.Program(ALLOW_ALL, 1))  # 1: TSYNC
                code = 1
            except sec.SystemSetupError as e:
                code = 0 if "TSYNC" in str(e) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
