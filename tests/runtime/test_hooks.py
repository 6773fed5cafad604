"""OCI hooks through the real binary: every stage, the state JSON on stdin, args, env,
timeout, and the spec's rules for failures (create-time ones fail and undo the create,
poststart and poststop only warn)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from rt_helpers import expect_failure, wait_status

from harness import Bundle, Runtime, unique_id

HOOK = """#!/bin/sh
# usage: hook OUTDIR NAME [exit-code] [sleep]
cat > "$1/$2.json"
env > "$1/$2.env"
echo "$@" > "$1/$2.args"
[ -n "$4" ] && sleep "$4"
exit "${3:-0}"
"""


@pytest.fixture
def hook(tmp_path: Any) -> tuple[str, str]:
    """(path of the host-side hook script, directory it writes to)."""
    out = tmp_path / "hooks"
    out.mkdir()
    path = tmp_path / "hook.sh"
    path.write_text(HOOK)
    path.chmod(0o755)
    return str(path), str(out)


def add_hook(bundle: Bundle, stage: str, hook: tuple[str, str], name: str, *extra: str,
             **kw: Any) -> None:
    path, out = hook
    entry: dict[str, Any] = {"path": path, "args": [path, out, name, *extra], **kw}
    bundle.config.setdefault("hooks", {}).setdefault(stage, []).append(entry)
    bundle.save()


def load(out: str, name: str) -> dict[str, Any]:
    with open(os.path.join(out, f"{name}.json")) as f:
        data: dict[str, Any] = json.load(f)
    return data


def test_all_stages_get_the_state(runtime: Runtime, bundle: Bundle,
                                  hook: tuple[str, str]) -> None:
    _, out = hook
    bundle.config["annotations"] = {"org.example.key": "value"}
    for stage in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        add_hook(bundle, stage, hook, stage)
    # startContainer runs in the container: its path resolves in the container's root.
    bundle.config["mounts"].append({"destination": "/hooks", "type": "bind", "source": out,
                                    "options": ["bind", "rw"]})
    bundle.config["hooks"]["startContainer"] = [{
        "path": "/bin/sh", "args": ["sh", "-c", "cat > /hooks/startContainer.json"]}]
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    for stage in ("prestart", "createRuntime", "createContainer"):
        st = load(out, stage)
        assert st["id"] == cid and st["pid"] == pid and st["status"] == "creating", (stage, st)
        assert st["bundle"] == bundle.path
        assert st["annotations"] == {"org.example.key": "value"}
    assert not os.path.exists(os.path.join(out, "startContainer.json"))
    runtime("start", cid)
    st = load(out, "poststart")
    assert st["status"] == "running" and st["pid"] == pid
    start = load(out, "startContainer")
    assert start["status"] == "created" and start["id"] == cid
    runtime("kill", cid, "KILL")
    wait_status(runtime, cid, "stopped")
    assert not os.path.exists(os.path.join(out, "poststop.json"))
    runtime("delete", cid)
    st = load(out, "poststop")
    assert st["status"] == "stopped" and st["id"] == cid


def test_hook_args_and_env(runtime: Runtime, bundle: Bundle, hook: tuple[str, str]) -> None:
    _, out = hook
    add_hook(bundle, "createRuntime", hook, "cr", "0", env=["HOOKVAR=hello", "PATH=/bin"])
    runtime("run", "--bundle", bundle.path, unique_id())
    with open(os.path.join(out, "cr.env")) as f:
        env = f.read().split()
    assert "HOOKVAR=hello" in env
    with open(os.path.join(out, "cr.args")) as f:
        assert f.read().split() == [out, "cr", "0"]


def test_failing_prestart_fails_create_and_leaves_nothing(runtime: Runtime, bundle: Bundle,
                                                          hook: tuple[str, str]) -> None:
    _, out = hook
    add_hook(bundle, "prestart", hook, "pre", "3")
    add_hook(bundle, "createRuntime", hook, "never")
    add_hook(bundle, "poststop", hook, "poststop")
    bundle.set_args("sleep", "30")
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("prestart", "exit status 3"))
    assert os.path.exists(os.path.join(out, "pre.json"))
    assert not os.path.exists(os.path.join(out, "never.json"))  # later hooks do not run
    assert load(out, "poststop")["status"] == "stopped"  # lifecycle continues at delete


@pytest.mark.parametrize("stage", ["createRuntime", "createContainer"])
def test_failing_create_hooks(runtime: Runtime, bundle: Bundle, hook: tuple[str, str],
                              stage: str) -> None:
    add_hook(bundle, stage, hook, "h", "1")
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid, needle=stage)


def test_failing_start_container_hook(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["hooks"] = {"startContainer": [{"path": "/bin/false"}]}
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    res = runtime("start", cid, check=False)
    assert res.code == 1 and "startContainer" in res.err, res
    assert runtime.state(cid)["status"] == "stopped"
    runtime("delete", cid)


def test_poststart_failure_only_warns(runtime: Runtime, bundle: Bundle,
                                      hook: tuple[str, str]) -> None:
    _, out = hook
    add_hook(bundle, "poststart", hook, "first", "1")
    add_hook(bundle, "poststart", hook, "second")
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    res = runtime("start", cid)
    assert "warning" in res.err and "poststart" in res.err
    assert os.path.exists(os.path.join(out, "second.json"))  # the remaining hooks ran
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "--force", cid)


def test_poststop_failure_only_warns(runtime: Runtime, bundle: Bundle,
                                     hook: tuple[str, str]) -> None:
    add_hook(bundle, "poststop", hook, "ps", "5")
    cid = unique_id()
    runtime("create", "--bundle", bundle.path, cid)
    res = runtime("delete", cid)
    assert res.code == 0 and "poststop" in res.err
    assert cid not in runtime.ids()


def test_hook_timeout(runtime: Runtime, bundle: Bundle, hook: tuple[str, str]) -> None:
    add_hook(bundle, "createRuntime", hook, "slow", "0", "30", timeout=1)
    cid = unique_id()
    t0 = time.monotonic()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("createRuntime", "timed out"))
    assert time.monotonic() - t0 < 10


def test_missing_hook_binary(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["hooks"] = {"prestart": [{"path": "/nonexistent/hook"}]}
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("prestart", "/nonexistent/hook"))
