"""Pick the QEMU accelerator: KVM only where it really works, TCG otherwise.

A /dev/kvm without vmx/svm in /proc/cpuinfo is a paravirtual device (nested under another
hypervisor) that hangs stock kernels, so the CPU flag is required, not just the device node."""

from __future__ import annotations

import os
from dataclasses import dataclass

from isobox.vm.errors import VMError

ENV = "ISOBOX_VM_ACCEL"


@dataclass(frozen=True)
class Accelerator:
    name: str  # "kvm" | "tcg"
    reason: str
    # TCG guests read the host's TSC; the guest kernel's PIT calibration of it is flaky under
    # TCG (and a failed calibration hangs the boot), so the host rate is passed on instead.
    tsc_khz: int | None = None


def _cpu_flags(cpuinfo: str) -> set[str]:
    flags: set[str] = set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.partition(":")[2].split())
    except OSError:
        pass
    return flags


def host_tsc_khz(cpuinfo: str = "/proc/cpuinfo",
                 cpufreq: str = "/sys/devices/system/cpu/cpufreq") -> int | None:
    """The host TSC rate in kHz when /proc/cpuinfo's "cpu MHz" is it: an invariant TSC and no
    frequency scaling (no aperfmperf, no cpufreq policy), as on a VM host; else None."""
    flags = _cpu_flags(cpuinfo)
    if not {"constant_tsc", "nonstop_tsc"} <= flags or "aperfmperf" in flags:
        return None
    try:
        if any(n.startswith("policy") for n in os.listdir(cpufreq)):
            return None
    except OSError:
        pass
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    khz = round(float(line.partition(":")[2]) * 1000)
                    return khz if khz > 0 else None
    except (OSError, ValueError):
        pass
    return None


def kvm_problem(cpuinfo: str = "/proc/cpuinfo", sys_module: str = "/sys/module",
                dev: str = "/dev/kvm") -> str | None:
    """Why KVM is unusable here, or None when it is usable."""
    flags = _cpu_flags(cpuinfo)
    if not flags & {"vmx", "svm"}:
        return "no vmx/svm CPU flag: /dev/kvm is paravirtual, using TCG software emulation" \
            if os.path.exists(dev) else "no vmx/svm CPU flag, using TCG software emulation"
    if not any(os.path.isdir(os.path.join(sys_module, m)) for m in ("kvm_intel", "kvm_amd")):
        return "kvm_intel/kvm_amd module not loaded, using TCG software emulation"
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open {dev}: {e.strerror}, using TCG software emulation"
    os.close(fd)
    return None


def detect() -> Accelerator:
    """KVM when the host supports it, else TCG; ISOBOX_VM_ACCEL=tcg|kvm forces a choice."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced not in ("", "tcg", "kvm"):
        raise VMError(f"{ENV}={forced!r}: must be 'kvm' or 'tcg'")
    if forced == "tcg":
        return Accelerator("tcg", f"forced by {ENV}=tcg", host_tsc_khz())
    problem = kvm_problem()
    if forced == "kvm":
        if problem is not None:
            reason = problem.removesuffix(", using TCG software emulation")
            raise VMError(f"{ENV}=kvm: KVM is not usable on this host: {reason}")
        return Accelerator("kvm", f"forced by {ENV}=kvm")
    if problem is None:
        return Accelerator("kvm", "vmx/svm CPU flag, kvm module loaded and /dev/kvm usable")
    return Accelerator("tcg", problem, host_tsc_khz())
