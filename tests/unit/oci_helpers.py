"""Helpers for the OCI unit tests: edit a config by JSON path, and a config using every field."""

from __future__ import annotations

import copy
from typing import Any

from isobox.oci.defaults import default_spec


def _parse(path: str) -> list[str | int]:
    """``process.rlimits[0].type`` -> ``["process", "rlimits", 0, "type"]``."""
    parts: list[str | int] = []
    for chunk in path.split("."):
        name, _, rest = chunk.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index))
            rest = rest.removeprefix("[")
    return parts


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set (creating objects on the way) or, for ``value is DELETE``, remove a value."""
    parts = _parse(path)
    node: Any = doc
    for part in parts[:-1]:
        if isinstance(part, str) and part not in node:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list) and last == len(node):
        node.append(value)
    else:
        node[last] = value


DELETE = object()


def base() -> dict[str, Any]:
    return default_spec()


def kitchen_sink() -> dict[str, Any]:
    """A valid config that sets every field runtime-spec 1.2 defines for Linux."""
    doc = default_spec()
    proc = doc["process"]
    proc.update(
        {
            "consoleSize": {"height": 24, "width": 80},
            "user": {"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [5, 2147483647]},
            "commandLine": "",
            "apparmorProfile": "",
            "selinuxLabel": "",
            "oomScoreAdj": -1000,
            "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 7},
            "scheduler": {
                "policy": "SCHED_DEADLINE",
                "flags": ["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_DL_OVERRUN"],
                "runtime": 10_000_000,
                "deadline": 20_000_000,
                "period": 30_000_000,
            },
            "execCPUAffinity": {"initial": "0", "final": "0-3, 7"},
        }
    )
    proc["capabilities"]["inheritable"] = []
    proc["rlimits"].append({"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 0})
    doc["domainname"] = "example.org"
    doc["annotations"] = {"org.example.key": "value", "empty": ""}
    doc["mounts"] += [
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
        {
            "destination": "/idmapped",
            "type": "bind",
            "source": "/srv/x",
            "options": ["bind"],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        },
        {"destination": "/proc/cpuinfo", "type": "bind", "source": "/var/lib/lxcfs/proc/cpuinfo"},
        {"destination": "/proc/sys/kernel/ns_last_pid", "source": "/x", "options": ["rbind"]},
        {"destination": "/procfoo", "type": "tmpfs", "source": "tmpfs"},
    ]
    hook = {"path": "/usr/bin/hook", "args": ["hook", "x"], "env": ["A=1"], "timeout": 5}
    doc["hooks"] = {stage: [dict(hook)] for stage in (
        "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop",
    )}
    linux = doc["linux"]
    linux["namespaces"] += [
        {"type": "cgroup"},
        {"type": "time"},
        {"type": "user"},
    ]
    linux["uidMappings"] = [
        {"containerID": 0, "hostID": 100000, "size": 1000},
        {"containerID": 1000, "hostID": 1000, "size": 1},
    ]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    linux["timeOffsets"] = {"monotonic": {"secs": -86400, "nanosecs": 999_999_999},
                            "boottime": {"secs": 1}}
    linux["devices"] = [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438,
         "uid": 0, "gid": 0},
        {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
        {"path": "/dev/myfifo", "type": "p"},
    ]
    linux["netDevices"] = {"eth1": {"name": "eth0"}, "dummy0": {}}
    linux["cgroupsPath"] = "/isobox/test"
    linux["resources"] = {
        "devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
            {"allow": True, "type": "a", "major": -1, "minor": -1, "access": ""},
        ],
        "memory": {"limit": 536870912, "reservation": -1, "swap": -1, "kernel": -1,
                   "kernelTCP": 0, "swappiness": 60, "disableOOMKiller": False,
                   "useHierarchy": True, "checkBeforeUpdate": True},
        "cpu": {"shares": 1024, "quota": -1, "burst": 0, "period": 100000,
                "realtimeRuntime": 950000, "realtimePeriod": 1000000, "cpus": "0-3",
                "mems": "0", "idle": 0},
        "pids": {"limit": -1},
        "blockIO": {
            "weight": 500, "leafWeight": 300,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 500},
                             {"major": 8, "minor": 16, "leafWeight": 300}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 600}],
            "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 600}],
            "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 300}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 300}],
        },
        "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200},
                           {"pageSize": "64KB", "limit": 0}],
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}, "rxe3": {"hcaObjects": 1}},
        "unified": {"io.max": "259:0 rbps=2097152", "memory.high": "max"},
    }
    linux["sysctl"] = {
        "net.ipv4.ip_forward": "1",
        "net/ipv4/conf/eth0.100/forwarding": "1",
        "kernel.msgmax": "8192",
        "fs.mqueue.msg_max": "10",
        "kernel.domainname": "example.org",
    }
    linux["seccomp"] = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    linux["rootfsPropagation"] = "rslave"
    linux["maskedPaths"].append("/sys/devices/virtual/powercap")
    linux["mountLabel"] = ""
    linux["personality"] = {"domain": "LINUX32", "flags": []}
    doc["solaris"] = {"ignored": "unknown platforms and fields are ignored"}
    doc["x-unknown"] = [1, 2, 3]
    return copy.deepcopy(doc)
