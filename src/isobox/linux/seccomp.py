"""Load an OCI ``linux.seccomp`` object with Debian's libseccomp (``libseccomp.so.2``) via ctypes.

``validate()`` is pure (no ctypes, no library). ``load()`` opens libseccomp on first use,
builds the filter and loads it into the calling process, with the same semantics as runc
(libcontainer/seccomp/seccomp_linux.go):

* rule errno: ``errnoRet``, else EPERM (runtime-spec: "If not specified then its default
  value is EPERM"; ``defaultErrnoRet`` applies to ``defaultAction`` only); same for TRACE;
* a rule whose resolved action equals the default action is skipped (libseccomp refuses it);
* a syscall name unknown to libseccomp is skipped (profiles list syscalls newer than the
  library or kernel);
* the ``args`` of one rule are ANDed in a single libseccomp rule, unless two of them test the
  same argument index: then each condition becomes a rule of its own (ORed), as runc does;
* ``SCMP_CMP_MASKED_EQ``: ``value`` is the mask, ``valueTwo`` the datum to compare with;
* TSYNC is always requested (every thread gets the filter), so the TSYNC flag is a no-op;
* ``SCMP_FLTATR_CTL_NNP`` is 0: the caller sets no_new_privs itself. Without no_new_privs,
  loading needs CAP_SYS_ADMIN, so the runtime must then load *before* dropping capabilities;
  with it, load as late as possible, just before execve (runc's order).

Not supported: seccomp notify (``SCMP_ACT_NOTIFY``, ``listenerPath``), rejected with an error.

``compile_program()`` stops short of loading: it returns the classic-BPF program libseccomp
generated (``seccomp_export_bpf``: the program ``seccomp_load`` would install) and the
seccomp(2) flags, and ``load_program()`` installs such a program with one syscall, without
libseccomp. The runtime compiles in its parent process (with a cache:
``isobox.runtime.seccomp_cache``) while the container's init sets up, because libseccomp takes
15-20 ms here to generate the program of Docker's default profile.
"""

from __future__ import annotations

from isobox.errors import ConfigError, SystemSetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

WHERE = "config.json: linux.seccomp"

# libseccomp actions (seccomp.h); ERRNO and TRACE carry 16 bits of data.
_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_TRACE = 0x7FF00000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000

_ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": _ACT_KILL_PROCESS,
    "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
    "SCMP_ACT_TRAP": _ACT_TRAP,
    "SCMP_ACT_ERRNO": _ACT_ERRNO,
    "SCMP_ACT_TRACE": _ACT_TRACE,
    "SCMP_ACT_ALLOW": _ACT_ALLOW,
    "SCMP_ACT_LOG": _ACT_LOG,
}
#: Actions ``load`` implements (runtime-spec names). SCMP_ACT_NOTIFY is rejected.
KNOWN_ACTIONS: tuple[str, ...] = tuple(_ACTIONS)
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_ERRNO_MAX = {"SCMP_ACT_ERRNO": 4095, "SCMP_ACT_TRACE": 0xFFFF}

_OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
KNOWN_OPERATORS: tuple[str, ...] = tuple(_OPERATORS)

# runtime-spec name -> libseccomp name (seccomp_arch_resolve_name). libseccomp 2.5.4 lacks the
# last four; load() reports them as not supported by the installed library.
_ARCHES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}
KNOWN_ARCHES: tuple[str, ...] = tuple(_ARCHES)

# libseccomp filter attributes (enum scmp_filter_attr).
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7
_ATTR_CTL_OPTIMIZE = 8
_ATTR_API_SYSRAWRC = 9

_FLAG_TSYNC = "SECCOMP_FILTER_FLAG_TSYNC"
_FLAG_LOG = "SECCOMP_FILTER_FLAG_LOG"
_FLAG_SPEC_ALLOW = "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
#: Flags ``load`` implements. SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only changes how a
#: notify listener is woken; with notify unsupported (and libseccomp 2.5.4 lacking
#: SCMP_FLTATR_CTL_WAITKILL) it is rejected as unknown.
KNOWN_FLAGS: tuple[str, ...] = (_FLAG_TSYNC, _FLAG_LOG, _FLAG_SPEC_ALLOW)
_FLAG_ATTRS = {_FLAG_LOG: _ATTR_CTL_LOG, _FLAG_SPEC_ALLOW: _ATTR_CTL_SSB}

_MAX_ARGS = 6
_U64 = 1 << 64
_NR_SCMP_ERROR = -1
_EPERM = 1
_EACCES = 13
_EEXIST = 17
_EOPNOTSUPP = 95


# -- validation (pure) -----------------------------------------------------------------------

def _is_uint(v: Any, limit: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < limit


def _check_action(obj: dict[str, Any], where: str, action_key: str, errno_key: str) -> None:
    action = obj.get(action_key)
    if action is None:
        raise ConfigError(where, f"{action_key} is required")
    if action == "SCMP_ACT_NOTIFY":
        raise ConfigError(f"{where}.{action_key}",
                          'seccomp notify ("SCMP_ACT_NOTIFY") is not supported')
    if not isinstance(action, str) or action not in _ACTIONS:
        raise ConfigError(f"{where}.{action_key}", f'unknown action "{action}"')
    errno = obj.get(errno_key)
    if errno is not None:
        if action not in _WITH_ERRNO:
            raise ConfigError(f"{where}.{errno_key}",
                              f"is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}")
        limit = _ERRNO_MAX[action]
        if not _is_uint(errno, limit + 1):
            raise ConfigError(f"{where}.{errno_key}", f"must be an integer from 0 to {limit}")


def validate(obj: Any, where: str = WHERE) -> None:
    """Check an OCI ``linux.seccomp`` object; raise ConfigError naming the offending field.

    Unknown syscall names are not errors (``load`` skips them), unknown properties are
    ignored (runtime-spec), seccomp notify (``listenerPath``, ``SCMP_ACT_NOTIFY``) is refused.
    """
    if not isinstance(obj, dict):
        raise ConfigError(where, "must be an object")
    _check_action(obj, where, "defaultAction", "defaultErrnoRet")
    if obj.get("listenerPath"):
        raise ConfigError(f"{where}.listenerPath",
                          "seccomp notify (listenerPath) is not supported")
    if obj.get("listenerMetadata") is not None and not isinstance(obj["listenerMetadata"], str):
        raise ConfigError(f"{where}.listenerMetadata", "must be a string")
    for key, known, what in (("architectures", _ARCHES, "architecture"),
                             ("flags", KNOWN_FLAGS, "flag")):
        items = obj.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise ConfigError(f"{where}.{key}", "must be an array of strings")
        for i, item in enumerate(items):
            if not isinstance(item, str) or item not in known:
                raise ConfigError(f"{where}.{key}[{i}]", f'unknown {what} "{item}"')
    syscalls = obj.get("syscalls")
    if syscalls is None:
        return
    if not isinstance(syscalls, list):
        raise ConfigError(f"{where}.syscalls", "must be an array")
    for i, rule in enumerate(syscalls):
        rwhere = f"{where}.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(rwhere, "must be an object")
        names = rule.get("names")
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{rwhere}.names", "must be a non-empty array of syscall names")
        for j, sc_name in enumerate(names):
            if not isinstance(sc_name, str) or not sc_name:
                raise ConfigError(f"{rwhere}.names[{j}]", "must be a non-empty string")
        _check_action(rule, rwhere, "action", "errnoRet")
        args = rule.get("args")
        if args is None:
            continue
        if not isinstance(args, list):
            raise ConfigError(f"{rwhere}.args", "must be an array")
        for j, arg in enumerate(args):
            awhere = f"{rwhere}.args[{j}]"
            if not isinstance(arg, dict):
                raise ConfigError(awhere, "must be an object")
            if not _is_uint(arg.get("index"), _MAX_ARGS):
                raise ConfigError(f"{awhere}.index",
                                  f"must be an integer from 0 to {_MAX_ARGS - 1}, "
                                  f"not {arg.get('index')!r}")
            if not _is_uint(arg.get("value"), _U64):
                raise ConfigError(f"{awhere}.value", "must be an unsigned 64-bit integer")
            if arg.get("valueTwo") is not None and not _is_uint(arg["valueTwo"], _U64):
                raise ConfigError(f"{awhere}.valueTwo", "must be an unsigned 64-bit integer")
            op = arg.get("op")
            if not isinstance(op, str) or op not in _OPERATORS:
                raise ConfigError(f"{awhere}.op", f'unknown operator "{op}"')


# -- libseccomp ------------------------------------------------------------------------------

_lib: Any = None


def _load_lib() -> Any:
    global _lib
    if _lib is None:
        import ctypes

        try:
            lib = ctypes.CDLL("libseccomp.so.2")
        except OSError as e:
            raise SystemSetupError(f"seccomp: cannot load libseccomp.so.2 ({e}); "
                                   "install Debian's libseccomp2") from None
        u32, c_int, ptr = ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p
        lib.seccomp_init.argtypes = [u32]
        lib.seccomp_init.restype = ptr
        lib.seccomp_release.argtypes = [ptr]
        lib.seccomp_release.restype = None
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_resolve_name.restype = u32
        lib.seccomp_arch_add.argtypes = [ptr, u32]
        lib.seccomp_arch_add.restype = c_int
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.restype = c_int
        lib.seccomp_syscall_resolve_num_arch.argtypes = [u32, c_int]
        lib.seccomp_syscall_resolve_num_arch.restype = ptr  # malloc'd name, or NULL
        lib.seccomp_rule_add_array.argtypes = [ptr, u32, c_int, ctypes.c_uint, ctypes.c_char_p]
        lib.seccomp_rule_add_array.restype = c_int
        lib.seccomp_attr_set.argtypes = [ptr, c_int, u32]
        lib.seccomp_attr_set.restype = c_int
        lib.seccomp_export_bpf.argtypes = [ptr, c_int]
        lib.seccomp_export_bpf.restype = c_int
        lib.seccomp_version.argtypes = []
        lib.seccomp_version.restype = ctypes.POINTER(ctypes.c_uint * 3)
        lib.seccomp_api_get.argtypes = []
        lib.seccomp_api_get.restype = ctypes.c_uint
        _lib = lib
    return _lib


def libseccomp_version() -> str:
    """The installed libseccomp's version, e.g. ``"2.5.4"``."""
    v = _load_lib().seccomp_version().contents
    return f"{v[0]}.{v[1]}.{v[2]}"


def api_level() -> int:
    """libseccomp's API level for this kernel (seccomp_api_get): 3+ has KILL_PROCESS and LOG."""
    return int(_load_lib().seccomp_api_get())


def _action(obj: dict[str, Any], action_key: str, errno_key: str) -> int:
    name = obj[action_key]
    value = _ACTIONS[name]
    if name in _WITH_ERRNO:
        errno = obj.get(errno_key)
        value |= (_EPERM if errno is None else errno) & 0xFFFF
    return value


def _errno_text(rc: int) -> str:
    import os

    return os.strerror(-rc) if rc < 0 else str(rc)


def _conditions(args: list[dict[str, Any]]) -> list[list[bytes]]:
    """runc's grouping: one ANDed rule, or one rule per condition if an index repeats."""
    import struct

    conds = [struct.pack("=IiQQ", a["index"], _OPERATORS[a["op"]], a["value"],
                         a.get("valueTwo") or 0) for a in args]
    indexes = [a["index"] for a in args]
    if len(set(indexes)) < len(indexes):
        return [[c] for c in conds]
    return [conds]


# seccomp(2) flags (linux/seccomp.h), as seccomp_load derives them from the attributes.
_SECCOMP_FLAG_TSYNC = 1
_SECCOMP_FLAG_LOG = 2
_SECCOMP_FLAG_SPEC_ALLOW = 4
_SPEC_FLAGS = {_FLAG_LOG: _SECCOMP_FLAG_LOG, _FLAG_SPEC_ALLOW: _SECCOMP_FLAG_SPEC_ALLOW}
_BPF_MAXINSNS = 4096


class Program:
    """A compiled filter: classic-BPF instructions and the seccomp(2) flags to load them with."""

    __slots__ = ("bpf", "flags")

    def __init__(self, bpf: bytes, flags: int) -> None:
        if not bpf or len(bpf) % 8 or len(bpf) > _BPF_MAXINSNS * 8:
            raise SystemSetupError(f"seccomp: not a BPF program ({len(bpf)} bytes)")
        self.bpf = bpf
        self.flags = flags


def load(obj: Any, where: str = WHERE) -> None:
    """Validate ``obj``, build the filter and load it into the calling process (all threads).

    Raises ConfigError for a bad document (also: an architecture the installed libseccomp
    does not know) and SystemSetupError when libseccomp or the kernel refuses.
    """
    load_program(compile_program(obj, where), where)


def compile_program(obj: Any, where: str = WHERE) -> Program:
    """Validate ``obj`` and have libseccomp generate its filter; errors as :func:`load`'s."""
    import os

    validate(obj, where)
    lib = _load_lib()
    default = _action(obj, "defaultAction", "defaultErrnoRet")
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SystemSetupError(f"{where}: seccomp_init failed (defaultAction "
                               f"{obj['defaultAction']})")
    try:
        tsync = _build(lib, ctx, obj, where, default)
        fd = os.memfd_create("isobox-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SystemSetupError(f"{where}: generating the seccomp filter failed: "
                                       f"{_errno_text(rc)}")
            bpf = os.pread(fd, _BPF_MAXINSNS * 8 + 1, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    flags = _SECCOMP_FLAG_TSYNC if tsync else 0
    for flag in obj.get("flags") or ():
        flags |= _SPEC_FLAGS.get(flag, 0)
    if len(bpf) > _BPF_MAXINSNS * 8:
        raise ConfigError(where, f"the filter has more than {_BPF_MAXINSNS} BPF instructions "
                                 "(the kernel's limit)")
    return Program(bpf, flags)


def load_program(program: Program, where: str = WHERE) -> None:
    """Install ``program`` in the calling process (seccomp_load's syscall, without libseccomp:
    it works after pivot_root, where the host's libraries are gone)."""
    from isobox.linux.syscalls import seccomp_set_mode_filter

    try:
        seccomp_set_mode_filter(program.bpf, program.flags)
    except OSError as e:
        hint = ""
        if e.errno == _EACCES:
            hint = " (without no_new_privs, loading a filter needs CAP_SYS_ADMIN)"
        raise SystemSetupError(f"{where}: loading the seccomp filter failed: "
                               f"{e.strerror}{hint}") from None


def _attr(lib: Any, ctx: Any, attr: int, value: int, what: str, where: str) -> None:
    rc = lib.seccomp_attr_set(ctx, attr, value)
    if rc < 0:
        raise SystemSetupError(f"{where}: {what}: {_errno_text(rc)} (libseccomp "
                               f"{libseccomp_version()}, API level {api_level()})")


def _build(lib: Any, ctx: Any, obj: dict[str, Any], where: str, default: int) -> bool:
    """Add the rules to ``ctx``; whether TSYNC is on (the kernel may lack it)."""
    _attr(lib, ctx, _ATTR_API_SYSRAWRC, 1, "setting SCMP_FLTATR_API_SYSRAWRC", where)
    _attr(lib, ctx, _ATTR_CTL_NNP, 0, "clearing SCMP_FLTATR_CTL_NNP", where)
    rc = lib.seccomp_attr_set(ctx, _ATTR_CTL_TSYNC, 1)
    if rc < 0 and rc != -_EOPNOTSUPP:
        raise SystemSetupError(f"{where}: setting SCMP_FLTATR_CTL_TSYNC: {_errno_text(rc)}")
    tsync = bool(rc >= 0)
    for i, flag in enumerate(obj.get("flags") or ()):
        if flag in _FLAG_ATTRS:
            _attr(lib, ctx, _FLAG_ATTRS[flag], 1, f"flags[{i}] {flag}", where)
    for i, arch in enumerate(obj.get("architectures") or ()):
        token = lib.seccomp_arch_resolve_name(_ARCHES[arch].encode())
        if token == 0:
            raise ConfigError(f"{where}.architectures[{i}]",
                              f'architecture "{arch}" is not supported by libseccomp '
                              f"{libseccomp_version()}")
        rc = lib.seccomp_arch_add(ctx, token)
        if rc < 0 and rc != -_EEXIST:
            raise SystemSetupError(f"{where}.architectures[{i}]: adding {arch}: "
                                   f"{_errno_text(rc)}")
    syscalls = obj.get("syscalls") or ()
    if sum(len(r["names"]) for r in syscalls) > 32:
        # binary-tree dispatch for long profiles, as runc (libseccomp <= 2.5.4 misbehaves with
        # it and no rules); not fatal: an old library may lack it
        lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)
    known: set[int] = set()
    for i, rule in enumerate(syscalls):
        action = _action(rule, "action", "errnoRet")
        for sc_name in rule["names"]:
            nr = lib.seccomp_syscall_resolve_name(sc_name.encode())
            if nr != _NR_SCMP_ERROR:
                known.add(nr)
        if action == default:
            continue
        groups = _conditions(rule["args"]) if rule.get("args") else [[]]
        for j, sc_name in enumerate(rule["names"]):
            nr = lib.seccomp_syscall_resolve_name(sc_name.encode())
            if nr == _NR_SCMP_ERROR:
                continue  # newer than libseccomp/kernel: skipped, like runc
            for conds in groups:
                rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conds),
                                                b"".join(conds) or None)
                if rc < 0:
                    raise SystemSetupError(
                        f"{where}.syscalls[{i}].names[{j}]: adding the rule for "
                        f'"{sc_name}" failed: {_errno_text(rc)}')
    enosys = _ACTIONS["SCMP_ACT_ERRNO"] | _ENOSYS
    if obj["defaultAction"] not in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG") and known and \
            default != enosys:
        _enosys_for_newer(lib, ctx, max(known), known, where)
    return tsync


_ENOSYS = 38
_SCAN_LIMIT = 1024  # x86_64 syscall numbers are far below this


def _enosys_for_newer(lib: Any, ctx: Any, newest: int, known: set[int], where: str) -> None:
    """Syscalls newer than any the profile names get ENOSYS, not the default action, as runc
    does: libc falls back from a new syscall (clone3, faccessat2, …) only on ENOSYS, so a
    profile written before the syscall existed must not make it fail with EPERM."""
    import ctypes

    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    action = _ACTIONS["SCMP_ACT_ERRNO"] | _ENOSYS
    for nr in range(newest + 1, _SCAN_LIMIT):
        if nr in known:
            continue
        name = lib.seccomp_syscall_resolve_num_arch(0, nr)  # 0: the native architecture
        if not name:
            continue
        libc.free(name)
        rc = lib.seccomp_rule_add_array(ctx, action, nr, 0, None)
        if rc < 0:
            raise SystemSetupError(f"{where}: adding the ENOSYS rule for syscall {nr} failed: "
                                   f"{_errno_text(rc)}")
