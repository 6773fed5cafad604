"""Accelerator choice: KVM needs the vmx/svm flag, the kvm module and a usable /dev/kvm."""

from __future__ import annotations

from pathlib import Path

import pytest

from isobox.vm import accel
from isobox.vm.accel import detect, host_tsc_khz, kvm_problem
from isobox.vm.errors import VMError


def _cpuinfo(tmp: Path, flags: str, mhz: str = "2100.000") -> str:
    p = tmp / "cpuinfo"
    p.write_text(f"processor\t: 0\ncpu MHz\t\t: {mhz}\nflags\t\t: fpu {flags} sse2\n\n")
    return str(p)


def test_this_host_uses_tcg_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(accel.ENV, raising=False)
    flags = Path("/proc/cpuinfo").read_text().split()
    a = detect()
    if "vmx" in flags or "svm" in flags:
        pytest.skip("host has hardware virtualisation")
    assert a.name == "tcg"
    assert "no vmx/svm CPU flag" in a.reason and "TCG" in a.reason


def test_missing_flag_module_or_device(vm_tmp: Path) -> None:
    mods = vm_tmp / "module"
    mods.mkdir()
    dev = vm_tmp / "kvm"
    assert "no vmx/svm" in (kvm_problem(_cpuinfo(vm_tmp, "lm"), str(mods), str(dev)) or "")
    assert "kvm_intel/kvm_amd" in (kvm_problem(_cpuinfo(vm_tmp, "vmx"), str(mods), str(dev))
                                   or "")
    (mods / "kvm_amd").mkdir()
    problem = kvm_problem(_cpuinfo(vm_tmp, "svm"), str(mods), str(dev))
    assert problem is not None and str(dev) in problem
    dev.write_text("")
    assert kvm_problem(_cpuinfo(vm_tmp, "svm"), str(mods), str(dev)) is None


def test_env_forces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(accel.ENV, "tcg")
    assert detect().name == "tcg"
    monkeypatch.setenv(accel.ENV, "bogus")
    with pytest.raises(VMError, match="ISOBOX_VM_ACCEL"):
        detect()
    if kvm_problem() is not None:
        monkeypatch.setenv(accel.ENV, "kvm")
        with pytest.raises(VMError, match="KVM is not usable"):
            detect()


def test_host_tsc_rate(vm_tmp: Path) -> None:
    nofreq = str(vm_tmp / "nocpufreq")
    assert host_tsc_khz(_cpuinfo(vm_tmp, "constant_tsc nonstop_tsc"), nofreq) == 2100000
    assert host_tsc_khz(_cpuinfo(vm_tmp, "constant_tsc"), nofreq) is None
    assert host_tsc_khz(_cpuinfo(vm_tmp, "constant_tsc nonstop_tsc aperfmperf"), nofreq) is None
    (vm_tmp / "cpufreq" / "policy0").mkdir(parents=True)
    assert host_tsc_khz(_cpuinfo(vm_tmp, "constant_tsc nonstop_tsc"),
                        str(vm_tmp / "cpufreq")) is None
