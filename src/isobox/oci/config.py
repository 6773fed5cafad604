"""Validate an OCI runtime-spec 1.2 ``config.json`` for Linux. Pure: never touches the system.

:func:`validate_config` checks types and ranges of every field that runtime-spec 1.2 defines
for Linux, then the cross-field rules a runtime must enforce before it does anything:

* hostname/domainname need a UTS namespace (runc's rule);
* user-namespace mappings are present iff a *new* user namespace is requested;
* time offsets need a new time namespace;
* mounts and masked/read-only paths need a mount namespace;
* sysctls must be namespaced and their namespace must be private (catalogue case 21);
* nothing is mounted inside ``/proc`` and only procfs on ``/proc`` (catalogue case 22);
* mount destinations, device paths, masked and read-only paths are absolute with no ``..``.

Every error is ``ConfigError(f"{where}: {json_path}", message)``, for example
``config.json: process.rlimits[0].type: unknown rlimit "RLIMIT_TEST"``. Unknown fields are
ignored, as the specification requires; ``null`` counts as absent (as for Go's decoder).

Deliberately left to other modules: capability names beyond their ``CAP_[A-Z_]+`` shape, the
contents of ``linux.seccomp``, whether paths exist, and anything that needs the host (whether a
namespace path really is a namespace of that type, cgroup controllers, SELinux/AppArmor).

The schema is a table of checker functions built once at import (:mod:`isobox.oci._check`);
a typical config validates in tens of microseconds.
"""

from __future__ import annotations

from isobox.errors import ConfigError
from isobox.oci._check import (
    INT32,
    INT64,
    UINT16,
    UINT32,
    UINT64,
    any_object,
    array,
    boolean,
    clean_path,
    container_path,
    enum,
    expected,
    fail,
    host_path,
    integer,
    key_path,
    mapping,
    no_nul,
    obj,
    quote,
    string,
    string_map,
    strings,
    text,
)
from isobox.oci.ids import validate_container_id as validate_container_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "HOOK_STAGES",
    "NAMESPACE_TYPES",
    "RLIMITS",
    "sysctl_file",
    "validate_config",
    "validate_container_id",
    "validate_process",
]

RLIMITS = frozenset(
    (
        "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
        "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
        "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
    )
)
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_STAGES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
ROOTFS_PROPAGATIONS = (
    "shared", "slave", "private", "unbindable",
    "rshared", "rslave", "rprivate", "runbindable",
)
SCHED_POLICIES = (
    "SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH",
    "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE",
)
SCHED_FLAGS = frozenset(
    (
        "SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN",
        "SCHED_FLAG_KEEP_POLICY", "SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_UTIL_CLAMP_MIN",
        "SCHED_FLAG_UTIL_CLAMP_MAX",
    )
)
IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
TIME_CLOCKS = ("monotonic", "boottime")  # the only clocks a time namespace offsets

# Sysctls of the IPC namespace (besides fs.mqueue.*), as runc's validator lists them.
IPC_SYSCTLS = frozenset(
    (
        "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
        "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
    )
)
# The only bind mounts allowed inside /proc: files that lxcfs emulates (runc's checkProcMount).
PROC_BIND_TARGETS = frozenset(
    (
        "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
        "/proc/uptime", "/proc/loadavg", "/proc/slabinfo",
        "/proc/sys/kernel/ns_last_pid", "/proc/sys/crypto/fips_enabled",
    )
)
MAX_ID_MAPPINGS = 340  # the kernel's limit on lines in uid_map/gid_map (since Linux 4.15)
_U32_MAX = 2**32 - 1
_ID_MAX = 2**31 - 1

# --- string rules (return an error message or None) ----------------------------------------


def _nonempty(s: str) -> str | None:
    return "must not be empty" if not s else no_nul(s)


def _oci_version(s: str) -> str | None:
    if not s.startswith("1."):
        return f"unsupported ociVersion {quote(s)} (isobox implements runtime-spec 1.x)"
    return None


def _utsname(s: str) -> str | None:
    if len(s.encode()) > 64:
        return f"{quote(s)} is longer than 64 bytes"
    return no_nul(s)


def _env_entry(s: str) -> str | None:
    if s.find("=") <= 0:
        return f"environment entry {quote(s)} is not of the form KEY=VALUE"
    return no_nul(s)


def _cap_name(s: str) -> str | None:
    # CAP_[A-Z_]+ without re: ASCII, upper case, letters and underscores after the prefix.
    rest = s[4:]
    shape = s.startswith("CAP_") and rest.isascii() and rest.isupper()
    if shape and rest.replace("_", "").isalpha():
        return None
    return f"invalid capability name {quote(s)} (expected CAP_ and upper-case letters)"


def _cpu_list(s: str) -> str | None:
    if s.strip("0123456789, -"):
        return f"invalid CPU list {quote(s)} (expected digits, ',' and '-')"
    return None


def _ns_path(s: str) -> str | None:
    return host_path(s) if s else None  # "" is Go's "no path": a new namespace


def _cwd(s: str) -> str | None:
    if not s.startswith("/"):
        return f"cwd {quote(s)} is not an absolute path"
    return no_nul(s)


def _cgroups_path(s: str) -> str | None:
    if ".." in s and ".." in s.split("/"):
        return f'cgroupsPath {quote(s)} must not contain a ".." component'
    return no_nul(s)


def _page_size(s: str) -> str | None:
    # "<size><unit-prefix>B": it becomes part of a cgroup file name, so nothing else gets in.
    if s[-2:] in ("KB", "MB", "GB", "TB", "PB") and s[:-2].isascii() and s[:-2].isdigit():
        return None
    return f'invalid hugepage size {quote(s)} (expected a number and KB, MB or GB, like "2MB")'


def _cgroup_file(s: str) -> str | None:
    # A key of linux.resources.unified names a file in the container's cgroup directory.
    if not s or "/" in s or s in (".", "..") or "\x00" in s:
        return f"invalid cgroup file name {quote(s)}"
    return None


def _device_name(s: str) -> str | None:
    # Interface and RDMA device names end up in cgroup files and netlink requests.
    if not s or "/" in s or s in (".", "..") or not s.isprintable() or " " in s:
        return f"invalid device name {quote(s)}"
    return None


def _access(s: str) -> str | None:
    if s.strip("rwm"):
        return f'invalid device access {quote(s)} (expected letters from "rwm")'
    return None


def _cgroup_device_type(s: str) -> str | None:
    if s in ("a", "c", "b", ""):
        return None
    return f"unsupported device type {quote(s)} (expected a, b or c)"


def _annotation_key(s: str) -> str | None:
    return "annotation keys must not be empty" if not s else None


def _clock(s: str) -> str | None:
    if s in TIME_CLOCKS:
        return None
    return f"unknown clock {quote(s)} (expected monotonic or boottime)"


def _sched_flag(s: str) -> str | None:
    return None if s in SCHED_FLAGS else f"unknown scheduler flag {quote(s)}"


def _personality_flag(s: str) -> str | None:
    return f"unsupported personality flag {quote(s)} (runtime-spec 1.2 defines none)"


# --- whole-value rules ---------------------------------------------------------------------


def _args(v: Any, p: str) -> None:
    _arg_strings(v, p)
    if not v:
        fail(p, "args must not be empty")


_arg_strings = strings(no_nul)


def _timeout(v: Any, p: str) -> None:
    if type(v) is not int:
        expected(p, "an integer", v)
    if v <= 0 or v > INT64[1]:
        fail(p, f"timeout must be a positive number of seconds, got {v}")


def _swappiness(v: Any, p: str) -> None:
    if type(v) is not int:
        expected(p, "an integer", v)
    if not (0 <= v <= 100 or v == UINT64[1]):  # 2**64-1 is Go's uint64(-1): "unset"
        fail(p, f"swappiness {v} is out of range 0..100")


def _intel_rdt(v: Any, p: str) -> None:
    fail(p, "Intel RDT (intelRdt) is not supported by isobox")


def _user_id(v: Any, p: str) -> None:
    """A uid or gid of ``process.user`` (catalogue case 13): at most 2**31-1, as containerd
    caps them (CVE-2024-40635). Above that the kernel's uid_t wraps: 4294967295 is
    ``(uid_t)-1``, which setresuid(2) reads as "leave unchanged", i.e. stay root."""
    if type(v) is not int:
        expected(p, "an integer", v)
    if v < 0 or v > _ID_MAX:
        fail(p, f"invalid user: id {v} is out of range 0..{_ID_MAX}")


def _rlimit(r: dict[str, Any], p: str) -> None:
    if r["soft"] > r["hard"]:
        fail(p + ".soft", f"soft limit {r['soft']} is greater than hard limit {r['hard']}")


def _unique_rlimits(v: list[dict[str, Any]], p: str) -> None:
    seen: set[str] = set()
    for i, r in enumerate(v):
        if r["type"] in seen:
            fail(f"{p}[{i}].type", f"duplicate rlimit {quote(r['type'])}")
        seen.add(r["type"])


def _unique_namespaces(v: list[dict[str, Any]], p: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(v):
        if n["type"] in seen:
            fail(f"{p}[{i}].type", f"duplicate namespace type {quote(n['type'])}")
        seen.add(n["type"])


def _id_ranges(v: list[dict[str, Any]], p: str) -> None:
    """Mappings the kernel would accept: non-empty, no u32 wrap, no overlap on either side."""
    if len(v) > MAX_ID_MAPPINGS:
        fail(p, f"{len(v)} mappings are more than the kernel's limit of {MAX_ID_MAPPINGS}")
    for i, m in enumerate(v):
        size = m["size"]
        if size == 0:
            fail(f"{p}[{i}].size", "size must be at least 1")
        for side in ("containerID", "hostID"):
            start = m[side]
            if start + size > _U32_MAX:
                fail(f"{p}[{i}]", f"{side} {start} + size {size} goes beyond {_U32_MAX}")
            for j in range(i):
                other = v[j]
                if start < other[side] + other["size"] and other[side] < start + size:
                    fail(
                        f"{p}[{i}]",
                        f"{side} range {start}..{start + size - 1} overlaps mapping {j} "
                        f"({other[side]}..{other[side] + other['size'] - 1})",
                    )


def _scheduler(s: dict[str, Any], p: str) -> None:
    # runc's rules, after sched_setattr(2).
    policy = s["policy"]
    nice = s.get("nice") or 0
    if policy in ("SCHED_OTHER", "SCHED_BATCH") and not -20 <= nice <= 19:
        fail(p + ".nice", f"nice {nice} is out of range -20..19")
    if s.get("priority") and policy not in ("SCHED_FIFO", "SCHED_RR"):
        fail(p + ".priority", f"priority can only be set for SCHED_FIFO or SCHED_RR, not {policy}")
    if policy != "SCHED_DEADLINE":
        for k in ("runtime", "deadline", "period"):
            if s.get(k):
                fail(f"{p}.{k}", f"{k} can only be set for SCHED_DEADLINE, not {policy}")


def _device(d: dict[str, Any], p: str) -> None:
    if d["type"] != "p":
        for k in ("major", "minor"):
            if d.get(k) is None:
                fail(f"{p}.{k}", f"required for a device of type {quote(d['type'])}")


def _weight_device(d: dict[str, Any], p: str) -> None:
    if d.get("weight") is None and d.get("leafWeight") is None:
        fail(p, "set weight, leafWeight or both")


def _rdma_limit(d: dict[str, Any], p: str) -> None:
    if d.get("hcaHandles") is None and d.get("hcaObjects") is None:
        fail(p, "set hcaHandles, hcaObjects or both")


def _is_bind(m: dict[str, Any]) -> bool:
    opts = m.get("options") or ()
    return m.get("type") == "bind" or "bind" in opts or "rbind" in opts


def _mount(m: dict[str, Any], p: str) -> None:
    if m.get("uidMappings") or m.get("gidMappings"):
        if not (m.get("uidMappings") and m.get("gidMappings")):
            fail(p, "an id-mapped mount needs both uidMappings and gidMappings")
        if not _is_bind(m):
            fail(p, "id-mapped mounts are only supported for bind mounts")
    dest = m["destination"]
    if dest.startswith("/proc") or "//" in dest or "/." in dest:
        _proc_mount(m, clean_path(dest), p)


def _proc_mount(m: dict[str, Any], dest: str, p: str) -> None:
    """Catalogue case 22 (runc's checkProcMount), on the lexically cleaned destination."""
    if dest == "/proc":
        if m.get("type") != "proc":
            fail(p + ".type", '"/proc" cannot be mounted because it is not of type proc')
    elif dest.startswith("/proc/") and not (dest in PROC_BIND_TARGETS and _is_bind(m)):
        fail(p + ".destination", f"{quote(dest)} cannot be mounted because it is inside /proc")


# --- the schema ----------------------------------------------------------------------------

_U16 = integer(*UINT16)
_U32 = integer(*UINT32)
_U64 = integer(*UINT64)
_I32 = integer(*INT32)
_I64 = integer(*INT64)
_OBJECTS = "an array of objects"

_id_mappings = array(
    obj(
        {"containerID": _U32, "hostID": _U32, "size": _U32},
        required=("containerID", "hostID", "size"),
    ),
    _OBJECTS,
    after=_id_ranges,
)

_process = obj(
    {
        "terminal": boolean,
        "consoleSize": obj({"height": _U64, "width": _U64}, required=("height", "width")),
        "user": obj(
            {
                "uid": _user_id,
                "gid": _user_id,
                "umask": _U32,
                "additionalGids": array(_user_id, "an array of integers"),
                "username": string,
            },
            required=("uid", "gid"),
        ),
        "args": _args,
        "commandLine": string,
        "env": strings(_env_entry),
        "cwd": text(_cwd),
        "capabilities": obj(
            {
                k: strings(_cap_name)
                for k in ("bounding", "effective", "inheritable", "permitted", "ambient")
            }
        ),
        "rlimits": array(
            obj(
                {"type": enum(RLIMITS, "unknown rlimit"), "hard": _U64, "soft": _U64},
                required=("type", "hard", "soft"),
                after=_rlimit,
            ),
            _OBJECTS,
            after=_unique_rlimits,
        ),
        "noNewPrivileges": boolean,
        "apparmorProfile": string,  # accepted here; the runtime refuses profiles it can't apply
        "selinuxLabel": string,  # likewise
        "oomScoreAdj": integer(-1000, 1000),
        "ioPriority": obj(
            {
                "class": enum(IOPRIO_CLASSES, "unknown ioPriority class"),
                "priority": integer(0, 7),
            },
            required=("class",),
        ),
        "scheduler": obj(
            {
                "policy": enum(SCHED_POLICIES, "unknown scheduler policy"),
                "nice": _I32,
                "priority": _I32,
                "flags": strings(_sched_flag),
                "runtime": _U64,
                "deadline": _U64,
                "period": _U64,
            },
            required=("policy",),
            after=_scheduler,
        ),
        "execCPUAffinity": obj({"initial": text(_cpu_list), "final": text(_cpu_list)}),
    },
    required=("cwd", "args", "user"),
)

_mount_entry = obj(
    {
        "destination": text(container_path),
        "type": string,
        "source": string,
        "options": strings(no_nul),
        "uidMappings": _id_mappings,
        "gidMappings": _id_mappings,
    },
    required=("destination",),
    after=_mount,
)

_hook = obj(
    {
        "path": text(host_path),
        "args": strings(no_nul),
        "env": strings(_env_entry),
        "timeout": _timeout,
    },
    required=("path",),
)

_throttle_devices = array(
    obj({"major": _I64, "minor": _I64, "rate": _U64}, required=("major", "minor", "rate")),
    _OBJECTS,
)

_resources = obj(
    {
        "devices": array(
            obj(
                {
                    "allow": boolean,
                    "type": text(_cgroup_device_type),
                    "major": _I64,
                    "minor": _I64,
                    "access": text(_access),
                },
                required=("allow",),
            ),
            _OBJECTS,
        ),
        "memory": obj(
            {
                **dict.fromkeys(
                    ("limit", "reservation", "swap", "kernel", "kernelTCP"),
                    integer(-1, INT64[1]),  # -1: unlimited
                ),
                "swappiness": _swappiness,
                "disableOOMKiller": boolean,
                "useHierarchy": boolean,
                "checkBeforeUpdate": boolean,
            }
        ),
        "cpu": obj(
            {
                "shares": _U64,
                "quota": _I64,
                "burst": _U64,
                "period": _U64,
                "realtimeRuntime": _I64,
                "realtimePeriod": _U64,
                "cpus": text(_cpu_list),
                "mems": text(_cpu_list),
                "idle": _I64,
            }
        ),
        "pids": obj({"limit": _I64}, required=("limit",)),
        "blockIO": obj(
            {
                "weight": _U16,
                "leafWeight": _U16,
                "weightDevice": array(
                    obj(
                        {"major": _I64, "minor": _I64, "weight": _U16, "leafWeight": _U16},
                        required=("major", "minor"),
                        after=_weight_device,
                    ),
                    _OBJECTS,
                ),
                "throttleReadBpsDevice": _throttle_devices,
                "throttleWriteBpsDevice": _throttle_devices,
                "throttleReadIOPSDevice": _throttle_devices,
                "throttleWriteIOPSDevice": _throttle_devices,
            }
        ),
        "hugepageLimits": array(
            obj({"pageSize": text(_page_size), "limit": _U64}, required=("pageSize", "limit")),
            _OBJECTS,
        ),
        "network": obj(
            {
                "classID": _U32,
                "priorities": array(
                    obj(
                        {"name": text(_device_name), "priority": _U32},
                        required=("name", "priority"),
                    ),
                    _OBJECTS,
                ),
            }
        ),
        "rdma": mapping(
            obj({"hcaHandles": _U32, "hcaObjects": _U32}, after=_rdma_limit), key=_device_name
        ),
        "unified": string_map(key=_cgroup_file),
    }
)

_linux = obj(
    {
        "namespaces": array(
            obj(
                {
                    "type": enum(NAMESPACE_TYPES, "unsupported namespace type"),
                    "path": text(_ns_path),
                },
                required=("type",),
            ),
            _OBJECTS,
            after=_unique_namespaces,
        ),
        "uidMappings": _id_mappings,
        "gidMappings": _id_mappings,
        "timeOffsets": mapping(
            obj({"secs": _I64, "nanosecs": integer(0, 999_999_999)}), key=_clock
        ),
        "devices": array(
            obj(
                {
                    "type": enum(("c", "b", "u", "p"), "unsupported device type"),
                    "path": text(container_path),
                    "major": _I64,
                    "minor": _I64,
                    "fileMode": _U32,
                    "uid": _U32,
                    "gid": _U32,
                },
                required=("type", "path"),
                after=_device,
            ),
            _OBJECTS,
        ),
        "netDevices": mapping(obj({"name": text(_device_name)}), key=_device_name),
        "cgroupsPath": text(_cgroups_path),
        "resources": _resources,
        "intelRdt": _intel_rdt,
        "sysctl": string_map(),  # names are checked with the namespaces, below
        "seccomp": any_object,  # its contents are validated by the seccomp module
        "rootfsPropagation": enum(ROOTFS_PROPAGATIONS, "unsupported rootfsPropagation"),
        "maskedPaths": strings(container_path),
        "readonlyPaths": strings(container_path),
        "mountLabel": string,
        "personality": obj(
            {
                "domain": enum(("LINUX", "LINUX32"), "unsupported personality domain"),
                "flags": strings(_personality_flag),
            },
            required=("domain",),
        ),
    }
)

_config = obj(
    {
        "ociVersion": text(_oci_version),
        "root": obj({"path": text(_nonempty), "readonly": boolean}, required=("path",)),
        "process": _process,
        "hostname": text(_utsname),
        "domainname": text(_utsname),
        "mounts": array(_mount_entry, _OBJECTS),
        "hooks": obj({stage: array(_hook, _OBJECTS) for stage in HOOK_STAGES}),
        "annotations": string_map(key=_annotation_key),
        "linux": _linux,
    },
    required=("ociVersion", "root", "process"),
)

# --- cross-field rules ---------------------------------------------------------------------


def sysctl_file(key: str) -> str:
    """The file under ``/proc/sys`` for a sysctl ``key`` (``net.ipv4.ip_forward`` ->
    ``net/ipv4/ip_forward``), accepting sysctl(8)'s ``/``-separated form too, in which ``.``
    is literal (``net/ipv4/conf/eth0.100/rp_filter``). Only valid for keys that
    :func:`validate_config` accepted."""
    return _dotted(key).translate(_SWAP_DOT_SLASH)


_SWAP_DOT_SLASH = str.maketrans("./", "/.")


def _dotted(key: str) -> str:
    """The dot-separated form of a sysctl key; ``/`` then stands for a literal ``.``."""
    slash = key.find("/")
    if slash != -1:
        dot = key.find(".")
        if dot == -1 or slash < dot:
            return key.translate(_SWAP_DOT_SLASH)
    return key


def _check_sysctl(key: str, ns: dict[str, str], doc: dict[str, Any], p: str) -> None:
    """Catalogue case 21: only namespaced sysctls, and only when that namespace is private."""
    name = _dotted(key)
    # Every component must name a real file below /proc/sys: no "", ".", "..", no NUL.
    if "\x00" in name or any(c.replace("/", ".") in ("", ".", "..") for c in name.split(".")):
        fail(p, f"invalid sysctl name {quote(key)}")
    if name in IPC_SYSCTLS or name.startswith("fs.mqueue."):
        if "ipc" not in ns:
            fail(p, f"sysctl {quote(name)} is not allowed in the host's ipc namespace")
    elif name.startswith("net."):
        # A network namespace joined by path counts as private (the caller chose it).
        if "network" not in ns:
            fail(p, f"sysctl {quote(name)} not allowed in host network namespace")
    elif name in ("kernel.domainname", "kernel.hostname") and "uts" in ns:
        if name == "kernel.hostname" and doc.get("hostname"):
            fail(p, 'sysctl "kernel.hostname" conflicts with the hostname field')
    else:
        fail(p, f"sysctl {quote(name)} is not in a separate kernel namespace")


def _cross_checks(doc: dict[str, Any]) -> None:
    linux = doc.get("linux") or {}
    ns = {n["type"]: n.get("path") or "" for n in linux.get("namespaces") or ()}

    for field in ("hostname", "domainname"):
        if doc.get(field) and "uts" not in ns:
            fail(
                field,
                f"unable to set {field} {quote(doc[field])} without a private UTS namespace",
            )

    maps = {k: linux.get(k) for k in ("uidMappings", "gidMappings")}
    if "user" not in ns:
        for k, v in maps.items():
            if v:
                fail(f"linux.{k}", "mappings given, but no user namespace is configured")
    elif ns["user"]:
        for k, v in maps.items():
            if v:
                fail(
                    f"linux.{k}",
                    "user namespace mappings cannot be set when joining the user namespace "
                    f"at {quote(ns['user'])}",
                )
    else:
        for k, v in maps.items():
            if not v:
                fail(f"linux.{k}", f"user namespaces enabled, but no {k[:3]} mappings found")

    if linux.get("timeOffsets"):
        if "time" not in ns:
            fail("linux.timeOffsets", "time offsets specified, but no time namespace is configured")
        if ns["time"]:
            fail(
                "linux.timeOffsets",
                "time offsets cannot be set when joining the time namespace at "
                + quote(ns["time"]),
            )

    if "mount" not in ns:
        if doc.get("mounts"):
            fail("mounts", "unable to apply mounts without a private mount namespace")
        for k in ("maskedPaths", "readonlyPaths"):
            if linux.get(k):
                fail(f"linux.{k}", f"unable to apply {k} without a private mount namespace")

    sysctl = linux.get("sysctl")
    if sysctl:
        for key in sysctl:
            _check_sysctl(key, ns, doc, key_path("linux.sysctl", key))


# --- entry points --------------------------------------------------------------------------


def validate_config(doc: object, where: str = "config.json") -> dict[str, Any]:
    """Validate a parsed ``config.json`` (runtime-spec 1.2, Linux) and return it unchanged.

    Raises :class:`ConfigError` ``(f"{where}: {json_path}", message)`` on the first problem.
    """
    try:
        _config(doc, "")
        assert isinstance(doc, dict)
        _cross_checks(doc)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.where}" if e.where else where, e.message) from None
    return doc


def validate_process(doc: object, where: str = "process.json") -> dict[str, Any]:
    """Validate a standalone ``process`` object (``exec --process``) the same way."""
    try:
        _process(doc, "")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.where}" if e.where else where, e.message) from None
    assert isinstance(doc, dict)
    return doc
