"""`isobox --host URL …` against `isobox serve` on a per-run socket, over the same root as the
local CLI: the same commands run both ways print the same (durations normalised), containers
made either way are seen by the other, and commands without a remote implementation refuse
with exit 125 and change nothing."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer
from engine_helpers import Isobox
from images_helpers import Registry, image_guard_fixture, registry_fixture  # noqa: F401
from objects_helpers import check_and_clean, objects_of

from harness import unique_id
from isobox.images.store import ImageStore

pytestmark = pytest.mark.engine

DURATION = re.compile(r"(Less than a second|About an? \w+|\d+ \w+?s?)(?= ago|\s{2,}|\"|$)")


def same(text: str) -> str:
    """Output with its durations ("3 seconds", "Less than a second") made comparable, and
    the table columns they widen."""
    return re.sub(r" {2,}", "  ", DURATION.sub("<t>", text))


class Remote(Isobox):
    """The isobox CLI with ISOBOX_HOST set (and a root that does not exist: nothing local)."""

    def __init__(self, root: str, socket_path: str) -> None:
        super().__init__(root)
        self.env["ISOBOX_HOST"] = f"unix://{socket_path}"
        self.env["ISOBOX_ROOT"] = "/nonexistent-isobox-remote-root"


@pytest.fixture
def remote(api_server: ApiServer, isobox: Isobox) -> Iterator[Remote]:
    before = objects_of(isobox)
    yield Remote(isobox.root, api_server.socket_path)
    check_and_clean(isobox, before)


def both(isobox: Isobox, remote: Remote, *args: str) -> tuple[str, str]:
    local, far = isobox(*args), remote(*args)
    return same(local.stdout), same(far.stdout)


def test_lists_inspect_and_info_print_the_same(isobox: Isobox, remote: Remote) -> None:
    a, b = unique_id("ra"), unique_id("rb")
    isobox("run", "-d", "--name", a, "-p", "127.0.0.1::80", "--label", "k=v", "busybox",
           "sleep", "60")
    remote("run", "-d", "--name", b, "busybox", "sh", "-c", "exit 3")
    assert remote("wait", b).stdout == "3\n"
    for args in (("ps", "-a"), ("ps", "-a", "--no-trunc"), ("ps", "-a", "--format", "json"),
                 ("ps", "-q"), ("ps", "-n", "1"), ("ps", "-a", "--filter", "label=k=v"),
                 ("inspect", a), ("inspect", "busybox"), ("container", "inspect", b),
                 ("inspect", "-f", "{{.State.Status}} {{.Name}}", a), ("images",),
                 ("images", "-q"), ("images", "--digests"), ("image", "inspect", "busybox"),
                 ("image", "inspect", "-f", "{{.Id}} {{json .Config.Cmd}}", "busybox"),
                 ("info",), ("system", "info", "-f", "{{.Isobox.Cgroups.layout}}"),
                 ("version",), ("network", "ls"), ("network", "inspect", "bridge"),
                 ("volume", "ls"), ("vm", "ls"), ("snapshot", "ls", a),
                 ("ps", "-a", "--format", "table {{.Names}}\t{{.Status}}\t{{.Label \"k\"}}"),
                 ("images", "--format", "json"), ("network", "ls", "--format", "json"),
                 ("images", "-f", "dangling=false", "busybox"),
                 ("volume", "ls", "--format", "{{.Name}} {{.Driver}}")):
        local, far = both(isobox, remote, *args)
        assert local == far, args
    assert a in remote("ps").stdout and b not in remote("ps").stdout
    p = remote("inspect", "nosuch-x", check=False)
    assert p.returncode == 1 and "No such object: nosuch-x" in p.stderr


def test_run_attached_prints_output_and_exits_with_the_code(isobox: Isobox,
                                                            remote: Remote) -> None:
    cmd = ("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    local, far = isobox(*cmd, check=False), remote(*cmd, check=False)
    assert (far.returncode, far.stdout, far.stderr) == (3, "out\n", "err\n")
    assert (local.returncode, local.stdout, local.stderr) == (3, "out\n", "err\n")
    assert isobox.ids() == []  # --rm: gone
    name = unique_id("rt")
    p = remote("run", "-t", "--name", name, "busybox", "sh", "-c", "echo tty", check=False)
    assert (p.returncode, p.stdout) == (0, "tty\n")  # the pty's \r\n, as text
    assert isobox.record(name)["status"] == "exited"  # kept without --rm
    # a missing image with --pull never: run's own error, exit 125, as locally
    p = remote("run", "--pull", "never", "nosuchimage-x", "true", check=False)
    assert p.returncode == 125 and "No such image: nosuchimage-x" in p.stderr


def test_lifecycle_logs_and_exec(isobox: Isobox, remote: Remote) -> None:
    name = unique_id("rl")
    cid = remote("create", "--name", name, "busybox", "sh", "-c",
                 "echo start; echo warn >&2; trap 'echo bye; exit 0' TERM; "
                 "while :; do sleep 0.1; done").stdout.strip()
    assert isobox.record(name)["id"] == cid and isobox.record(name)["status"] == "created"
    assert remote("start", name).stdout == f"{name}\n"
    deadline = time.monotonic() + 20
    while "start" not in isobox("logs", name).stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    p = remote("exec", name, "sh", "-c", "echo in; echo oops >&2; exit 4", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (4, "in\n", "oops\n")
    assert remote("exec", "-d", name, "touch", "/tmp/d").returncode == 0
    follow = remote.popen("logs", "-f", name, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    assert remote("stop", "-t", "5", name).stdout == f"{name}\n"
    out, err = follow.communicate(timeout=30)  # -f ends when the container stops
    assert (follow.returncode, out, err) == (0, b"start\nbye\n", b"warn\n")
    for args in (("logs", name), ("logs", "--tail", "1", name), ("logs", "-t", name)):
        local, far = isobox(*args), remote(*args)
        assert (local.stdout, local.stderr) == (far.stdout, far.stderr), args
    remote("start", name)
    assert remote("kill", name).stdout == f"{name}\n"
    assert remote("wait", name).stdout == "137\n"
    assert remote("rm", name).stdout == f"{name}\n"
    assert isobox.ids() == []
    p = remote("rm", name, check=False)
    assert p.returncode == 1 and f"No such container: {name}" in p.stderr


def test_images_networks_volumes(isobox: Isobox, remote: Remote) -> None:
    tag = f"{unique_id('img')}:v1"
    remote("tag", "busybox", tag)
    assert tag in isobox("images").stdout.replace("   ", ":").replace(" ", "")
    assert remote("rmi", tag).stdout == f"Untagged: {tag}\n"
    net, vol = unique_id("net"), unique_id("vol")
    nid = remote("network", "create", "--subnet", "10.231.7.0/24", "--label", "a=b",
                 net).stdout.strip()
    assert isobox("network", "ls", "-q", "--no-trunc", "-f", f"name={net}").stdout.split() == \
        [nid]
    assert remote("volume", "create", "--label", "x=y", vol).stdout == f"{vol}\n"
    for args in (("network", "ls", "-f", "label=a=b"), ("network", "inspect", net),
                 ("volume", "ls", "-f", "label=x=y"), ("volume", "inspect", vol),
                 ("network", "inspect", "-f", "{{.Name}} {{json .IPAM.Config}}", net),
                 ("volume", "inspect", "-f", "{{.Mountpoint}} {{.Labels}}", vol)):
        local, far = both(isobox, remote, *args)
        assert local == far, args
    assert remote("network", "rm", net).stdout == f"{net}\n"
    assert remote("volume", "rm", vol).stdout == f"{vol}\n"
    assert net not in isobox("network", "ls").stdout and vol not in isobox("volume", "ls").stdout


def test_container_snapshots(isobox: Isobox, remote: Remote) -> None:
    name = unique_id("rs")
    remote("run", "-d", "--name", name, "busybox", "sh", "-c", "echo one > /f; sleep 60")
    deadline = time.monotonic() + 20
    while remote("exec", name, "cat", "/f", check=False).stdout != "one\n":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    remote("stop", "-t", "0", name)
    assert remote("snapshot", "create", name, "s1").stdout == "s1\n"
    local, far = both(isobox, remote, "snapshot", "ls", name)
    assert local == far and "s1" in far
    assert json.loads(remote("snapshot", "ls", "--format", "json", name).stdout)["kind"] == \
        "container"
    p = remote("snapshot", "create", "--memory", name, "m1", check=False)
    assert p.returncode == 125 and "CRIU" in p.stderr  # as locally: the host cannot
    assert remote("snapshot", "restore", name, "s1").stdout == "s1\n"
    assert remote("snapshot", "rm", name, "s1").stdout == "s1\n"
    assert isobox("snapshot", "ls", "-q", name).stdout == ""


@pytest.mark.parametrize("args", [
    ("commit", "x"), ("build", "."), ("run", "-i", "busybox", "cat"), ("cp", "a:/b", "/tmp/c"),
    ("exec", "-it", "x", "sh"), ("vm", "console", "x"), ("serve",), ("start", "-a", "x"),
    ("system", "prune", "-f"), ("image", "prune", "-f"), ("network", "prune", "-f"),
    ("login", "-u", "a", "-p", "b", "localhost:5000"),
])
def test_unsupported_commands_refuse_and_change_nothing(isobox: Isobox, remote: Remote,
                                                        args: tuple[str, ...]) -> None:
    before = (isobox.ids(), isobox("images", "-q").stdout, objects_of(isobox))
    p = remote(*args, check=False)
    assert p.returncode == 125, (args, p.stdout, p.stderr)
    assert "not available with --host" in p.stderr and "Traceback" not in p.stderr
    assert (isobox.ids(), isobox("images", "-q").stdout, objects_of(isobox)) == before


def test_unreachable_host_is_an_error(isobox: Isobox) -> None:
    p = isobox("--host", "unix:///nonexistent/isobox.sock", "ps", check=False)
    assert p.returncode == 1 and "cannot reach unix:///nonexistent/isobox.sock" in p.stderr


def test_system_vm_commands(isobox: Isobox, remote: Remote) -> None:
    name = unique_id("rvm")
    vid = remote("vm", "create", name, "--image", "busybox", "--memory", "256m",
                 "--network", "none").stdout.strip()
    assert isobox.record(name)["id"] == vid
    for args in (("vm", "ls"), ("vm", "ls", "-q"), ("vm", "inspect", name)):
        local, far = both(isobox, remote, *args)
        assert local == far, args
    assert remote("vm", "resize", name, "--cpus", "1").stdout == "cpus: 1 at next boot\n"
    p = remote("vm", "stop", "nosuch-vm", check=False)
    assert p.returncode == 1 and "No such VM: nosuch-vm" in p.stderr
    assert remote("vm", "rm", name).stdout == f"{name}\n"
    assert name not in isobox("vm", "ls").stdout


def test_pull_and_run_of_a_missing_image(isobox: Isobox, remote: Remote, registry: Registry,
                                         image_guard: ImageStore) -> None:
    ref = f"{registry.host}/{unique_id('rpull')}/bb:1"
    isobox("tag", "busybox", ref)
    isobox("push", ref)
    isobox("rmi", ref)
    far = remote("pull", ref)
    isobox("rmi", ref)
    local = isobox("pull", ref)
    assert far.stdout == local.stdout  # Pulling from…, Digest: …, Status: …, the reference
    assert "Status: Image is up to date" in remote("pull", ref).stdout
    image_id = json.loads(isobox("image", "inspect", ref).stdout)[0]["Id"]
    assert remote("pull", "-q", ref).stdout.strip() == image_id  # as `pull -q` locally
    isobox("rmi", ref)
    p = remote("run", "--rm", ref, "echo", "pulled")
    assert p.stdout == "pulled\n" and f"Unable to find image '{ref}' locally" in p.stderr
    isobox("rmi", ref)
    p = remote("pull", f"{registry.host}/nosuch/repo:1", check=False)
    assert p.returncode == 1 and "not found" in p.stderr
