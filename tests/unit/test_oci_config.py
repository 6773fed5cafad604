"""isobox.oci.config: structure, ranges and the security rules of catalogue cases 21 and 22."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from oci_helpers import DELETE, base, kitchen_sink, set_path

from isobox.errors import ConfigError
from isobox.oci.config import sysctl_file, validate_config, validate_process
from isobox.oci.defaults import default_spec

U32 = "0..4294967295"
UID = "0..2147483647"  # process.user ids: containerd's cap (catalogue case 13)
U64 = "0..18446744073709551615"


def reject(doc: dict[str, Any], path: str, message: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate_config(doc)
    text = str(info.value)
    assert text == f"config.json: {path}: {info.value.message}", text
    assert message in info.value.message, text
    return info.value


# ---- valid documents ----------------------------------------------------------------------


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_validates(rootless: bool) -> None:
    doc = default_spec(rootless=rootless)
    before = copy.deepcopy(doc)
    assert validate_config(doc) is doc
    assert doc == before  # nothing changed


def test_every_field_validates() -> None:
    doc = kitchen_sink()
    before = copy.deepcopy(doc)
    assert validate_config(doc) is doc
    assert doc == before


def test_null_means_absent() -> None:
    doc = base()
    doc["hooks"] = None
    doc["annotations"] = None
    doc["process"]["rlimits"] = None
    doc["linux"]["seccomp"] = None
    validate_config(doc)


def test_where_prefix_and_document_type() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config([], where="/b/config.json")
    assert str(info.value) == "/b/config.json: expected an object, got array"
    doc = base()
    doc["process"]["args"] = 5
    with pytest.raises(ConfigError) as info:
        validate_config(doc, where="bundle/config.json")
    assert str(info.value) == (
        "bundle/config.json: process.args: expected an array of strings, got number 5"
    )
    assert info.value.where == "bundle/config.json: process.args"


# ---- bad values: (json path to set, value, json path in the error, part of the message) ---

BAD: list[tuple[str, Any, str, str]] = [
    # top level and root
    ("ociVersion", DELETE, "ociVersion", "required field is missing"),
    ("ociVersion", 1, "ociVersion", "expected a string, got number 1"),
    ("ociVersion", "2.0.0", "ociVersion", 'unsupported ociVersion "2.0.0"'),
    ("root", DELETE, "root", "required field is missing"),
    ("root", "rootfs", "root", 'expected an object, got string "rootfs"'),
    ("root.path", 5, "root.path", "expected a string, got number 5"),
    ("root.path", "", "root.path", "must not be empty"),
    ("root.readonly", "yes", "root.readonly", 'expected a boolean, got string "yes"'),
    ("hostname", 5, "hostname", "expected a string, got number 5"),
    ("hostname", "h" * 65, "hostname", "is longer than 64 bytes"),
    ("domainname", ["x"], "domainname", "expected a string, got array"),
    ("annotations", [], "annotations", "expected an object, got array"),
    ("annotations", {"a": 1}, 'annotations["a"]', "expected a string, got number 1"),
    ("annotations", {"": "x"}, 'annotations[""]', "annotation keys must not be empty"),
    ("linux", "x", "linux", 'expected an object, got string "x"'),
    # process
    ("process", DELETE, "process", "required field is missing"),
    ("process.terminal", 1, "process.terminal", "expected a boolean, got number 1"),
    ("process.consoleSize", {"height": 1}, "process.consoleSize.width", "required field"),
    ("process.consoleSize", {"height": 1, "width": -1}, "process.consoleSize.width", U64),
    ("process.user", DELETE, "process.user", "required field is missing"),
    ("process.user.uid", DELETE, "process.user.uid", "required field is missing"),
    ("process.user.uid", -1, "process.user.uid", f"-1 is out of range {UID}"),
    ("process.user.uid", 2**31, "process.user.uid",
     f"invalid user: id 2147483648 is out of range {UID}"),
    ("process.user.uid", True, "process.user.uid", "expected an integer, got boolean true"),
    ("process.user.gid", 4294967296, "process.user.gid", f"4294967296 is out of range {UID}"),
    ("process.user.umask", "022", "process.user.umask", 'expected an integer, got string "022"'),
    ("process.user.additionalGids", [1, 2**32], "process.user.additionalGids[1]", UID),
    ("process.user.additionalGids", [1.5], "process.user.additionalGids[0]", "got number 1.5"),
    ("process.user.additionalGids", 5, "process.user.additionalGids", "an array of integers"),
    ("process.args", DELETE, "process.args", "required field is missing"),
    ("process.args", 5, "process.args", "expected an array of strings, got number"),
    ("process.args", [], "process.args", "args must not be empty"),
    ("process.args", ["sh", 1], "process.args[1]", "expected a string, got number 1"),
    ("process.args", ["a\x00b"], "process.args[0]", '"a\\x00b" contains a NUL character'),
    ("process.commandLine", 1, "process.commandLine", "expected a string"),
    ("process.env", "A=B", "process.env", 'expected an array of strings, got string "A=B"'),
    ("process.env", ["A=1", "FOO"], "process.env[1]",
     'environment entry "FOO" is not of the form KEY=VALUE'),
    ("process.env", ["=x"], "process.env[0]", 'environment entry "=x"'),
    ("process.env", [None], "process.env[0]", "expected a string, got null"),
    ("process.cwd", DELETE, "process.cwd", "required field is missing"),
    ("process.cwd", "tmp", "process.cwd", 'cwd "tmp" is not an absolute path'),
    ("process.capabilities", [], "process.capabilities", "expected an object, got array"),
    ("process.capabilities.bounding", "CAP_KILL", "process.capabilities.bounding",
     'expected an array of strings, got string "CAP_KILL"'),
    ("process.capabilities.effective", ["CAP_KILL", "cap_chown"],
     "process.capabilities.effective[1]", 'invalid capability name "cap_chown"'),
    ("process.capabilities.ambient", ["CAP_"], "process.capabilities.ambient[0]",
     'invalid capability name "CAP_"'),
    ("process.capabilities.permitted", ["CAP_SYS ADMIN"], "process.capabilities.permitted[0]",
     'invalid capability name "CAP_SYS ADMIN"'),
    ("process.capabilities.inheritable", ["CAP_SYS_ADMIN2"],
     "process.capabilities.inheritable[0]", 'invalid capability name "CAP_SYS_ADMIN2"'),
    ("process.rlimits", {}, "process.rlimits", "expected an array of objects, got object"),
    ("process.rlimits[0].type", "RLIMIT_TEST", "process.rlimits[0].type",
     'unknown rlimit "RLIMIT_TEST"'),
    ("process.rlimits[0].type", 7, "process.rlimits[0].type", "expected a string, got number 7"),
    ("process.rlimits[0].hard", -1, "process.rlimits[0].hard", f"-1 is out of range {U64}"),
    ("process.rlimits[0].hard", 2**64, "process.rlimits[0].hard", "is out of range"),
    ("process.rlimits[0].soft", DELETE, "process.rlimits[0].soft", "required field is missing"),
    ("process.rlimits[0].soft", 2048, "process.rlimits[0].soft",
     "soft limit 2048 is greater than hard limit 1024"),
    ("process.rlimits[1]", {"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1},
     "process.rlimits[1].type", 'duplicate rlimit "RLIMIT_NOFILE"'),
    ("process.noNewPrivileges", "true", "process.noNewPrivileges", 'got string "true"'),
    ("process.apparmorProfile", 1, "process.apparmorProfile", "expected a string"),
    ("process.selinuxLabel", [], "process.selinuxLabel", "expected a string, got array"),
    ("process.oomScoreAdj", 1001, "process.oomScoreAdj", "1001 is out of range -1000..1000"),
    ("process.oomScoreAdj", 1.0, "process.oomScoreAdj", "expected an integer, got number 1.0"),
    ("process.ioPriority", {"class": "IOPRIO_CLASS_FOO"}, "process.ioPriority.class",
     'unknown ioPriority class "IOPRIO_CLASS_FOO"'),
    ("process.ioPriority", {"priority": 1}, "process.ioPriority.class", "required field"),
    ("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8},
     "process.ioPriority.priority", "8 is out of range 0..7"),
    ("process.scheduler", {}, "process.scheduler.policy", "required field is missing"),
    ("process.scheduler", {"policy": "SCHED_FOO"}, "process.scheduler.policy",
     'unknown scheduler policy "SCHED_FOO"'),
    ("process.scheduler", {"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice",
     "nice 20 is out of range -20..19"),
    ("process.scheduler", {"policy": "SCHED_OTHER", "priority": 5},
     "process.scheduler.priority", "priority can only be set for SCHED_FIFO or SCHED_RR"),
    ("process.scheduler", {"policy": "SCHED_FIFO", "flags": ["SCHED_FLAG_BOGUS"]},
     "process.scheduler.flags[0]", 'unknown scheduler flag "SCHED_FLAG_BOGUS"'),
    ("process.scheduler", {"policy": "SCHED_RR", "priority": 5, "runtime": 5},
     "process.scheduler.runtime", "runtime can only be set for SCHED_DEADLINE"),
    ("process.scheduler", {"policy": "SCHED_BATCH", "deadline": -1},
     "process.scheduler.deadline", f"-1 is out of range {U64}"),
    ("process.execCPUAffinity", {"initial": "0-3;rm"}, "process.execCPUAffinity.initial",
     'invalid CPU list "0-3;rm"'),
    ("process.execCPUAffinity", {"final": 3}, "process.execCPUAffinity.final",
     "expected a string, got number 3"),
    # mounts
    ("mounts", "x", "mounts", 'expected an array of objects, got string "x"'),
    ("mounts[0]", "x", "mounts[0]", 'expected an object, got string "x"'),
    ("mounts[0].destination", DELETE, "mounts[0].destination", "required field is missing"),
    ("mounts[0].destination", "proc", "mounts[0].destination", '"proc" is not an absolute path'),
    ("mounts[1].destination", "/dev/../../etc", "mounts[1].destination",
     '"/dev/../../etc" must not contain a ".." component'),
    ("mounts[1].destination", "/..", "mounts[1].destination", 'must not contain a ".."'),
    ("mounts[1].type", 1, "mounts[1].type", "expected a string, got number 1"),
    ("mounts[1].source", [], "mounts[1].source", "expected a string, got array"),
    ("mounts[1].options", "ro", "mounts[1].options", 'expected an array of strings, got string'),
    ("mounts[1].options", ["ro", 1], "mounts[1].options[1]", "expected a string, got number 1"),
    ("mounts[7]", {"destination": "/x", "type": "bind", "source": "/y",
                   "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]},
     "mounts[7]", "needs both uidMappings and gidMappings"),
    ("mounts[7]", {"destination": "/x", "type": "tmpfs", "source": "tmpfs",
                   "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                   "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]},
     "mounts[7]", "id-mapped mounts are only supported for bind mounts"),
    ("mounts[7]", {"destination": "/x", "type": "bind", "source": "/y",
                   "uidMappings": [{"containerID": 0, "hostID": 1}],
                   "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]},
     "mounts[7].uidMappings[0].size", "required field is missing"),
    # hooks
    ("hooks", [], "hooks", "expected an object, got array"),
    ("hooks.createContainer", "x", "hooks.createContainer", "expected an array of objects"),
    ("hooks.prestart", [{"path": "hook"}], "hooks.prestart[0].path",
     '"hook" is not an absolute path'),
    ("hooks.poststop", [{}], "hooks.poststop[0].path", "required field is missing"),
    ("hooks.createRuntime", [{"path": "/bin/true", "timeout": 0}],
     "hooks.createRuntime[0].timeout", "timeout must be a positive number of seconds, got 0"),
    ("hooks.createRuntime", [{"path": "/bin/true", "timeout": "5"}],
     "hooks.createRuntime[0].timeout", 'expected an integer, got string "5"'),
    ("hooks.startContainer", [{"path": "/bin/true", "args": "x"}],
     "hooks.startContainer[0].args", 'expected an array of strings, got string "x"'),
    ("hooks.poststart", [{"path": "/bin/true", "env": ["X"]}], "hooks.poststart[0].env[0]",
     'environment entry "X"'),
    # linux: namespaces, devices
    ("linux.namespaces", {}, "linux.namespaces", "expected an array of objects, got object"),
    ("linux.namespaces[0].type", "foo", "linux.namespaces[0].type",
     'unsupported namespace type "foo"'),
    ("linux.namespaces[0]", {}, "linux.namespaces[0].type", "required field is missing"),
    ("linux.namespaces[5]", {"type": "pid"}, "linux.namespaces[5].type",
     'duplicate namespace type "pid"'),
    ("linux.namespaces[0].path", "proc/1/ns/pid", "linux.namespaces[0].path",
     '"proc/1/ns/pid" is not an absolute path'),
    ("linux.namespaces[0].path", 5, "linux.namespaces[0].path", "expected a string"),
    ("linux.devices", [{"path": "dev/fuse", "type": "c", "major": 10, "minor": 229}],
     "linux.devices[0].path", '"dev/fuse" is not an absolute path'),
    ("linux.devices", [{"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 1}],
     "linux.devices[0].path", 'must not contain a ".." component'),
    ("linux.devices", [{"path": "/dev/x", "type": "x"}], "linux.devices[0].type",
     'unsupported device type "x"'),
    ("linux.devices", [{"path": "/dev/x", "type": "c", "minor": 1}], "linux.devices[0].major",
     'required for a device of type "c"'),
    ("linux.devices", [{"path": "/dev/x", "type": "b", "major": 1}], "linux.devices[0].minor",
     'required for a device of type "b"'),
    ("linux.devices", [{"path": "/dev/x", "type": "p", "fileMode": -1}],
     "linux.devices[0].fileMode", f"-1 is out of range {U32}"),
    ("linux.devices", [{"path": "/dev/x", "type": "p", "uid": "0"}], "linux.devices[0].uid",
     'expected an integer, got string "0"'),
    ("linux.devices", [{"type": "p"}], "linux.devices[0].path", "required field is missing"),
    ("linux.cgroupsPath", 5, "linux.cgroupsPath", "expected a string, got number 5"),
    ("linux.cgroupsPath", "/a/../../b", "linux.cgroupsPath",
     'cgroupsPath "/a/../../b" must not contain a ".." component'),
    # linux.resources
    ("linux.resources", [], "linux.resources", "expected an object, got array"),
    ("linux.resources.devices[0].allow", "no", "linux.resources.devices[0].allow",
     'expected a boolean, got string "no"'),
    ("linux.resources.devices[0].allow", DELETE, "linux.resources.devices[0].allow",
     "required field is missing"),
    ("linux.resources.devices[0].type", "x", "linux.resources.devices[0].type",
     'unsupported device type "x"'),
    ("linux.resources.devices[0].major", "1", "linux.resources.devices[0].major",
     "expected an integer"),
    ("linux.resources.devices[0].access", "rwx", "linux.resources.devices[0].access",
     'invalid device access "rwx"'),
    ("linux.resources.memory.limit", "1g", "linux.resources.memory.limit",
     'expected an integer, got string "1g"'),
    ("linux.resources.memory.swap", -2, "linux.resources.memory.swap", "-2 is out of range -1.."),
    ("linux.resources.memory.swappiness", 101, "linux.resources.memory.swappiness",
     "swappiness 101 is out of range 0..100"),
    ("linux.resources.memory.disableOOMKiller", 1, "linux.resources.memory.disableOOMKiller",
     "expected a boolean, got number 1"),
    ("linux.resources.cpu.shares", -1, "linux.resources.cpu.shares", f"-1 is out of range {U64}"),
    ("linux.resources.cpu.quota", "x", "linux.resources.cpu.quota", "expected an integer"),
    ("linux.resources.cpu.cpus", 3, "linux.resources.cpu.cpus", "expected a string, got number"),
    ("linux.resources.cpu.mems", "0\n1", "linux.resources.cpu.mems", 'invalid CPU list "0\\n1"'),
    ("linux.resources.pids", {}, "linux.resources.pids.limit", "required field is missing"),
    ("linux.resources.pids", {"limit": "max"}, "linux.resources.pids.limit",
     'expected an integer, got string "max"'),
    ("linux.resources.blockIO.weight", 70000, "linux.resources.blockIO.weight",
     "70000 is out of range 0..65535"),
    ("linux.resources.blockIO.weightDevice", [{"major": 8, "minor": 0}],
     "linux.resources.blockIO.weightDevice[0]", "set weight, leafWeight or both"),
    ("linux.resources.blockIO.throttleReadBpsDevice", [{"major": 8, "minor": 0}],
     "linux.resources.blockIO.throttleReadBpsDevice[0].rate", "required field is missing"),
    ("linux.resources.blockIO.throttleWriteIOPSDevice", [{"major": "8", "minor": 0, "rate": 1}],
     "linux.resources.blockIO.throttleWriteIOPSDevice[0].major", "expected an integer"),
    ("linux.resources.hugepageLimits", [{"pageSize": "../../x", "limit": 1}],
     "linux.resources.hugepageLimits[0].pageSize", 'invalid hugepage size "../../x"'),
    ("linux.resources.hugepageLimits", [{"pageSize": "2MB"}],
     "linux.resources.hugepageLimits[0].limit", "required field is missing"),
    ("linux.resources.network.classID", -1, "linux.resources.network.classID",
     f"-1 is out of range {U32}"),
    ("linux.resources.network.priorities", [{"name": "eth0\n5", "priority": 1}],
     "linux.resources.network.priorities[0].name", 'invalid device name "eth0\\n5"'),
    ("linux.resources.rdma", {"mlx5": {}}, 'linux.resources.rdma["mlx5"]',
     "set hcaHandles, hcaObjects or both"),
    ("linux.resources.rdma", {"mlx 5": {"hcaHandles": 1}}, 'linux.resources.rdma["mlx 5"]',
     'invalid device name "mlx 5"'),
    ("linux.resources.rdma", {"mlx5": {"hcaObjects": -1}},
     'linux.resources.rdma["mlx5"].hcaObjects', f"-1 is out of range {U32}"),
    ("linux.resources.unified", {"../cgroup.procs": "1"},
     'linux.resources.unified["../cgroup.procs"]', 'invalid cgroup file name "../cgroup.procs"'),
    ("linux.resources.unified", {"memory.max": 5}, 'linux.resources.unified["memory.max"]',
     "expected a string, got number 5"),
    # linux: the rest
    ("linux.intelRdt", {"closID": "x"}, "linux.intelRdt", "Intel RDT (intelRdt) is not supported"),
    ("linux.sysctl", {"net.core.somaxconn": 1}, 'linux.sysctl["net.core.somaxconn"]',
     "expected a string, got number 1"),
    ("linux.seccomp", [], "linux.seccomp", "expected an object, got array"),
    ("linux.rootfsPropagation", "bogus", "linux.rootfsPropagation",
     'unsupported rootfsPropagation "bogus"'),
    ("linux.maskedPaths", ["proc/kcore"], "linux.maskedPaths[0]",
     '"proc/kcore" is not an absolute path'),
    ("linux.maskedPaths", ["/proc/../etc"], "linux.maskedPaths[0]", 'must not contain a ".."'),
    ("linux.readonlyPaths", ["/proc/sys", 1], "linux.readonlyPaths[1]", "expected a string"),
    ("linux.mountLabel", 1, "linux.mountLabel", "expected a string, got number 1"),
    ("linux.personality", {}, "linux.personality.domain", "required field is missing"),
    ("linux.personality", {"domain": "BSD"}, "linux.personality.domain",
     'unsupported personality domain "BSD"'),
    ("linux.personality", {"domain": "LINUX", "flags": ["X"]}, "linux.personality.flags[0]",
     'unsupported personality flag "X"'),
    ("linux.netDevices", {"eth0": {"name": "a/b"}}, 'linux.netDevices["eth0"].name',
     'invalid device name "a/b"'),
    ("linux.netDevices", {"..": {}}, 'linux.netDevices[".."]', 'invalid device name ".."'),
]


@pytest.mark.parametrize(("path", "value", "where", "message"), BAD, ids=[b[2] for b in BAD])
def test_bad_value(path: str, value: Any, where: str, message: str) -> None:
    doc = base()
    set_path(doc, path, value)
    reject(doc, where, message)


# ---- cross-field rules ---------------------------------------------------------------------


def without_ns(doc: dict[str, Any], *types: str) -> dict[str, Any]:
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] not in types]
    return doc


def with_ns(doc: dict[str, Any], typ: str, path: str | None = None) -> dict[str, Any]:
    without_ns(doc, typ)
    entry = {"type": typ} if path is None else {"type": typ, "path": path}
    doc["linux"]["namespaces"].append(entry)
    return doc


def test_hostname_needs_uts_namespace() -> None:
    reject(without_ns(base(), "uts"), "hostname",
           'unable to set hostname "runc" without a private UTS namespace')
    doc = without_ns(base(), "uts")
    doc["hostname"] = ""
    validate_config(doc)  # an empty hostname sets nothing
    doc["domainname"] = "example.org"
    reject(doc, "domainname", "unable to set domainname")
    validate_config(with_ns(base(), "uts", "/proc/1/ns/uts"))  # joined: allowed, as runc does


def test_user_namespace_mappings_iff_new_user_namespace() -> None:
    rootless = default_spec(rootless=True)
    validate_config(rootless)
    doc = copy.deepcopy(rootless)
    del doc["linux"]["uidMappings"]
    reject(doc, "linux.uidMappings", "user namespaces enabled, but no uid mappings found")
    doc = copy.deepcopy(rootless)
    doc["linux"]["gidMappings"] = []
    reject(doc, "linux.gidMappings", "user namespaces enabled, but no gid mappings found")
    doc = base()
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    reject(doc, "linux.uidMappings", "mappings given, but no user namespace is configured")
    doc = with_ns(copy.deepcopy(rootless), "user", "/proc/42/ns/user")
    reject(doc, "linux.uidMappings", 'when joining the user namespace at "/proc/42/ns/user"')
    del doc["linux"]["uidMappings"], doc["linux"]["gidMappings"]
    validate_config(doc)


@pytest.mark.parametrize(
    ("mappings", "where", "message"),
    [
        ([{"containerID": 0, "hostID": 1000, "size": 10}, {"containerID": 5, "hostID": 2000,
          "size": 10}], "linux.uidMappings[1]", "containerID range 5..14 overlaps mapping 0"),
        ([{"containerID": 0, "hostID": 1000, "size": 10}, {"containerID": 100, "hostID": 1009,
          "size": 1}], "linux.uidMappings[1]", "hostID range 1009..1009 overlaps mapping 0"),
        ([{"containerID": 0, "hostID": 0, "size": 0}], "linux.uidMappings[0].size",
         "size must be at least 1"),
        ([{"containerID": 4294967295, "hostID": 0, "size": 1}], "linux.uidMappings[0]",
         "containerID 4294967295 + size 1 goes beyond 4294967295"),
        ([{"containerID": 0, "hostID": 4294967290, "size": 100}], "linux.uidMappings[0]",
         "hostID 4294967290 + size 100"),
        ([{"containerID": 0, "hostID": -1, "size": 1}], "linux.uidMappings[0].hostID",
         f"-1 is out of range {U32}"),
        ([{"containerID": i, "hostID": i, "size": 1} for i in range(341)], "linux.uidMappings",
         "341 mappings are more than the kernel's limit of 340"),
        ("0 1000 1", "linux.uidMappings", 'expected an array of objects, got string "0 1000 1"'),
    ],
)
def test_id_mapping_ranges(mappings: Any, where: str, message: str) -> None:
    doc = default_spec(rootless=True)
    doc["linux"]["uidMappings"] = mappings
    reject(doc, where, message)


def test_id_mapping_edges_accepted() -> None:
    doc = default_spec(rootless=True)
    doc["linux"]["uidMappings"] = [
        {"containerID": 0, "hostID": 100000, "size": 10},
        {"containerID": 10, "hostID": 100010, "size": 10},  # adjacent, not overlapping
        {"containerID": 4294967294, "hostID": 5, "size": 1},  # the last id the kernel takes
    ]
    validate_config(doc)


def test_time_offsets_need_new_time_namespace() -> None:
    doc = base()
    doc["linux"]["timeOffsets"] = {"monotonic": {"secs": 10}}
    reject(doc, "linux.timeOffsets", "no time namespace is configured")
    reject(with_ns(doc, "time", "/proc/1/ns/time"), "linux.timeOffsets", "when joining the time")
    validate_config(with_ns(doc, "time"))
    doc["linux"]["timeOffsets"] = {"realtime": {"secs": 1}}
    reject(doc, 'linux.timeOffsets["realtime"]', 'unknown clock "realtime"')
    doc["linux"]["timeOffsets"] = {"boottime": {"nanosecs": 10**9}}
    reject(doc, 'linux.timeOffsets["boottime"].nanosecs', "1000000000 is out of range")


def test_mounts_and_restricted_paths_need_mount_namespace() -> None:
    doc = without_ns(base(), "mount")
    reject(doc, "mounts", "unable to apply mounts without a private mount namespace")
    doc["mounts"] = []
    reject(doc, "linux.maskedPaths", "without a private mount namespace")
    doc["linux"]["maskedPaths"] = []
    reject(doc, "linux.readonlyPaths", "without a private mount namespace")
    doc["linux"]["readonlyPaths"] = []
    validate_config(doc)


# ---- catalogue case 21: sysctls --------------------------------------------------------------

NS_DEFAULT: tuple[str, ...] = ()


@pytest.mark.parametrize(
    ("key", "drop", "message"),
    [
        ("kernel.core_pattern", NS_DEFAULT,
         'sysctl "kernel.core_pattern" is not in a separate kernel namespace'),
        ("vm.overcommit_memory", NS_DEFAULT,
         'sysctl "vm.overcommit_memory" is not in a separate kernel namespace'),
        ("kernel.panic", NS_DEFAULT, 'sysctl "kernel.panic" is not in a separate kernel'),
        ("net.ipv4.ip_forward", ("network",),
         'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
        ("net/ipv4/ip_forward", ("network",),
         'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
        ("kernel.msgmax", ("ipc",),
         "sysctl \"kernel.msgmax\" is not allowed in the host's ipc namespace"),
        ("kernel.shm_rmid_forced", ("ipc",), "is not allowed in the host's ipc namespace"),
        ("fs.mqueue.msg_max", ("ipc",),
         "sysctl \"fs.mqueue.msg_max\" is not allowed in the host's ipc namespace"),
        ("fs.mqueue", NS_DEFAULT, 'sysctl "fs.mqueue" is not in a separate kernel namespace'),
        ("kernel.domainname", ("uts",), 'sysctl "kernel.domainname" is not in a separate'),
        ("kernel.hostname", ("uts",), 'sysctl "kernel.hostname" is not in a separate'),
        ("kernel.hostname", NS_DEFAULT, 'sysctl "kernel.hostname" conflicts with the hostname'),
        ("net/../kernel/core_pattern", NS_DEFAULT,
         'invalid sysctl name "net/../kernel/core_pattern"'),
        ("net.ipv4.conf.//.forwarding", NS_DEFAULT, "invalid sysctl name"),
        ("net.ipv4..ip_forward", NS_DEFAULT, "invalid sysctl name"),
        ("net.", NS_DEFAULT, "invalid sysctl name"),
        ("/net/ipv4/ip_forward", NS_DEFAULT, "invalid sysctl name"),
        ("", NS_DEFAULT, 'invalid sysctl name ""'),
        ("net.ipv4.ip_forward\x00", NS_DEFAULT, "invalid sysctl name"),
    ],
)
def test_sysctl_rejected(key: str, drop: tuple[str, ...], message: str) -> None:
    doc = without_ns(base(), *drop)
    if "uts" in drop:
        del doc["hostname"]
    doc["linux"]["sysctl"] = {key: "1"}
    reject(doc, f"linux.sysctl[{quote_key(key)}]", message)


def quote_key(key: str) -> str:
    from isobox.oci._check import quote

    return quote(key)


@pytest.mark.parametrize(
    ("sysctl", "edit"),
    [
        ({"kernel.msgmax": "1", "kernel.sem": "1 2 3 4", "fs.mqueue.queues_max": "4"}, None),
        ({"net.ipv4.ip_forward": "1", "net.core.somaxconn": "256"}, None),
        ({"net.ipv4.ip_forward": "1"}, ("network", "/var/run/netns/x")),  # joined by path
        ({"kernel.msgmax": "1"}, ("ipc", "/proc/1/ns/ipc")),
        ({"net/ipv4/conf/eth0.100/forwarding": "1"}, None),
        ({"kernel.domainname": "example.org"}, None),
        ({"kernel.hostname": "box"}, "no-hostname-field"),
    ],
)
def test_sysctl_accepted(sysctl: dict[str, str], edit: Any) -> None:
    doc = base()
    doc["linux"]["sysctl"] = sysctl
    if edit == "no-hostname-field":
        del doc["hostname"]
    elif edit:
        with_ns(doc, *edit)
    validate_config(doc)


def test_sysctl_file() -> None:
    assert sysctl_file("net.ipv4.ip_forward") == "net/ipv4/ip_forward"
    assert sysctl_file("net/ipv4/ip_forward") == "net/ipv4/ip_forward"
    assert sysctl_file("net/ipv4/conf/eth0.100/forwarding") == "net/ipv4/conf/eth0.100/forwarding"
    assert sysctl_file("net.ipv4.conf.eth0/100.forwarding") == "net/ipv4/conf/eth0.100/forwarding"


# ---- catalogue case 22: mounts into /proc ---------------------------------------------------


def add_mount(doc: dict[str, Any], dest: str, typ: str = "bind", *options: str) -> str:
    doc["mounts"].append({"destination": dest, "type": typ, "source": "/tmp/src",
                          "options": list(options) or ["rbind" if typ == "bind" else "nosuid"]})
    return f"mounts[{len(doc['mounts']) - 1}]"


@pytest.mark.parametrize(
    ("dest", "typ", "shown"),
    [
        ("/proc/sys", "bind", "/proc/sys"),
        ("/proc//sys", "bind", "/proc/sys"),
        ("/proc/sys/kernel", "bind", "/proc/sys/kernel"),
        ("/proc/self/attr", "bind", "/proc/self/attr"),
        ("/./proc/sys/", "bind", "/proc/sys"),
        ("//proc/./sys", "bind", "/proc/sys"),
        ("/proc/sysrq-trigger", "bind", "/proc/sysrq-trigger"),
        ("/proc/sys", "tmpfs", "/proc/sys"),
        ("/proc/sys", "proc", "/proc/sys"),
        ("/proc/cpuinfo", "tmpfs", "/proc/cpuinfo"),  # the lxcfs exceptions are for binds only
        ("/proc/cpuinfo/x", "bind", "/proc/cpuinfo/x"),
        ("/proc/sys/kernel/ns_last_pid2", "bind", "/proc/sys/kernel/ns_last_pid2"),
    ],
)
def test_mount_inside_proc_rejected(dest: str, typ: str, shown: str) -> None:
    doc = base()
    where = add_mount(doc, dest, typ)
    reject(doc, where + ".destination", f'"{shown}" cannot be mounted because it is inside /proc')


@pytest.mark.parametrize("dest", ["/proc", "/proc/", "//proc", "/proc/."])
def test_non_procfs_on_proc_rejected(dest: str) -> None:
    doc = base()
    where = add_mount(doc, dest, "bind")
    reject(doc, where + ".type", '"/proc" cannot be mounted because it is not of type proc')
    doc = base()
    doc["mounts"][0]["type"] = "tmpfs"
    reject(doc, "mounts[0].type", "not of type proc")


@pytest.mark.parametrize(
    "dest",
    [
        "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
        "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/sys/kernel/ns_last_pid",
        "/proc/sys/crypto/fips_enabled", "/proc//meminfo",
    ],
)
def test_lxcfs_binds_into_proc_allowed(dest: str) -> None:
    doc = base()
    add_mount(doc, dest, "bind")
    validate_config(doc)
    doc = base()
    add_mount(doc, dest, "none", "rbind", "ro")  # bind through options, any type
    validate_config(doc)


def test_mounts_next_to_proc_allowed() -> None:
    doc = base()
    add_mount(doc, "/procfs", "bind")
    add_mount(doc, "/srv/proc/sys", "bind")
    validate_config(doc)


# ---- process.json and speed ---------------------------------------------------------------


def test_validate_process() -> None:
    proc = base()["process"]
    assert validate_process(proc) is proc
    proc["rlimits"][0]["type"] = "RLIMIT_TEST"
    with pytest.raises(ConfigError) as info:
        validate_process(proc)
    assert str(info.value) == 'process.json: rlimits[0].type: unknown rlimit "RLIMIT_TEST"'


def best_time(fn: Callable[[], object], loops: int = 200, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - t) / loops)
    return best


def test_validation_is_fast() -> None:
    typical = base()
    full = kitchen_sink()
    t_typical = best_time(lambda: validate_config(typical))
    t_full = best_time(lambda: validate_config(full))
    print(f"validate_config: runc default {t_typical * 1e6:.0f} us, "
          f"every field {t_full * 1e6:.0f} us")
    assert t_typical < 1e-3
    assert t_full < 1e-3


def test_no_heavy_imports() -> None:
    code = (
        "import sys; before = set(sys.modules)\n"
        "import isobox.oci.config, isobox.oci.defaults, isobox.oci.state, isobox.oci.ids\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    heavy = {"typing", "re", "json", "enum", "dataclasses", "logging", "argparse", "pathlib"}
    assert not heavy & set(out), out


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _nodes(v, (*path, i))
    return out


def test_any_value_anywhere_gives_config_error_or_passes() -> None:
    """Replace every node of a full config by odd values: never a crash, only ConfigError."""
    doc = kitchen_sink()
    odd: list[Any] = [None, 0, -1, 2**70, 1.5, True, "", "x/..", [], {}, [None], {"": None}]
    for path in _nodes(doc):
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        saved = parent[path[-1]]
        for value in odd:
            parent[path[-1]] = value
            try:
                validate_config(doc)
            except ConfigError:
                pass
        parent[path[-1]] = saved
    validate_config(doc)
