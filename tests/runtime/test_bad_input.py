"""Bad input through the real binary: each is exit status 1 with an error naming the field
or value, and leaves nothing behind (no state dir, cgroup, mount or process)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from rt_helpers import assert_nothing_left, expect_failure, mountinfo, wait_for

from harness import Bundle, Runtime, unique_id

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """An edit that sets ``a.b.c`` (list indexes as numbers) to ``value``."""
    def edit(cfg: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        node: Any = cfg
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return edit


def _pop(path: str) -> Edit:
    def edit(cfg: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = cfg
        for k in head:
            node = node[int(k) if k.isdigit() else k]
        del node[last]
    return edit


def _append(path: str, value: Any) -> Edit:
    def edit(cfg: dict[str, Any]) -> None:
        node: Any = cfg
        for k in path.split("."):
            node = node.setdefault(k, []) if k == path.split(".")[-1] else node[k]
        node.append(value)
    return edit


CASES: list[tuple[str, Edit, tuple[str, ...]]] = [
    ("args-type", _set("process.args", "sh"), ("process.args", "array")),
    ("args-empty", _set("process.args", []), ("process.args",)),
    ("env-type", _set("process.env", [1]), ("process.env[0]",)),
    ("env-shape", _set("process.env", ["NOEQUALS"]), ("process.env[0]", "NOEQUALS")),
    ("cwd-relative", _set("process.cwd", "tmp"), ("process.cwd",)),
    ("uid-type", _set("process.user.uid", "0"), ("process.user.uid",)),
    ("uid-range", _set("process.user.uid", -1), ("process.user.uid",)),
    ("user-missing", _pop("process.user"), ("process.user",)),
    ("terminal-type", _set("process.terminal", "no"), ("process.terminal",)),
    ("rlimit-unknown", _set("process.rlimits.0.type", "RLIMIT_TEST"),
     ("process.rlimits[0].type", "RLIMIT_TEST")),
    ("rlimit-soft-gt-hard", _set("process.rlimits.0.soft", 4096),
     ("process.rlimits[0].soft",)),
    ("rlimit-duplicate", _append("process.rlimits",
                                 {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}),
     ("process.rlimits[1].type", "duplicate")),
    ("cap-unknown", _set("process.capabilities.bounding", ["CAP_NOT_A_CAP"]),
     ("process.capabilities", "CAP_NOT_A_CAP")),
    ("cap-shape", _set("process.capabilities.effective", ["kill"]),
     ("process.capabilities.effective[0]", "kill")),
    ("oom-range", _set("process.oomScoreAdj", 5000), ("process.oomScoreAdj",)),
    ("ioprio-class", _set("process.ioPriority", {"class": "IOPRIO_CLASS_X"}),
     ("process.ioPriority.class",)),
    ("sched-policy", _set("process.scheduler", {"policy": "SCHED_X"}),
     ("process.scheduler.policy",)),
    ("sched-nice", _set("process.scheduler", {"policy": "SCHED_OTHER", "nice": 40}),
     ("process.scheduler.nice",)),
    ("ns-unsupported", _append("linux.namespaces", {"type": "foo"}),
     ("linux.namespaces[5].type", "foo")),
    ("ns-duplicate", _append("linux.namespaces", {"type": "pid"}),
     ("linux.namespaces[5].type", "duplicate")),
    ("ns-path-relative", _set("linux.namespaces.1", {"type": "network", "path": "x"}),
     ("linux.namespaces[1].path",)),
    ("uidmap-without-userns", _set("linux.uidMappings",
                                   [{"containerID": 0, "hostID": 1000, "size": 1}]),
     ("linux.uidMappings",)),
    ("userns-without-maps", _append("linux.namespaces", {"type": "user"}),
     ("linux.uidMappings",)),
    ("timeoffsets-without-timens", _set("linux.timeOffsets", {"boottime": {"secs": 1}}),
     ("linux.timeOffsets",)),
    ("root-missing", _pop("root"), ("root",)),
    ("rootfs-missing", _set("root.path", "no-such-rootfs"), ("root.path", "no-such-rootfs")),
    ("readonly-type", _set("root.readonly", "yes"), ("root.readonly",)),
    ("propagation", _set("linux.rootfsPropagation", "sideways"),
     ("linux.rootfsPropagation",)),
    ("mount-escape", _append("mounts", {"destination": "/../../host", "type": "tmpfs",
                                        "source": "tmpfs"}),
     ("mounts[7].destination", "..")),
    ("mount-dest-type", _append("mounts", {"destination": 5, "type": "tmpfs"}),
     ("mounts[7].destination",)),
    ("masked-relative", _set("linux.maskedPaths", ["proc/kcore"]), ("linux.maskedPaths[0]",)),
    ("readonly-dotdot", _set("linux.readonlyPaths", ["/proc/../etc"]),
     ("linux.readonlyPaths[0]",)),
    ("device-type", _set("linux.devices", [{"path": "/dev/x", "type": "z", "major": 1,
                                            "minor": 1}]), ("linux.devices[0].type",)),
    ("device-path", _set("linux.devices", [{"path": "/dev/../x", "type": "c", "major": 1,
                                            "minor": 1}]), ("linux.devices[0].path",)),
    ("sysctl-unknown", _set("linux.sysctl", {"vm.swappiness": "1"}),
     ('linux.sysctl["vm.swappiness"]',)),
    ("hook-relative", _set("hooks", {"prestart": [{"path": "hook"}]}),
     ("hooks.prestart[0].path",)),
    ("hook-timeout", _set("hooks", {"poststart": [{"path": "/bin/true", "timeout": 0}]}),
     ("hooks.poststart[0].timeout",)),
    ("oci-version", _set("ociVersion", "2.0.0"), ("ociVersion",)),
    ("hostname-long", _set("hostname", "h" * 100), ("hostname",)),
    ("apparmor", _set("process.apparmorProfile", "docker-default"),
     ("process.apparmorProfile",)),
    ("intel-rdt", _set("linux.intelRdt", {"closID": "x"}), ("linux.intelRdt",)),
    ("seccomp-notify", _set("linux.seccomp", {"defaultAction": "SCMP_ACT_NOTIFY"}),
     ("linux.seccomp",)),
    ("rlimit-hard-above", _set("process.rlimits.0.hard", 1 << 40),
     ("process.rlimits[0].hard", "RLIMIT_NOFILE")),
]


@pytest.mark.parametrize(("edit", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config(runtime: Runtime, bundle: Bundle, edit: Edit,
                        needles: tuple[str, ...]) -> None:
    edit(bundle.config)
    bundle.save()
    cid = unique_id()
    err = expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid, needle=needles)
    assert err.startswith("isobox-runtime: error: ") and err.count("\n") == 1, err
    # the same through run, which must not leave anything either
    expect_failure(runtime, cid, "run", "--bundle", bundle.path, cid, needle=needles)


def test_malformed_json(runtime: Runtime, bundle: Bundle) -> None:
    path = os.path.join(bundle.path, "config.json")
    for text, needle in (("{not json", "invalid JSON"), ("[]", "expected an object"),
                         ("", "invalid JSON")):
        with open(path, "w") as f:
            f.write(text)
        cid = unique_id()
        expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                       needle=("config.json", needle))


def test_missing_bundle_and_config(runtime: Runtime, bundle: Bundle, tmp_path: Any) -> None:
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", str(tmp_path / "nope"), cid,
                   needle="config.json")
    os.unlink(os.path.join(bundle.path, "config.json"))
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("config.json", "No such file"))


@pytest.mark.parametrize("cid", ["a/b", "..", ".hidden", "a..b/../c", "x y", "", "é"])
def test_invalid_container_id(runtime: Runtime, bundle: Bundle, cid: str) -> None:
    before = mountinfo()
    res = runtime("create", "--bundle", bundle.path, cid, check=False)
    assert res.code == 1 and "container" in res.err.lower() and "id" in res.err.lower(), res
    assert runtime.ids() == []
    assert not os.path.exists(os.path.join(runtime.root, "a"))
    assert_nothing_left(runtime, "a..b", before, (bundle.path,))


def test_duplicate_id_leaves_the_first_alone(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    res = runtime("create", "--bundle", bundle.path, cid, check=False)
    assert res.code == 1 and "exists" in res.err and cid in res.err
    res = runtime("run", "--bundle", bundle.path, cid, check=False)
    assert res.code == 1 and "exists" in res.err
    st = runtime.state(cid)
    assert st["status"] == "running" and st["pid"] == pid
    runtime("delete", "--force", cid)


def test_operations_in_the_wrong_state(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "60")
    cid = unique_id()
    for args in (["start", cid], ["kill", cid], ["delete", cid], ["pause", cid],
                 ["resume", cid], ["state", cid], ["exec", cid, "true"], ["ps", cid],
                 ["events", "--stats", cid], ["update", "--memory", "1m", cid]):
        res = runtime(*args, check=False)
        assert res.code == 1 and "does not exist" in res.err, (args, res)
    assert runtime("delete", "--force", cid, check=False).code == 0  # as runc
    runtime("create", "--bundle", bundle.path, cid)
    for args, needle in ((["resume", cid], "not paused"), (["pause", cid], "not running"),
                         (["kill", cid, "NOSUCHSIG"], "NOSUCHSIG")):
        res = runtime(*args, check=False)
        assert res.code == 1 and needle in res.err, (args, res)
    runtime("start", cid)
    res = runtime("start", cid, check=False)
    assert res.code == 1 and "running" in res.err
    res = runtime("delete", cid, check=False)
    assert res.code == 1 and "not stopped" in res.err
    runtime("kill", cid, "KILL")
    wait_for(lambda: runtime.state(cid)["status"] == "stopped", what="stop")
    for args, needle in ((["start", cid], "stopped"), (["kill", cid], "not running"),
                         (["pause", cid], "not running"), (["resume", cid], "not paused")):
        res = runtime(*args, check=False)
        assert res.code == 1 and needle in res.err, (args, res)
    runtime("delete", cid)


def test_unknown_command_and_flags(runtime: Runtime) -> None:
    for args, needle in ((["frobnicate"], "frobnicate"), (["create", "--bogus", "x"], "bogus"),
                         (["create"], "container ID"), (["kill", "a", "b", "c"], "kill"),
                         (["list", "--format", "xml"], "--format"),
                         (["create", "--bundle"], "bundle")):
        res = runtime(*args, check=False)
        assert res.code == 1 and needle in res.err, (args, res)
    assert runtime.ids() == []


def test_failure_after_the_fork_leaves_nothing(runtime: Runtime, bundle: Bundle) -> None:
    """A config that validates but fails inside the init, after namespaces, cgroups and
    some mounts were made: a file bind-mounted on a directory."""
    bundle.config["mounts"].append({"destination": "/etc", "type": "bind",
                                    "source": "/etc/hostname", "options": ["bind"]})
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid, needle="mounts[7]")


def test_state_is_json_and_config_errors_are_json_logged(runtime: Runtime, bundle: Bundle,
                                                         tmp_path: Any) -> None:
    bundle.config["process"]["rlimits"][0]["type"] = "RLIMIT_TEST"
    bundle.save()
    log = str(tmp_path / "log.json")
    cid = unique_id()
    res = runtime("create", "--bundle", bundle.path, cid, check=False,
                  global_args=("--log", log, "--log-format", "json"))
    assert res.code == 1
    with open(log) as f:
        entry = json.loads(f.readline())
    assert entry["level"] == "error" and "process.rlimits[0].type" in entry["msg"]
