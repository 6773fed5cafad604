"""`isobox snapshot create/ls/restore/rm` for containers (writable-layer tars) and VMs (qcow2
internal snapshots, `savevm`/`loadvm`; the VM tests boot QEMU under TCG and are marked `vm`)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from engine_helpers import Isobox

from harness import RUN_PREFIX, wait_for

pytestmark = [pytest.mark.engine]

VM = ("--isolation", "vm", "--network", "none")
COUNTER = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done'


def snap_names(isobox: Isobox, ref: str) -> list[str]:
    return isobox("snapshot", "ls", "-q", ref).stdout.split()


def snap_dir(isobox: Isobox, ref: str) -> str:
    cid = isobox.record(ref)["id"]
    return os.path.join(isobox.root, "containers", cid, "snapshots")


# containers --------------------------------------------------------------------------------
def test_container_filesystem_snapshot_restores_the_writable_layer(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}cs1"
    isobox("run", "--name", name, "--network", "none", "busybox", "sh", "-c",
           "echo kept > /kept; rm /etc/passwd; mkdir -p /bin/sub && echo x > /bin/sub/f")
    assert isobox("snapshot", "create", name, "s1").stdout == "s1\n"
    ls = [json.loads(line) for line in
          isobox("snapshot", "ls", "--format", "json", name).stdout.splitlines()]
    assert [(s["name"], s["kind"], s["memory"]) for s in ls] == [("s1", "container", False)]
    assert ls[0]["size"] > 0
    assert "NAME" in isobox("snapshot", "ls", name).stdout.splitlines()[0]
    # change the layer after the snapshot, then go back
    isobox("cp", "/etc/hostname", f"{name}:/later")
    isobox("snapshot", "restore", name, "s1")
    dest = os.path.join(isobox.root, f"{RUN_PREFIX}out")
    assert isobox("cp", f"{name}:/later", dest, check=False).returncode != 0
    isobox("cp", f"{name}:/bin/sub/f", dest)
    with open(dest) as f:
        assert f.read() == "x\n"
    os.unlink(dest)
    cid = isobox.record(name)["id"]
    isobox("rm", name)
    assert not os.path.exists(os.path.join(isobox.root, "containers", cid))  # snapshots too


def test_container_restore_content_whiteouts_and_running_refusal(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}cs2"
    isobox("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
           "sleep 300")
    isobox("exec", name, "sh", "-c", "echo hi > /z; rm /etc/passwd")
    isobox("snapshot", "create", name, "s")
    isobox("exec", name, "sh", "-c", "rm /z; echo new > /y")
    p = isobox("snapshot", "restore", name, "s", check=False)
    assert p.returncode == 1 and "stop it first" in p.stderr
    assert isobox("exec", name, "cat", "/y").stdout == "new\n"  # untouched by the refusal
    isobox("stop", "-t", "1", name)
    isobox("snapshot", "restore", name, "s")
    isobox("start", name)
    out = isobox("exec", name, "sh", "-c", "cat /z; test -e /y && echo y-present; "
                 "test -e /etc/passwd && echo pw-present; true").stdout
    assert out == "hi\n"  # /z back, /y gone, the whiteout of /etc/passwd kept
    isobox("rm", "-f", name)


def test_container_memory_snapshot_needs_criu_and_makes_nothing(isobox: Isobox) -> None:
    from isobox.engine.info import criu

    if criu().usable:
        pytest.skip("this host has a usable CRIU")
    name = f"{RUN_PREFIX}cs3"
    isobox("create", "--name", name, "--network", "none", "busybox", "true")
    p = isobox("snapshot", "create", "--memory", name, "m", check=False)
    assert p.returncode == 125
    assert "CRIU" in p.stderr and "4.1" in p.stderr and "Traceback" not in p.stderr
    assert snap_names(isobox, name) == []
    d = snap_dir(isobox, name)
    assert not os.path.exists(d) or os.listdir(d) == []
    isobox("rm", name)


def test_snapshot_errors(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}cs4"
    isobox("create", "--name", name, "--network", "none", "busybox", "true")
    for bad in ("123", "-x", "a b", "a/b", "x" * 65, ".hidden"):
        p = isobox("snapshot", "create", "--", name, bad, check=False)
        assert p.returncode == 1 and repr(bad) in p.stderr, (bad, p.stderr)
    assert snap_names(isobox, name) == []
    isobox("snapshot", "create", name, "one")
    p = isobox("snapshot", "create", name, "one", check=False)
    assert p.returncode == 1 and "already exists" in p.stderr
    for verb in ("restore", "rm"):
        p = isobox("snapshot", verb, name, "nope", check=False)
        assert p.returncode == 1 and "No such snapshot: nope" in p.stderr
    p = isobox("snapshot", "ls", f"{RUN_PREFIX}missing", check=False)
    assert p.returncode == 1 and "No such container" in p.stderr
    assert isobox("snapshot", "rm", name, "one").stdout == "one\n"
    assert snap_names(isobox, name) == []
    assert sorted(os.listdir(snap_dir(isobox, name))) == ["index.json"]  # the tar went too
    isobox("rm", name)


# VMs -----------------------------------------------------------------------------------------
def count(isobox: Isobox, name: str) -> int:
    return int(isobox("exec", name, "cat", "/tmp/count").stdout)


def qcow2_snapshots(isobox: Isobox, name: str) -> list[str]:
    disk = os.path.join(isobox.root, "containers", isobox.record(name)["id"], "disk.qcow2")
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", disk], check=True,
                         capture_output=True, text=True).stdout
    return [s["name"] for s in json.loads(out).get("snapshots") or []]


@pytest.mark.vm
@pytest.mark.slow
def test_vm_memory_snapshot_resumes_running_and_from_stopped(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}vs1"
    isobox("run", "-d", "--name", name, *VM, "--memory", "256m", "busybox", "sh", "-c",
           COUNTER)
    wait_for(lambda: isobox("exec", name, "cat", "/tmp/count", check=False).returncode == 0,
             timeout=60)
    time.sleep(1)
    isobox("snapshot", "create", "--memory", name, "m1")
    saved = count(isobox, name)
    snap = json.loads(isobox("snapshot", "ls", "--format", "json", name).stdout)
    assert snap["kind"] == "vm" and snap["memory"] is True and snap["size"] > 1_000_000
    time.sleep(3)
    assert count(isobox, name) > saved + 5
    # running: loadvm, the loop continues from the saved value
    isobox("snapshot", "restore", name, "m1")
    back = count(isobox, name)
    assert saved - 1 <= back <= saved + 5, (saved, back)
    # stopped: started again from the saved state, not booted (no fresh i=1)
    isobox("stop", "-t", "2", name)
    assert isobox.record(name)["status"] == "exited"
    isobox("snapshot", "restore", name, "m1")
    assert isobox.record(name)["status"] == "running"
    back = count(isobox, name)
    assert saved - 1 <= back <= saved + 5, (saved, back)
    with open(os.path.join(isobox.root, "containers", isobox.record(name)["id"],
                           "config.json")) as f:
        cfg = json.load(f)
    assert "org.isobox.vm.loadvm" not in cfg["annotations"]  # a later start boots normally
    isobox("snapshot", "rm", name, "m1")  # while running: QMP
    assert qcow2_snapshots(isobox, name) == [] and snap_names(isobox, name) == []
    isobox("stop", "-t", "2", name)
    p = isobox("snapshot", "create", "--memory", name, "m2", check=False)
    assert p.returncode == 1 and "not running" in p.stderr
    isobox("rm", name)


@pytest.mark.vm
@pytest.mark.slow
def test_vm_disk_snapshot_running_and_stopped(isobox: Isobox) -> None:
    name = f"{RUN_PREFIX}vs2"
    isobox("run", "-d", "--name", name, *VM, "busybox", "sh", "-c",
           "sleep 600")
    wait_for(lambda: isobox("exec", name, "true", check=False).returncode == 0, timeout=60)
    isobox("exec", name, "sh", "-c", "echo before > /before; sync")
    isobox("snapshot", "create", name, "d1")  # running: blockdev-snapshot-internal-sync
    isobox("exec", name, "sh", "-c", "echo after > /after; sync")
    p = isobox("snapshot", "restore", name, "d1", check=False)
    assert p.returncode == 1 and "stop it first" in p.stderr
    isobox("stop", "-t", "2", name)
    isobox("snapshot", "create", name, "d2")  # stopped: qemu-img
    assert qcow2_snapshots(isobox, name) == ["d1", "d2"]
    isobox("snapshot", "restore", name, "d1")
    assert isobox.record(name)["status"] == "exited"
    isobox("start", name)
    wait_for(lambda: isobox("exec", name, "true", check=False).returncode == 0, timeout=60)
    out = isobox("exec", name, "sh", "-c", "cat /before; test -e /after && echo after-present;"
                 " true").stdout
    assert out == "before\n"
    isobox("stop", "-t", "2", name)
    isobox("snapshot", "rm", name, "d1", "d2")  # stopped: qemu-img
    assert qcow2_snapshots(isobox, name) == [] and snap_names(isobox, name) == []
    isobox("rm", name)
