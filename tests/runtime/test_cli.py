"""The command line through the real binary: kill's signal forms, list and ps formats,
state across CLI calls (creating, created, running, stopped), features, spec, version."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import busybox_bundle
import pytest
from rt_helpers import read, wait_for, wait_status

from harness import Bundle, Runtime, unique_id
from isobox.oci.config import validate_config

TRAP = ("for s in USR1 USR2 HUP TERM INT; do trap \"echo $s >> /log/sigs\" $s; done; "
        "echo ready > /log/ready; while true; do sleep 0.02; done")


@pytest.fixture
def trapper(runtime: Runtime, bundle: Bundle, tmp_path: Any) -> tuple[str, str]:
    log = tmp_path / "log"
    log.mkdir()
    bundle.config["mounts"].append({"destination": "/log", "type": "bind", "source": str(log),
                                    "options": ["bind", "rw"]})
    bundle.set_args("sh", "-c", TRAP)
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    wait_for(lambda: (log / "ready").exists(), what="traps set")
    return cid, str(log / "sigs")


def sigs(path: str) -> list[str]:
    return read(path).split() if os.path.exists(path) else []


def test_kill_signal_forms(runtime: Runtime, trapper: tuple[str, str]) -> None:
    cid, log = trapper
    for sig, name in (("USR1", "USR1"), ("SIGUSR2", "USR2"), ("10", "USR1"), ("sighup", "HUP"),
                      ("2", "INT")):
        n = len(sigs(log))
        runtime("kill", cid, sig)
        wait_for(lambda n=n: len(sigs(log)) > n, what=f"signal {sig}")
        assert sigs(log)[-1] == name
    n = len(sigs(log))
    runtime("kill", cid)  # default: TERM
    wait_for(lambda: len(sigs(log)) > n, what="TERM")
    assert sigs(log)[-1] == "TERM"
    for bad in ("NOPE", "0", "65", "SIG"):
        res = runtime("kill", cid, bad, check=False)
        assert res.code == 1 and bad in res.err, res
    assert runtime.state(cid)["status"] == "running"
    runtime("kill", cid, "SIGKILL")
    wait_status(runtime, cid, "stopped")
    runtime("delete", cid)


def test_kill_all_reaches_every_process(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sh", "-c", "sleep 60 & sleep 60 & wait")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    wait_for(lambda: len(json.loads(runtime("ps", "--format", "json", cid).out)) == 3,
             what="children")
    pids = json.loads(runtime("ps", "--format", "json", cid).out)
    runtime("kill", "--all", cid, "KILL")
    wait_status(runtime, cid, "stopped")
    wait_for(lambda: all(not os.path.exists(f"/proc/{p}/cmdline") or
                         read(f"/proc/{p}/cmdline") == "" for p in pids), what="all dead")
    runtime("delete", cid)


def test_states_across_cli_calls(runtime: Runtime, bundle: Bundle, tmp_path: Any) -> None:
    hook = tmp_path / "slow.sh"
    hook.write_text("#!/bin/sh\nsleep 1.5\n")
    hook.chmod(0o755)
    bundle.config["hooks"] = {"createRuntime": [{"path": str(hook)}]}
    bundle.set_args("sh", "-c", "sleep 0.5")
    cid = unique_id()
    creating = subprocess.Popen([*runtime.cmd, "--root", runtime.root, "create", "--bundle",
                                 bundle.path, cid], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        st = wait_for(lambda: runtime("state", cid, check=False).code == 0 and
                      runtime.state(cid), what="state while creating")
        assert st["status"] == "creating" and st["bundle"] == bundle.path
        assert [c["status"] for c in json.loads(runtime("list", "--format", "json").out)] == [
            "creating"]
        res = runtime("start", cid, check=False)
        assert res.code == 1 and "being created" in res.err
        res = runtime("delete", cid, check=False)
        assert res.code == 1 and "being created" in res.err
    finally:
        creating.wait(30)
    assert creating.returncode == 0, creating.stderr.read() if creating.stderr else ""
    st = runtime.state(cid)
    assert st["status"] == "created" and st["pid"] > 0
    assert os.path.exists(f"/proc/{st['pid']}")
    runtime("start", cid)
    assert runtime.state(cid)["status"] == "running"
    st = wait_status(runtime, cid, "stopped")  # the process exited by itself
    assert st["status"] == "stopped" and st["pid"] == 0
    runtime("delete", cid)
    assert runtime.ids() == []


def test_state_fields(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["annotations"] = {"a": "b"}
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    st = runtime.state(cid)
    assert set(st) >= {"ociVersion", "id", "status", "pid", "bundle", "annotations"}
    assert st["annotations"] == {"a": "b"} and st["ociVersion"] == bundle.config["ociVersion"]
    assert st["rootfs"] == bundle.rootfs and st["created"].endswith("Z")
    runtime("delete", cid)


def test_list_formats(runtime: Runtime, bundle: Bundle) -> None:
    assert runtime("list", "-q").out == ""
    assert json.loads(runtime("list", "--format", "json").out) == []
    bundle.set_args("sleep", "30")
    a, b = unique_id(), unique_id()
    runtime("create", "--bundle", bundle.path, a)
    runtime("run", "-d", "--bundle", bundle.path, b)
    assert runtime("list", "-q").out.split() == sorted([a, b])
    items = {i["id"]: i for i in json.loads(runtime("list", "-f", "json").out)}
    assert items[a]["status"] == "created" and items[b]["status"] == "running"
    assert items[b]["pid"] == runtime.state(b)["pid"] and items[b]["bundle"] == bundle.path
    table = runtime("list").out.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = {ln.split()[0]: ln.split() for ln in table[1:]}
    assert rows[a][2] == "created" and rows[b][2] == "running"
    runtime("delete", "-f", a)
    runtime("delete", "-f", b)


def test_ps_formats(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sh", "-c", "sleep 30 & wait")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    wait_for(lambda: len(json.loads(runtime("ps", "--format", "json", cid).out)) == 2,
             what="child")
    pids = json.loads(runtime("ps", "--format", "json", cid).out)
    assert runtime.state(cid)["pid"] in pids
    table = runtime("ps", cid).out.splitlines()
    assert "PID" in table[0].split() and len(table) == 3
    res = runtime("ps", "--format", "yaml", cid, check=False)
    assert res.code == 1 and "--format" in res.err
    runtime("delete", "--force", cid)


def test_run_foreground_exit_codes_and_pid_file(runtime: Runtime, bundle: Bundle,
                                                tmp_path: Any) -> None:
    bundle.set_args("sh", "-c", "exit 42")
    pid_file = str(tmp_path / "pid")
    res = runtime("run", "--pid-file", pid_file, "--bundle", bundle.path, unique_id(),
                  check=False)
    assert res.code == 42 and int(read(pid_file)) > 0
    assert runtime.ids() == []


def test_run_keep_leaves_a_stopped_container(runtime: Runtime, bundle: Bundle) -> None:
    cid = unique_id()
    runtime("run", "--keep", "--bundle", bundle.path, cid)
    assert runtime.state(cid)["status"] == "stopped"
    runtime("delete", cid)


def test_features_json(runtime: Runtime) -> None:
    f = json.loads(runtime("features").out)
    assert f["ociVersionMin"] == "1.0.0" and f["ociVersionMax"].startswith("1.2")
    assert set(f["hooks"]) == {"prestart", "createRuntime", "createContainer",
                               "startContainer", "poststart", "poststop"}
    assert {"rbind", "ro", "nosuid", "rshared", "tmpcopyup"} <= set(f["mountOptions"])
    linux = f["linux"]
    assert set(linux["namespaces"]) == {"pid", "network", "mount", "ipc", "uts", "user",
                                        "cgroup", "time"}
    assert "CAP_SYS_ADMIN" in linux["capabilities"]
    assert linux["cgroup"]["v1"] is True and linux["cgroup"]["v2"] is True
    assert linux["seccomp"]["enabled"] is True
    assert "SCMP_ACT_ERRNO" in linux["seccomp"]["actions"]
    assert "SCMP_ARCH_X86_64" in linux["seccomp"]["archs"]
    assert linux["apparmor"] == {"enabled": False}
    assert isinstance(f["annotations"], dict)


def test_spec_writes_a_config_that_validates_and_runs(runtime: Runtime, busybox_rootfs: str,
                                                      tmp_path: Any) -> None:
    d = str(tmp_path / "spec")
    os.makedirs(d)
    runtime("spec", "--bundle", d)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    validate_config(cfg)
    assert cfg["process"]["args"] == ["sh"] and cfg["root"]["path"] == "rootfs"
    res = runtime("spec", "--bundle", d, check=False)
    assert res.code == 1 and "exists" in res.err
    rootless = str(tmp_path / "rootless")
    os.makedirs(rootless)
    runtime("spec", "--rootless", "-b", rootless)
    with open(os.path.join(rootless, "config.json")) as f:
        rl = json.load(f)
    validate_config(rl)
    assert any(n["type"] == "user" for n in rl["linux"]["namespaces"])
    # the default spec wants a terminal; make it run with the given args
    import shutil

    shutil.copytree(busybox_rootfs, os.path.join(d, "rootfs"), symlinks=True)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sh", "-c", "hostname; id -u"]
    busybox_bundle.write_config(d, cfg)
    assert runtime("run", "--bundle", d, unique_id()).out.split() == ["runc", "0"]


def test_bundle_defaults_to_the_current_directory(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("echo", "from-cwd")
    proc = subprocess.run([*runtime.cmd, "--root", runtime.root, "run", unique_id()],
                          cwd=bundle.path, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "from-cwd\n"


def test_version_and_help(runtime: Runtime) -> None:
    out = runtime("--version").out
    assert out.startswith("isobox-runtime version") and "spec: 1.2" in out
    out = runtime("--help").out
    for cmd in ("create", "start", "state", "kill", "delete", "run", "exec", "list", "ps",
                "pause", "resume", "update", "events", "features", "spec"):
        assert f"  {cmd} " in out, cmd
    assert "exec" in runtime("exec", "--help").out


def test_stopped_after_the_process_died_without_the_runtime(runtime: Runtime,
                                                            bundle: Bundle) -> None:
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    os.kill(pid, 9)  # behind the runtime's back
    st = wait_status(runtime, cid, "stopped")
    assert st["status"] == "stopped" and st["pid"] == 0
    res = runtime("kill", cid, "TERM", check=False)
    assert res.code == 1 and "not running" in res.err
    runtime("delete", cid)


def test_kill_a_created_container(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    runtime("kill", cid, "9")
    assert wait_status(runtime, cid, "stopped")["status"] == "stopped"
    res = runtime("start", cid, check=False)
    assert res.code == 1 and "stopped" in res.err
    runtime("delete", cid)
