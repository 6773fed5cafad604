"""Linux capabilities: names <-> numbers, capget/capset, the bounding and ambient sets.

Importing this module costs nothing beyond the name table: ``isobox.linux.syscalls`` (and
its C binding) is imported on the first call that touches the kernel, so the
``oci`` layer can use :func:`parse_caps` and :func:`number` for validation for free.

Order the runtime must use in the container's init process (as runc's ``finalizeNamespace``)::

    parsed = parse_caps(spec["process"]["capabilities"], "config.json: process.capabilities")
    # ... namespaces, mounts, pivot_root ...
    # (seccomp.load() here, while CAP_SYS_ADMIN is still held, if noNewPrivileges is false)
    apply_bounding(parsed)             # 1. needs CAP_SETPCAP: do it while still uid 0
    prctl(PR_SET_KEEPCAPS, 1)          # 2. keep the permitted set across the uid switch
    setgroups(...); setresgid(...); setresuid(...)   # 3. clears the effective set if uid != 0
    prctl(PR_SET_KEEPCAPS, 0)          # 4.
    apply_sets(parsed)                 # 5. capset(E, P, I), then the ambient set
    # prctl(PR_SET_NO_NEW_PRIVS) and seccomp.load() (if noNewPrivileges), then execve

After ``execve`` the kernel recomputes the sets from the file: a uid-0 process gets
``P = I | bounding`` (unless securebits say otherwise), a non-root one keeps only the ambient
set (plus file capabilities limited by the bounding set). That is why Docker gives the same
list for bounding, effective and permitted.
"""

from __future__ import annotations

from isobox.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: capability number -> name, as in linux/capability.h (CAP_LAST_CAP is 40 since Linux 5.9).
NAMES: tuple[str, ...] = (
    "CAP_CHOWN",  # 0
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",  # 5
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",  # 10
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",  # 15
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",  # 20
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",  # 25
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",  # 30
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",  # 35
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",  # 40
)
#: name -> number ("CAP_CHOWN" -> 0).
NUMBERS: dict[str, int] = {name: i for i, name in enumerate(NAMES)}

#: The five keys of the OCI ``process.capabilities`` object, in the order they are reported.
SETS: tuple[str, ...] = ("bounding", "effective", "inheritable", "permitted", "ambient")

#: Docker's default capabilities (moby daemon/pkg/oci/caps/defaults.go): mask 0xa80425fb.
DOCKER_DEFAULT: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_NR_CAPGET = 125  # x86_64
_NR_CAPSET = 126


def number(name: str) -> int:
    """``"CAP_CHOWN"`` (any case; the ``CAP_`` prefix may be left out) -> 0.

    Raises ``KeyError`` for a name this table does not know.
    """
    upper = name.upper()
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    return NUMBERS[upper]


def name(cap: int) -> str:
    """0 -> ``"CAP_CHOWN"``; a number beyond the table (a newer kernel) -> ``"CAP_41"``."""
    return NAMES[cap] if 0 <= cap < len(NAMES) else f"CAP_{cap}"


def to_mask(caps: set[int] | frozenset[int]) -> int:
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


def from_mask(mask: int) -> set[int]:
    return {i for i in range(64) if mask >> i & 1}


def last_cap() -> int:
    """The highest capability number the running kernel knows (/proc/sys/kernel/cap_last_cap)."""
    with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
        return int(f.read())


def read_status(pid: int | str = "self") -> dict[str, int]:
    """The five masks from /proc/PID/status: keys CapInh, CapPrm, CapEff, CapBnd, CapAmb."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"Cap"):
                key, _, value = line.decode().partition(":")
                out[key] = int(value.strip(), 16)
    return out


# -- capget / capset -------------------------------------------------------------------------

def _capdata(effective: int = 0, permitted: int = 0, inheritable: int = 0) -> Any:
    from isobox.linux.libc import c_uint32

    # struct __user_cap_data_struct[2]: {effective, permitted, inheritable} x (low, high) 32 bits
    data = (c_uint32 * 6)(
        effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
        effective >> 32, permitted >> 32, inheritable >> 32,
    )
    return data


def capget(pid: int = 0) -> tuple[int, int, int]:
    """capget(2) of ``pid`` (0: the calling thread) -> (effective, permitted, inheritable)."""
    from isobox.linux import syscalls
    from isobox.linux.libc import c_uint32

    header = (c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, pid)
    data = _capdata()
    syscalls._check(syscalls._syscall(_NR_CAPGET, header, data), "capget")
    return (data[0] | data[3] << 32, data[1] | data[4] << 32, data[2] | data[5] << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of the calling thread with three 64-bit masks."""
    from isobox.linux import syscalls
    from isobox.linux.libc import c_uint32

    header = (c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _capdata(effective, permitted, inheritable)
    syscalls._check(syscalls._syscall(_NR_CAPSET, header, data), "capset")


def drop_bounding(keep: set[int] | frozenset[int]) -> None:
    """PR_CAPBSET_DROP every capability the kernel knows that is not in ``keep``.

    Needs CAP_SETPCAP. Dropping a capability that is already out of the set is not an error.
    """
    import errno

    from isobox.linux.syscalls import PR_CAPBSET_DROP, prctl

    # Up to the kernel's own limit (EINVAL past the last capability), never trusting
    # /proc/sys/kernel/cap_last_cap: after pivot_root that file is the container's, and a
    # lower number there must not leave capabilities in the set.
    for cap in range(64):
        if cap not in keep:
            try:
                prctl(PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno == errno.EINVAL and cap > 0:
                    break
                raise OSError(e.errno, f"drop {name(cap)} from the bounding set: {e.strerror}") \
                    from None


def set_sets(effective: set[int] | frozenset[int], permitted: set[int] | frozenset[int],
             inheritable: set[int] | frozenset[int]) -> None:
    """Replace the effective, permitted and inheritable sets of the calling thread.

    The kernel's rules: effective must be within permitted; permitted can only shrink;
    inheritable must be within the old inheritable set plus the bounding set.
    """
    capset(to_mask(effective), to_mask(permitted), to_mask(inheritable))


def set_ambient(ambient: set[int] | frozenset[int]) -> None:
    """Clear the ambient set, then raise each capability of ``ambient``.

    Each one must already be in both the permitted and the inheritable set (else EPERM).
    """
    from isobox.linux.syscalls import (
        PR_CAP_AMBIENT,
        PR_CAP_AMBIENT_CLEAR_ALL,
        PR_CAP_AMBIENT_RAISE,
        prctl,
    )

    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in sorted(ambient):
        try:
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
        except OSError as e:
            raise OSError(e.errno, f"raise ambient {name(cap)}: {e.strerror}") from None


# -- the OCI process.capabilities object ------------------------------------------------------

def parse_caps(obj: Any, where: str = "config.json: process.capabilities") -> dict[str, set[int]]:
    """Parse an OCI ``process.capabilities`` object into the five sets of numbers.

    A missing key means the empty set. Unknown names are rejected (as crun does), never
    ignored, so a typo can neither widen nor silently change the result:
    ``ConfigError("config.json: process.capabilities.bounding[3]", 'unknown capability
    "CAP_BOGUS"')``. Effective outside permitted, which the kernel would refuse, is
    rejected here too. Ambient capabilities outside permitted or inheritable are accepted and
    skipped by :func:`apply_sets`, as runc does: its own default spec lists ambient
    capabilities with an empty inheritable set.
    """
    if not isinstance(obj, dict):
        raise ConfigError(where, "must be an object")
    parsed: dict[str, set[int]] = {}
    for key in SETS:
        names = obj.get(key)
        caps: set[int] = set()
        if names is not None:
            if not isinstance(names, list):
                raise ConfigError(f"{where}.{key}", "must be an array of capability names")
            for i, cap_name in enumerate(names):
                if not isinstance(cap_name, str):
                    raise ConfigError(f"{where}.{key}[{i}]", "must be a string")
                try:
                    caps.add(number(cap_name))
                except KeyError:
                    raise ConfigError(f"{where}.{key}[{i}]",
                                      f'unknown capability "{cap_name}"') from None
        parsed[key] = caps
    _check_subset(obj, where, "effective", parsed["effective"], "permitted", parsed["permitted"])
    return parsed


def _check_subset(obj: Any, where: str, key: str, caps: set[int], outer_key: str,
                  outer: set[int]) -> None:
    for i, cap_name in enumerate(obj.get(key) or ()):
        if number(cap_name) not in outer:
            raise ConfigError(f"{where}.{key}[{i}]",
                              f'"{cap_name}" is not in the {outer_key} set; the kernel '
                              f"allows {key} capabilities only from the {outer_key} set")


def apply_bounding(parsed: dict[str, set[int]]) -> None:
    """Step 1: shrink the bounding set to ``parsed["bounding"]``; call while still uid 0."""
    drop_bounding(parsed["bounding"])


def apply_sets(parsed: dict[str, set[int]]) -> None:
    """Step 5: set effective, permitted, inheritable, then ambient.

    Call after setresuid() with PR_SET_KEEPCAPS set (or without a uid change for root).
    """
    set_sets(parsed["effective"], parsed["permitted"], parsed["inheritable"])
    set_ambient(parsed["ambient"] & parsed["permitted"] & parsed["inheritable"])
