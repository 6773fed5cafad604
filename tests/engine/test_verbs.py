"""The remaining container verbs against real containers: inspect, stats, top, port, diff,
cp (incl. symlink escapes, catalogue cases 48/49/50), rename, update, events, system info and
system prune."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import time

import pytest
from engine_helpers import Isobox, read_until
from verbs_helpers import cgroup_file, dead_pid, inspect, run_detached

from harness import RUN_PREFIX, mounts_under, unique_id

pytestmark = pytest.mark.engine

RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


def test_inspect_container_shape_and_format(isobox: Isobox) -> None:
    cid, name = run_detached(isobox, "--memory", "32m", "-e", "FOO=bar", "-l", "k=v")
    data = inspect(isobox, name)
    assert data["Id"] == cid and data["Name"] == "/" + name
    assert RFC3339NANO.match(data["Created"]) and RFC3339NANO.match(
        data["State"]["StartedAt"])
    state = data["State"]
    assert state["Status"] == "running" and state["Running"] and not state["Paused"]
    assert state["Pid"] > 0 and os.path.exists(f"/proc/{state['Pid']}")
    assert data["Path"] == "sleep" and data["Args"] == ["30"]
    assert data["Config"]["Cmd"] == ["sleep", "30"] and "FOO=bar" in data["Config"]["Env"]
    assert data["Config"]["Labels"]["k"] == "v" and data["Config"]["Image"] == "busybox"
    host = data["HostConfig"]
    assert host["Memory"] == 32 << 20 and host["NetworkMode"] == "none"
    assert host["LogConfig"]["Type"] == "k8s-file"
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert data["Driver"] == "overlay2" and data["Image"].startswith("sha256:")
    assert os.path.isfile(data["HostsPath"])
    out = isobox("inspect", "-f", "{{.State.Pid}} {{json .Config.Cmd}} {{.Name}}", name)
    assert out.stdout.strip() == f'{state["Pid"]} ["sleep","30"] /{name}'  # Go's compact JSON
    sized = json.loads(isobox("container", "inspect", "-s", cid[:12]).stdout)[0]
    assert sized["SizeRootFs"] >= sized["SizeRw"] >= 0
    # no container by that name: docker falls back to the image
    image = json.loads(isobox("inspect", "busybox").stdout)[0]
    assert image["RepoTags"] == ["busybox:latest"]
    missing = isobox("container", "inspect", "busybox", check=False)
    assert missing.returncode == 1 and "No such container: busybox" in missing.stderr
    isobox("stop", "-t", "0", name)
    stopped = inspect(isobox, name)["State"]
    assert stopped["Status"] == "exited" and not stopped["Running"] and stopped["Pid"] == 0
    assert RFC3339NANO.match(stopped["FinishedAt"])


def test_listings_take_docker_format_templates(isobox: Isobox) -> None:
    """``ps``, ``images``, ``volume ls``, ``network ls`` and the two ``inspect``s take the
    templates written for Docker, with Docker's field names and column titles."""
    cid, name = run_detached(isobox, "-l", "tier=front")
    line = isobox("ps", "--filter", f"name={name}", "--format",
                  '{{.ID}} {{.Names}} {{.State}} {{.Label "tier"}} {{.Labels}}').stdout
    assert line == f"{cid[:12]} {name} running front tier=front\n"
    table = isobox("ps", "--filter", f"name={name}", "--format",
                   "table {{.Names}}\t{{.Image}}\t{{.RunningFor}}").stdout.splitlines()
    assert table[0].split() == ["NAMES", "IMAGE", "CREATED"] and len(table) == 2
    assert table[1].split()[:2] == [name, "busybox"] and table[1].endswith(" ago")
    row = json.loads(isobox("ps", "--filter", f"name={name}", "--format", "json").stdout)
    assert (row["ID"], row["Names"], row["State"]) == (cid[:12], name, "running")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC", row["CreatedAt"])
    image = json.loads(isobox("images", "--format", "json").stdout.splitlines()[0])
    assert {"Repository", "Tag", "ID", "Size", "CreatedSince"} <= image.keys()
    tags = isobox("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "busybox:latest" in tags
    vol = unique_id("fv")
    isobox("volume", "create", "--label", "k=v", vol)
    try:
        out = isobox("volume", "ls", "--filter", f"name={vol}", "--format",
                     '{{.Name}} {{.Driver}} {{.Label "k"}}').stdout
        assert out == f"{vol} local v\n"
        mountpoint = isobox("volume", "inspect", "-f", "{{.Mountpoint}}", vol).stdout.strip()
        assert os.path.isdir(mountpoint) and vol in mountpoint
    finally:
        isobox("volume", "rm", vol)
    nets = isobox("network", "ls", "--format", "table {{.Name}}\t{{.Driver}}").stdout
    assert nets.splitlines()[0].split() == ["NAME", "DRIVER"]
    assert ["none", "null"] in [ln.split() for ln in nets.splitlines()]
    assert isobox("network", "inspect", "-f", "{{.Name}}/{{.Driver}}", "none").stdout == \
        "none/null\n"
    bad = isobox("ps", "--format", "{{.Nope}}", check=False)
    assert bad.returncode != 0 and "can't evaluate field Nope" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_ps_filters_since_before_and_checks_them_first(isobox: Isobox) -> None:
    first = isobox("create", "--network", "none", "busybox").stdout.strip()
    middle = isobox("create", "--network", "none", "busybox").stdout.strip()
    last = isobox("create", "--network", "none", "busybox").stdout.strip()

    def ids(*args: str) -> list[str]:
        return isobox("ps", "-a", "-q", "--no-trunc", *args).stdout.split()

    assert ids("--filter", f"since={middle[:12]}") == [last]
    assert ids("--filter", f"before={middle}") == [first]
    assert ids("--filter", f"since={first}", "--filter", f"before={last}") == [middle]
    # as Docker: a status (or exited) filter looks at stopped containers without -a; name
    # and id are regular expressions; ancestor names the image any way; -n 0 is no limit
    assert ids("--filter", "status=created", "--filter", f"id=^{middle[:6]}") == [middle]
    assert isobox("ps", "-q", "--no-trunc", "--filter", "status=created").stdout.split() == \
        [last, middle, first]
    name = isobox.record(middle)["name"]
    assert ids("--filter", f"name=^{name}$") == [middle]
    assert ids("--filter", f"name=^/{name}$") == [middle]
    image_id = isobox("image", "inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    for ancestor in ("busybox:latest", image_id, image_id.removeprefix("sha256:")[:12]):
        assert set(ids("--filter", f"ancestor={ancestor}")) >= {first, middle, last}
    assert isobox("ps", "-n", "0", "-q").stdout == isobox("ps", "-q").stdout
    # nothing runs, so nothing would be listed: the filters are still checked
    for args, message in ((("--filter", "bogus=1"), "invalid filter 'bogus'"),
                          (("--filter", "status=bogus"), "status: bogus"),
                          (("--filter", "exited=abc"), "exited=abc"),
                          (("--filter", "since=nosuch-ctr"), "nosuch-ctr"),
                          (("--format", "{{"), "unclosed action")):
        p = isobox("ps", *args, check=False)
        assert p.returncode != 0 and message in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr
    isobox("rm", first, middle, last)


def test_stats_and_top(isobox: Isobox) -> None:
    _, name = run_detached(isobox, "--memory", "32m",
                           cmd=("sh", "-c", "yes > /dev/null & exec sleep 30"))
    line = json.loads(isobox("stats", "--no-stream", "--format", "json", name).stdout)
    assert line["Name"] == name
    assert float(line["CPUPerc"].rstrip("%")) > 1.0, line  # `yes` keeps a CPU busy
    usage, limit = line["MemUsage"].split(" / ")
    assert limit == "32MiB" and not usage.startswith("0B"), line
    assert int(line["PIDs"]) == 2
    table = isobox("stats", "--no-stream", name).stdout.splitlines()
    assert table[0].split()[:3] == ["CONTAINER", "ID", "NAME"] and name in table[1]
    top = isobox("top", name).stdout.splitlines()
    assert "PID" in top[0].split() and "CMD" in top[0].split()
    cmds = [ln.split(None, 7)[-1] for ln in top[1:]]
    assert len(cmds) == 2 and "sleep 30" in cmds, top  # the sleep and the forked shell
    pids = inspect(isobox, name)["State"]["Pid"]
    top_o = isobox("top", name, "-o", "pid,comm").stdout.split()
    assert top_o[:2] == ["PID", "COMMAND"] and str(pids) in top_o and "sleep" in top_o
    isobox("stop", "-t", "0", name)
    err = isobox("top", name, check=False)
    assert err.returncode == 1 and "is not running" in err.stderr


def test_port_lists_published_ports(isobox: Isobox) -> None:
    _, name = run_detached(isobox, "-p", "127.0.0.1::80", "-p", "9999/udp",
                           network="bridge")
    lines = isobox("port", name).stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"80/tcp -> 127\.0\.0\.1:\d+", lines[0]), lines
    assert re.fullmatch(r"9999/udp -> 0\.0\.0\.0:\d+", lines[1]), lines
    host_port = lines[0].rsplit(":", 1)[1]
    assert isobox("port", name, "80").stdout.strip() == f"127.0.0.1:{host_port}"
    assert isobox("port", name, "80/tcp").stdout.strip() == f"127.0.0.1:{host_port}"
    ports = inspect(isobox, name)["NetworkSettings"]["Ports"]
    assert ports["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": host_port}]
    err = isobox("port", name, "81", check=False)
    assert err.returncode == 1 and "No public port '81/tcp' published" in err.stderr


def test_diff_after_exec(isobox: Isobox) -> None:
    _, name = run_detached(isobox)
    assert isobox("diff", name).stdout == ""  # the runtime's mount points are not changes
    isobox("exec", name, "sh", "-c", "touch /tmp/new && rm /bin/cat && mkdir -p /root/d && "
           "rm /etc/passwd && rm -rf /usr/sbin && mkdir /usr/sbin && touch /usr/sbin/only")
    lines = isobox("diff", name).stdout.splitlines()
    for want in ("A /tmp/new", "C /tmp", "D /bin/cat", "C /bin", "A /root/d", "C /etc",
                 "D /etc/passwd", "C /usr/sbin", "A /usr/sbin/only"):
        assert want in lines, (want, lines)
    layers = os.path.join(isobox.root, "layers", "sha256")
    image = json.loads(isobox("image", "inspect", "busybox").stdout)[0]
    mine = [d.removeprefix("sha256:") for d in image["RootFS"]["Layers"]]  # not other images'
    hidden = {f"D /usr/sbin/{n}" for layer in mine
              if os.path.isdir(os.path.join(layers, layer, "usr/sbin"))
              for n in os.listdir(os.path.join(layers, layer, "usr/sbin"))}
    assert hidden and hidden <= set(lines)  # what the opaque directory hides
    assert not [ln for ln in lines if ln.endswith(("/etc/hosts", "/etc/hostname",
                                                   "/etc/resolv.conf"))]
    assert lines == sorted(lines, key=lambda ln: ln[2:])


def _tar(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, link in entries:
            ti = tarfile.TarInfo(name)
            if link:
                ti.type, ti.linkname = tarfile.SYMTYPE, link
                tf.addfile(ti)
            else:
                ti.size = len(data or b"")
                tf.addfile(ti, io.BytesIO(data or b""))
    return buf.getvalue()


def test_cp_in_and_out(isobox: Isobox, tmp_path: object) -> None:
    work = str(tmp_path)
    _, name = run_detached(isobox)
    isobox("exec", name, "sh", "-c", "mkdir -p /d/sub && echo inside > /d/sub/f && "
           "ln -s sub/f /d/link")
    isobox("cp", f"{name}:/d", os.path.join(work, "out"))
    with open(os.path.join(work, "out/sub/f")) as f:
        assert f.read() == "inside\n"
    assert os.readlink(os.path.join(work, "out/link")) == "sub/f"
    isobox("cp", "-L", f"{name}:/d/link", os.path.join(work, "followed"))
    assert not os.path.islink(os.path.join(work, "followed"))
    with open(os.path.join(work, "followed")) as f:
        assert f.read() == "inside\n"
    # host -> container, into an existing directory and as a new name
    with open(os.path.join(work, "host.txt"), "w") as f:
        f.write("from host\n")
    isobox("cp", os.path.join(work, "host.txt"), f"{name}:/tmp/")
    isobox("cp", os.path.join(work, "host.txt"), f"{name}:/tmp/renamed")
    assert isobox("exec", name, "cat", "/tmp/host.txt", "/tmp/renamed").stdout == \
        "from host\n" * 2
    # tar streams both ways
    stream = isobox.popen("cp", f"{name}:/d", "-", stdout=-1)
    data, _ = stream.communicate(timeout=30)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert sorted(tf.getnames()) == ["d", "d/link", "d/sub", "d/sub/f"]
    isobox("cp", "-", f"{name}:/tmp", input_=_tar([("fromtar", b"x", "")]))
    assert isobox("exec", name, "cat", "/tmp/fromtar").stdout == "x"
    # a stopped container: mounted for the copy, unmounted afterwards
    cid = inspect(isobox, name)["Id"]
    isobox("stop", "-t", "0", name)
    isobox("cp", os.path.join(work, "host.txt"), f"{name}:/tmp/after-stop")
    isobox("cp", f"{name}:/tmp/after-stop", os.path.join(work, "back"))
    with open(os.path.join(work, "back")) as f:
        assert f.read() == "from host\n"
    assert not [m for m in mounts_under(isobox.root) if cid in m]
    err = isobox("cp", f"{name}:/nonexistent", work, check=False)
    assert err.returncode == 1 and "Could not find the file /nonexistent" in err.stderr


def test_cp_sees_the_running_containers_mounts(isobox: Isobox, tmp_path: object) -> None:
    """Volumes, bind mounts, tmpfs and the /etc files: where the container has them (was:
    the overlay underneath: files written there were hidden from the container)."""
    work = str(tmp_path)
    bind = os.path.join(work, "bind")
    os.mkdir(bind)
    vol = unique_id("cpvol")
    _, name = run_detached(isobox, "-v", f"{vol}:/data", "-v", f"{bind}:/bound",
                           "--tmpfs", "/scratch", "--hostname", "cp-host")
    try:
        isobox("exec", name, "sh", "-c", "echo in-volume > /data/f")
        out = isobox.popen("cp", f"{name}:/data/f", "-", stdout=-1)
        data, _ = out.communicate(timeout=30)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            member = tf.extractfile("f")
            assert member is not None and member.read() == b"in-volume\n"
        with open(os.path.join(work, "host.txt"), "w") as f:
            f.write("from host\n")
        for dest in ("/data/", "/bound/", "/scratch/"):
            isobox("cp", os.path.join(work, "host.txt"), f"{name}:{dest}")
            assert isobox("exec", name, "cat", f"{dest}host.txt").stdout == "from host\n"
        assert os.listdir(bind) == ["host.txt"]
        isobox("cp", f"{name}:/etc/hostname", os.path.join(work, "hostname"))
        with open(os.path.join(work, "hostname")) as f:
            assert f.read() == "cp-host\n"
        # the whole root: the volume's file, and /proc, /sys, /dev as Docker lists them: empty
        whole = isobox.popen("cp", f"{name}:/", "-", stdout=-1)
        data, _ = whole.communicate(timeout=60)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            names = set(tf.getnames())
        assert {"data/f", "data/host.txt", "proc", "sys", "dev"} <= names
        assert not [n for n in names if n.startswith(("proc/", "sys/", "dev/"))]
    finally:
        isobox("rm", "-f", name)
        isobox("volume", "rm", vol)


def test_cp_never_leaves_the_container_root(isobox: Isobox, tmp_path: object) -> None:
    """Catalogue cases 48-50: symlinks and .. resolve inside the container's root."""
    work = str(tmp_path)
    canary_dir = os.path.join("/tmp", f"{RUN_PREFIX}-canary-{unique_id('c')}")
    os.makedirs(canary_dir)
    canary = os.path.join(canary_dir, "secret")
    with open(canary, "w") as f:
        f.write("HOST SECRET\n")
    try:
        _, name = run_detached(isobox)
        isobox("exec", name, "sh", "-c", f"ln -s {canary} /evil && ln -s / /rootlink && "
               f"mkdir -p /d {canary_dir} && ln -s ../../../../../../../{canary_dir} /d/up")
        # out: the symlink itself; following it stays in the container (no such file there)
        isobox("cp", f"{name}:/evil", os.path.join(work, "evil"))
        assert os.readlink(os.path.join(work, "evil")) == canary
        for path in ("/evil", f"/rootlink{canary}", "/d/up/secret",
                     f"/../../../..{canary}", f"/proc/1/root{canary}"):
            r = isobox("cp", "-L", f"{name}:{path}", os.path.join(work, "leak"), check=False)
            assert r.returncode != 0, (path, r)
            assert not os.path.exists(os.path.join(work, "leak"))
        stream = isobox.popen("cp", "-L", f"{name}:/d/up/secret", "-", stdout=-1, stderr=-1)
        data, _ = stream.communicate(timeout=30)
        assert b"HOST SECRET" not in data
        # in: the destination's symlinks resolve inside the container
        with open(os.path.join(work, "payload"), "w") as f:
            f.write("payload\n")
        isobox("cp", os.path.join(work, "payload"), f"{name}:/rootlink{canary_dir}/planted")
        isobox("cp", os.path.join(work, "payload"), f"{name}:/d/up/planted2")
        assert sorted(os.listdir(canary_dir)) == ["secret"]
        assert isobox("exec", name, "cat", f"{canary_dir}/planted").stdout == "payload\n"
        # a hostile tar stream: .. entries and a symlink-then-write are refused or contained
        bad = _tar([("link", None, canary_dir), ("link/owned", b"pwn", "")])
        isobox("cp", "-", f"{name}:/tmp", input_=bad, check=False)
        dotdot = _tar([(f"../../../../../..{canary_dir}/dotdot", b"pwn", "")])
        r = isobox("cp", "-", f"{name}:/tmp", input_=dotdot, check=False)
        assert r.returncode != 0
        assert sorted(os.listdir(canary_dir)) == ["secret"]
        with open(canary) as f:
            assert f.read() == "HOST SECRET\n"
        assert isobox("exec", name, "true").returncode == 0  # not left broken
    finally:
        for n in os.listdir(canary_dir):
            os.unlink(os.path.join(canary_dir, n))
        os.rmdir(canary_dir)


def test_rename_and_conflicts(isobox: Isobox) -> None:
    cid, a = run_detached(isobox)
    _, b = run_detached(isobox)
    new = unique_id("renamed")
    isobox("rename", a, new)
    assert inspect(isobox, cid)["Name"] == "/" + new
    same = isobox("rename", new, new, check=False)
    assert same.returncode == 1 and "same name as its current name" in same.stderr
    taken = isobox("rename", new, b, check=False)
    assert taken.returncode == 1
    assert f'The container name "/{b}" is already in use' in taken.stderr
    bad = isobox("rename", new, "bad name!", check=False)
    assert bad.returncode == 1 and "Invalid container name" in bad.stderr
    missing = isobox("rename", unique_id("none"), "x1", check=False)
    assert missing.returncode == 1 and "No such container" in missing.stderr
    assert inspect(isobox, cid)["Name"] == "/" + new


def test_update_resources_live_and_persisted(isobox: Isobox) -> None:
    cid, name = run_detached(isobox, "--memory", "32m")
    isobox("update", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "40",
           "--restart", "on-failure:2", name)
    assert cgroup_file(cid, isobox.root, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert cgroup_file(cid, isobox.root, "pids", "pids.max") == "40"
    host = inspect(isobox, name)["HostConfig"]
    assert host["Memory"] == 64 << 20 and host["MemorySwap"] == 128 << 20
    assert host["PidsLimit"] == 40
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    isobox("stop", "-t", "0", name)
    isobox("update", "--memory", "48m", name)  # stopped: saved for the next start
    isobox("start", name)
    assert cgroup_file(cid, isobox.root, "memory", "memory.limit_in_bytes") == str(48 << 20)
    assert cgroup_file(cid, isobox.root, "pids", "pids.max") == "40"
    low = isobox("update", "--memory", "1m", name, check=False)
    assert low.returncode == 1 and "Minimum memory limit allowed is 6MB" in low.stderr
    over = isobox("update", "--memory", "256m", name, check=False)
    assert over.returncode == 1 and "update the memoryswap at the same time" in over.stderr
    assert cgroup_file(cid, isobox.root, "memory", "memory.limit_in_bytes") == str(48 << 20)


def test_events_show_the_lifecycle(isobox: Isobox) -> None:
    since = time.time() - 0.01
    cid, name = run_detached(isobox, cmd=("sh", "-c", "exit 3"))
    isobox("wait", name)
    other = run_detached(isobox, cmd=("true",))[1]
    until = time.time() + 0.5
    out = isobox("events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--filter",
                 "type=container", "--filter", f"container={name}", "--format", "json",
                 timeout=20).stdout
    msgs = [json.loads(ln) for ln in out.splitlines()]
    assert [m["Action"] for m in msgs] == ["create", "start", "die"], msgs
    assert all(m["Actor"]["ID"] == cid and m["Actor"]["Attributes"]["name"] == name
               for m in msgs)
    assert msgs[2]["Actor"]["Attributes"]["exitCode"] == "3"
    only_start = isobox("events", "--since", f"{since:.3f}", "--until", f"{until:.3f}",
                        "--filter", "event=start", timeout=20).stdout.splitlines()
    assert any(name in ln for ln in only_start) and any(other in ln for ln in only_start)
    assert all(" container start " in ln for ln in only_start)
    # following: a new event arrives while the command runs
    follow = isobox.popen("events", "--filter", f"container={name}", stdout=-1)
    try:
        time.sleep(0.5)
        isobox("rm", name)
        deadline = time.time() + 10
        assert follow.stdout is not None
        line = follow.stdout.readline().decode()
        assert time.time() < deadline and " container destroy " in line, line
    finally:
        follow.kill()
        follow.wait()


def test_system_info(isobox: Isobox) -> None:
    from isobox.cgroups import detect_layout

    run_detached(isobox)
    info = json.loads(isobox("system", "info", "--format", "json").stdout)
    assert info["ContainersRunning"] >= 1 and info["Images"] >= 1
    assert info["Driver"] == "overlay2" and info["NCPU"] == os.cpu_count()
    assert info["MemTotal"] > 0 and info["DockerRootDir"] == isobox.root
    assert "isobox-runtime" in info["Runtimes"]
    ib = info["Isobox"]
    assert ib["Cgroups"]["layout"] == detect_layout()
    assert "memory" in ib["Cgroups"]["controllers"] and "pids" in ib["Cgroups"]["controllers"]
    assert ib["Conmon"]["usable"] and re.match(r"\d+\.\d+", ib["Conmon"]["version"])
    with open("/proc/cpuinfo") as f:
        virt = bool({"vmx", "svm"} & set(f.read().split()))
    assert ib["KVM"]["usable"] == (virt and os.access("/dev/kvm", os.R_OK | os.W_OK))
    if not ib["KVM"]["usable"]:
        assert ib["KVM"]["reason"]
    criu = ib["CRIU"]
    if criu["version"]:
        major_minor = tuple(int(x) for x in criu["version"].split(".")[:2])
        assert criu["usable"] == (major_minor >= (4, 1))
    if not criu["usable"]:
        assert criu["reason"]
    text = isobox("info").stdout
    assert "Cgroup Version:" in text and "KVM:" in text and "CRIU:" in text


def test_system_prune_removes_stopped_and_debris(isobox: Isobox) -> None:
    from isobox.engine.state import ContainerDB, ContainerRow

    exited, exited_name = run_detached(isobox, cmd=("true",))
    isobox("wait", exited_name)
    running, _ = run_detached(isobox)
    debris = "d" * 8 + os.urandom(28).hex()
    db = ContainerDB(os.path.join(isobox.root, "containers.db"))
    try:
        db.insert(ContainerRow(id=debris, name=unique_id("debris"), image_id="sha256:0",
                               image_ref="busybox", created=time.time(), options={},
                               status="creating", creator_pid=dead_pid()))
    finally:
        db.close()
    os.makedirs(os.path.join(isobox.root, "containers", debris))
    assert "Dead" in isobox("ps", "-a", "--filter", f"id={debris}").stdout
    out = isobox("system", "prune", "-f").stdout
    assert out.startswith("Deleted Containers:\n")
    deleted = out.split("\n\n")[0].splitlines()[1:]
    assert exited in deleted and debris in deleted and running not in deleted
    assert "Total reclaimed space:" in out
    assert isobox.ids() == [running]
    assert not os.path.exists(os.path.join(isobox.root, "containers", debris))
    assert json.loads(isobox("inspect", "busybox").stdout)[0]["Id"]  # in use: kept


def test_attach_streams_output_and_exit_code(isobox: Isobox) -> None:
    _, name = run_detached(isobox, cmd=("sh", "-c", "sleep 1; echo hi; exit 4"))
    r = isobox("attach", "--no-stdin", name, check=False, timeout=30)
    assert r.stdout == "hi\n" and r.returncode == 4, r
    err = isobox("attach", name, check=False)
    assert err.returncode == 1 and "You cannot attach to a stopped container" in err.stderr


def test_detached_interactive_stdin_survives_an_attach_client(isobox: Isobox) -> None:
    """`run -d -i` (StdinOnce false): a client leaving does not close the container's stdin,
    the next attach still writes to it; `create -i` and `run -i` are StdinOnce."""
    _, name = run_detached(isobox, "-i", cmd=("cat",))
    assert inspect(isobox, name)["Config"]["StdinOnce"] is False
    for word in (b"one", b"two"):
        client = isobox.popen("attach", name, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
        assert client.stdin is not None
        time.sleep(0.5)  # attached before writing
        client.stdin.write(word + b"\n")
        client.stdin.flush()
        try:
            assert word in read_until(client, word), word
        finally:
            client.kill()  # the client leaves without a detach sequence
            client.wait()
        time.sleep(0.5)
        assert inspect(isobox, name)["State"]["Running"] is True, word
    isobox("rm", "-f", name)
    created = isobox("create", "-i", "--network", "none", "busybox", "cat").stdout.strip()
    assert inspect(isobox, created)["Config"]["StdinOnce"] is True
    isobox("rm", "-f", created)
