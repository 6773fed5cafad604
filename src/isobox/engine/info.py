"""``system info``: what this host offers isobox, in the shape of Docker's ``GET /info`` plus
an ``Isobox`` section with the host capabilities the choice of isolation depends on (cgroup
layout and controllers, KVM, CRIU, conmon, runtimes)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from isobox import __version__

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

CRIU_MIN = (4, 1)  # older CRIU cannot checkpoint on the 6.x kernels this targets


@dataclass(frozen=True)
class Capability:
    usable: bool
    version: str = ""
    path: str = ""
    reason: str = ""  # why not usable


def _version_of(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", proc.stdout + proc.stderr)
    return m.group(1) if m else ""


def kvm() -> Capability:
    """KVM is usable when the CPU exposes vmx/svm, kvm_intel/kvm_amd is loaded and /dev/kvm
    opens read-write (isobox.vm.accel decides; a paravirtual /dev/kvm alone is not enough)."""
    from isobox.vm.accel import kvm_problem

    problem = kvm_problem()
    path = "/dev/kvm" if os.path.exists("/dev/kvm") else ""
    if problem is not None:
        return Capability(False, path=path, reason=problem)
    return Capability(True, path=path)


def accelerator() -> dict[str, str]:
    from isobox.errors import IsoboxError
    from isobox.vm.accel import detect

    try:
        acc = detect()
    except IsoboxError as e:
        return {"Name": "", "Reason": str(e)}
    return {"Name": acc.name, "Reason": acc.reason}


def criu() -> Capability:
    path = shutil.which("criu") or ""
    if not path:
        return Capability(False, reason="criu is not installed")
    version = _version_of([path, "--version"])
    parts = tuple(int(x) for x in version.split(".")[:2]) if version else ()
    if not parts or parts < CRIU_MIN:
        return Capability(False, version, path, f"CRIU {version or '?'} is older than "
                          f"{'.'.join(map(str, CRIU_MIN))}, needed on kernel "
                          f"{platform.release()}")
    return Capability(True, version, path)


def conmon() -> Capability:
    path = shutil.which("conmon") or ""
    if not path:
        return Capability(False, reason="conmon is not installed")
    return Capability(True, _version_of([path, "--version"]), path)


def runtimes() -> dict[str, dict[str, str]]:
    from isobox.engine.runtime_client import runtime_path
    from isobox.errors import NotFoundError

    out: dict[str, dict[str, str]] = {}
    for name in ("isobox-runtime", "runc", "crun"):
        try:
            out[name] = {"path": runtime_path(name)}
        except NotFoundError:
            continue
    return out


def cgroups() -> dict[str, Any]:
    from isobox.cgroups.layout import hierarchies, layout_of

    hiers = hierarchies()
    controllers: dict[str, str] = {}
    for h in hiers:
        for c in h.controllers:
            controllers.setdefault(c, "v2" if h.is_v2 else "v1")
        if h.is_v2:
            try:
                with open(os.path.join(h.mountpoint, "cgroup.controllers")) as f:
                    for c in f.read().split():
                        controllers.setdefault(c, "v2")
            except OSError:
                pass
    layout = layout_of(hiers)
    return {"layout": layout, "version": "2" if layout == "v2" else "1",
            "controllers": dict(sorted(controllers.items())),
            "mounts": {h.key or "/": h.mountpoint for h in hiers}}


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def system_info(engine: Engine) -> dict[str, Any]:
    """Docker's ``/info`` keys, with ``Isobox`` holding the host capabilities."""
    from isobox.engine.stats import host_memory

    states = {"running": 0, "paused": 0, "stopped": 0}
    for row in engine.list():
        status = engine.effective_status(row)
        key = status if status in ("running", "paused") else "stopped"
        states[key] += 1
    try:
        images = len(engine.store.images())
    except OSError:
        images = 0
    cg = cgroups()
    rts = runtimes()
    k, c, cm = kvm(), criu(), conmon()
    return {
        "ID": "", "Containers": sum(states.values()),
        "ContainersRunning": states["running"], "ContainersPaused": states["paused"],
        "ContainersStopped": states["stopped"], "Images": images,
        "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", _fs_type(
            engine.layout.root)], ["Supports d_type", "true"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                    "Log": ["k8s-file"]},
        "MemoryLimit": "memory" in cg["controllers"],
        "SwapLimit": os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        or cg["layout"] == "v2",
        "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True,
        "PidsLimit": "pids" in cg["controllers"],
        "OomKillDisable": cg["layout"] != "v2",
        "IPv4Forwarding": _read("/proc/sys/net/ipv4/ip_forward") == "1",
        "Debug": False, "NFd": len(os.listdir("/proc/self/fd")), "NGoroutines": 0,
        "SystemTime": _now(), "LoggingDriver": "k8s-file",
        "CgroupDriver": "cgroupfs", "CgroupVersion": cg["version"],
        "KernelVersion": platform.release(), "OperatingSystem": _os_name(),
        "OSVersion": platform.version(), "OSType": "linux",
        "Architecture": platform.machine(), "NCPU": os.cpu_count() or 1,
        "MemTotal": host_memory(), "IndexServerAddress": "",
        "DockerRootDir": engine.layout.root, "Name": platform.node(),
        "Labels": [], "ExperimentalBuild": False, "ServerVersion": __version__,
        "Runtimes": rts, "DefaultRuntime": "isobox-runtime",
        "Swarm": {"LocalNodeState": "inactive"}, "LiveRestoreEnabled": True,
        "Isolation": "", "InitBinary": "tini-static",
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
        "Warnings": _warnings(cg, k),
        "Isobox": {
            "RunDir": engine.layout.run_dir, "RuntimeRoot": engine.layout.runtime_root,
            "Cgroups": cg, "KVM": asdict(k), "CRIU": asdict(c), "Conmon": asdict(cm),
            "VMAccelerator": accelerator(),
        },
    }


def _warnings(cg: dict[str, Any], k: Capability) -> list[str]:
    out = []
    if "memory" not in cg["controllers"]:
        out.append("WARNING: No memory limit support")
    if not k.usable:
        out.append(f"WARNING: KVM not usable: {k.reason}")
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def _fs_type(path: str) -> str:
    best, fstype = "", ""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                mp = fields[1]
                if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(
                        best):
                    best, fstype = mp, fields[2]
    except OSError:
        pass
    return fstype
