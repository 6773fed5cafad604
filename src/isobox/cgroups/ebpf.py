"""Device access control on cgroup v2: a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program.

cgroup v2 has no ``devices`` controller; the kernel instead runs every device program attached
to the cgroup and its ancestors on each open/mknod of a device node, and denies access unless
all of them return 1. We compile the rule list (after :func:`devices.emulate`, so the
semantics are the v1 kernel's) into a tiny program, load it with ``bpf(BPF_PROG_LOAD)`` and
attach it with ``BPF_F_ALLOW_MULTI`` (so programs systemd put on parent slices keep working).
Programs this cgroup already had are detached after the new one is in place, so there is no
window without a filter.

``ctypes`` is imported here only; the manager imports this module only when it applies device
rules on a v2 hierarchy.
"""

from __future__ import annotations

import ctypes
import os
import struct

from isobox.cgroups.devices import WILDCARD, Rule, emulate
from isobox.errors import SystemSetupError

# bpf(2) commands, program and attach types (linux/bpf.h).
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_PROG_QUERY = 16
_PROG_TYPE_CGROUP_DEVICE = 15
_ATTACH_CGROUP_DEVICE = 6
_F_ALLOW_MULTI = 2

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351,
           "armv7l": 386, "i686": 357}

# struct bpf_cgroup_dev_ctx { u32 access_type /* access << 16 | type */; u32 major, minor; }
_DEV_BLOCK = 1
_DEV_CHAR = 2
_ACC = {"m": 1, "r": 2, "w": 4}

# Opcodes (class | op | source).
_LDXW = 0x61        # BPF_LDX | BPF_MEM | BPF_W
_AND32_K = 0x54     # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74     # BPF_ALU | BPF_RSH | BPF_K
_MOV32_X = 0xBC     # BPF_ALU | BPF_MOV | BPF_X
_MOV64_K = 0xB7     # BPF_ALU64 | BPF_MOV | BPF_K
_JNE32_K = 0x56     # BPF_JMP32 | BPF_JNE | BPF_K
_JEQ32_K = 0x16     # BPF_JMP32 | BPF_JEQ | BPF_K
_EXIT = 0x95        # BPF_JMP | BPF_EXIT


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    if imm >= 1 << 31:
        imm -= 1 << 32
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _bits(access: str) -> int:
    n = 0
    for c in access:
        n |= _ACC[c]
    return n


def _block(rule: Rule, default_allow: bool) -> list[bytes]:
    """Instructions for one exception: return its verdict if the access matches, else fall
    through to the next block. Jumps skip to the end of the block."""
    body: list[tuple[int, int, int] | bytes] = []  # ready insns, or (code, dst, imm) jumps
    if rule.type != "a":
        body.append((_JNE32_K, 2, _DEV_CHAR if rule.type == "c" else _DEV_BLOCK))
    acc = _bits(rule.access)
    if not default_allow and acc != 7:
        # Allowed only if every requested bit is in the rule (kernel: match_exception).
        body.append(_insn(_MOV32_X, dst=1, src=3))
        body.append(_insn(_AND32_K, dst=1, imm=~acc & 7))
        body.append((_JNE32_K, 1, 0))
    elif default_allow and acc != 7:
        # Denied if any requested bit is in the rule (kernel: match_exception_partial).
        body.append(_insn(_MOV32_X, dst=1, src=3))
        body.append(_insn(_AND32_K, dst=1, imm=acc))
        body.append((_JEQ32_K, 1, 0))
    if rule.major != WILDCARD:
        body.append((_JNE32_K, 4, rule.major))
    if rule.minor != WILDCARD:
        body.append((_JNE32_K, 5, rule.minor))
    body.append(_insn(_MOV64_K, dst=0, imm=1 if rule.allow else 0))
    body.append(_insn(_EXIT))
    out = []
    for i, item in enumerate(body):
        if isinstance(item, bytes):
            out.append(item)
        else:
            code, dst, imm = item
            out.append(_insn(code, dst=dst, off=len(body) - i - 1, imm=imm))
    return out


def build_program(rules: list[Rule]) -> bytes:
    """The program for ``rules`` (normalised, applied on top of deny-all)."""
    default_allow, exceptions = emulate(rules)
    prog = [
        _insn(_LDXW, dst=2, src=1, off=0),   # r2 = ctx->access_type
        _insn(_AND32_K, dst=2, imm=0xFFFF),  # r2 = device type
        _insn(_LDXW, dst=3, src=1, off=0),
        _insn(_RSH32_K, dst=3, imm=16),      # r3 = requested access bits
        _insn(_LDXW, dst=4, src=1, off=4),   # r4 = major
        _insn(_LDXW, dst=5, src=1, off=8),   # r5 = minor
    ]
    for rule in exceptions:
        prog.extend(_block(rule, default_allow))
    prog.append(_insn(_MOV64_K, dst=0, imm=1 if default_allow else 0))
    prog.append(_insn(_EXIT))
    return b"".join(prog)


_libc: ctypes.CDLL | None = None


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], size: int, what: str) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise SystemSetupError(f"bpf(2) syscall number unknown on {os.uname().machine}")
    ret = int(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(size)))
    if ret < 0:
        err = ctypes.get_errno()
        raise SystemSetupError(f"bpf({what}) failed: {os.strerror(err)}")
    return ret


def load_program(insns: bytes) -> int:
    """``BPF_PROG_LOAD``; returns the program fd. The verifier log is in the error."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(0)
    attr = ctypes.create_string_buffer(72)
    for log_level in (0, 1):
        if log_level:
            log = ctypes.create_string_buffer(1 << 16)
        struct.pack_into("<IIQQIIQII", attr, 0, _PROG_TYPE_CGROUP_DEVICE, len(insns) // 8,
                         ctypes.addressof(code), ctypes.addressof(lic), log_level,
                         len(log) if log_level else 0,
                         ctypes.addressof(log) if log_level else 0, 0, 0)
        struct.pack_into("16s", attr, 48, b"isobox_devices")
        try:
            return _bpf(_BPF_PROG_LOAD, attr, len(attr), "BPF_PROG_LOAD")
        except SystemSetupError as exc:
            if log_level:
                text = log.value.decode(errors="replace").strip()
                raise SystemSetupError(f"{exc}; verifier: {text[-500:]}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _attach_attr(cgroup_fd: int, prog_fd: int, flags: int) -> ctypes.Array[ctypes.c_char]:
    attr = ctypes.create_string_buffer(20)
    struct.pack_into("<IIIII", attr, 0, cgroup_fd, prog_fd, _ATTACH_CGROUP_DEVICE, flags, 0)
    return attr


def query(cgroup_fd: int) -> list[int]:
    """Ids of the device programs attached directly to the cgroup."""
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(40)
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, _ATTACH_CGROUP_DEVICE, 0, 0,
                     ctypes.addressof(ids), len(ids))
    _bpf(_BPF_PROG_QUERY, attr, len(attr), "BPF_PROG_QUERY")
    (count,) = struct.unpack_from("<I", attr, 24)
    return [int(ids[i]) for i in range(min(count, len(ids)))]


def _fd_by_id(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(12)
    struct.pack_into("<III", attr, 0, prog_id, 0, 0)
    return _bpf(_BPF_PROG_GET_FD_BY_ID, attr, len(attr), "BPF_PROG_GET_FD_BY_ID")


def attach_device_filter(cgroup_dir: str, rules: list[Rule]) -> None:
    """Install the program for ``rules`` on the v2 cgroup ``cgroup_dir``, replacing ours."""
    prog_fd = load_program(build_program(rules))
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        os.close(prog_fd)
        raise SystemSetupError(f"cannot open cgroup {cgroup_dir}: {err.strerror}") from None
    try:
        old = query(cg_fd)
        try:
            _bpf(_BPF_PROG_ATTACH, _attach_attr(cg_fd, prog_fd, _F_ALLOW_MULTI), 20,
                 "BPF_PROG_ATTACH")
        except SystemSetupError as exc:
            raise SystemSetupError(f"cannot attach the device filter to {cgroup_dir}: "
                                   f"{exc}") from None
        for prog_id in old:
            old_fd = _fd_by_id(prog_id)
            try:
                _bpf(_BPF_PROG_DETACH, _attach_attr(cg_fd, old_fd, 0), 20, "BPF_PROG_DETACH")
            finally:
                os.close(old_fd)
    finally:
        os.close(cg_fd)
        os.close(prog_fd)
