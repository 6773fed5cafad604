"""Default runtime specs and the confinement defaults the engine builds on.

:func:`default_spec` returns, as a fresh dict, exactly what ``runc spec`` (runc 1.1.5, spec
1.0.2-dev) writes, or ``runc spec --rootless``; ``isobox-runtime spec`` writes it.

The constants are moby's defaults (catalogue cases 11, 15, 16), which the engine applies to
every container unless the user explicitly asks otherwise. moby also masks
``/sys/devices/system/cpu/cpu<N>/thermal_throttle`` for every possible CPU whose directory
exists; that needs the host, so the engine adds :data:`THERMAL_THROTTLE_PATTERN` expansions.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Spec version that ``runc spec`` 1.1.5 writes (kept so the output is byte-for-byte runc's).
RUNC_SPEC_VERSION = "1.0.2-dev"

# moby daemon/pkg/oci/defaults.go defaultLinuxMaskedPaths (static part), in moby's order.
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)
THERMAL_THROTTLE_PATTERN = "/sys/devices/system/cpu/cpu{}/thermal_throttle"

# moby's ReadonlyPaths (the same five runc's example spec uses).
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# moby daemon/pkg/oci/caps/defaults.go: CapBnd = CapPrm = CapEff = 0x00000000a80425fb.
DOCKER_DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

_RUNC_CAPS = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
_RUNC_MASKED = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)


def _mount(dest: str, typ: str, source: str, *options: str) -> dict[str, Any]:
    m: dict[str, Any] = {"destination": dest, "type": typ, "source": source}
    if options:
        m["options"] = list(options)
    return m


def default_spec(rootless: bool = False, args: list[str] | None = None) -> dict[str, Any]:
    """The config ``runc spec`` writes (``--rootless``: ``runc spec --rootless``), as a new dict.

    ``args`` replaces the default ``["sh"]``. Rootless maps container root to the caller's
    effective uid and gid, as runc does.
    """
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        devpts.append("gid=5")  # no gid 5 inside a single-id user namespace
    sys_opts = ("nosuid", "noexec", "nodev", "ro")
    linux: dict[str, Any] = {}
    if rootless:
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        namespaces = ["pid", "ipc", "uts", "mount", "user"]
    else:
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
        namespaces = ["pid", "network", "ipc", "uts", "mount"]
    linux["namespaces"] = [{"type": t} for t in namespaces]
    linux["maskedPaths"] = list(_RUNC_MASKED)
    linux["readonlyPaths"] = list(DEFAULT_READONLY_PATHS)
    return {
        "ociVersion": RUNC_SPEC_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": list(args) if args is not None else ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {
                k: list(_RUNC_CAPS) for k in ("bounding", "effective", "permitted", "ambient")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            _mount("/proc", "proc", "proc"),
            _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
            _mount("/dev/pts", "devpts", "devpts", *devpts),
            _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777",
                   "size=65536k"),
            _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
            # Rootless: sysfs can't be mounted without a network namespace of one's own.
            _mount("/sys", "none", "/sys", "rbind", *sys_opts)
            if rootless
            else _mount("/sys", "sysfs", "sysfs", *sys_opts),
            _mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid", "noexec", "nodev", "relatime",
                   "ro"),
        ],
        "linux": linux,
    }
