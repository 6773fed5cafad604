"""Which create options lift a container's default confinement (catalogue case 47).

A server (``isobox serve``) refuses these from API clients unless it was started with
``--allow-privileged``: membership of the socket's group should not by itself hand out
``--privileged``. The CLI (run by root on the host) is not gated. Docker's default
capabilities, its default seccomp policy and an empty device list are confinement; what
goes beyond them here is listed, with the option that asked for it."""

from __future__ import annotations

from dataclasses import dataclass

from isobox.engine.options import CreateOptions

# Capabilities that reach the host from a container (kernel modules, raw I/O, mounts and
# namespaces, ptrace of other processes, reading any file by handle, eBPF, the host's clock
# and logs, rebooting, MAC policy). CAP_NET_ADMIN and the like act on the container's own
# namespaces and stay allowed.
HOST_CAPS = frozenset({
    "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE",
    "CAP_DAC_READ_SEARCH", "CAP_SYS_BOOT", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_TIME",
    "CAP_SYSLOG", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_LINUX_IMMUTABLE",
})


@dataclass(frozen=True)
class Escalation:
    """One option that lifts confinement: ``option`` is privileged, cap_add, seccomp or
    devices; ``value`` what was asked (``ALL``, ``unconfined``, ``/dev/sda``)."""

    option: str
    value: str


def _cap(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def escalations(opts: CreateOptions) -> list[Escalation]:
    """What in ``opts`` goes beyond the default confinement (empty: nothing)."""
    out: list[Escalation] = []
    if opts.privileged:
        out.append(Escalation("privileged", "true"))
    for cap in opts.cap_add:
        if _cap(cap) == "CAP_ALL" or _cap(cap) in HOST_CAPS:
            out.append(Escalation("cap_add", cap))
    if opts.seccomp_profile:  # "unconfined", or a profile file that may allow anything
        out.append(Escalation("seccomp", f"seccomp={opts.seccomp_profile}"))
    for dev in opts.devices:
        out.append(Escalation("devices", dev.host_path))
    return out
