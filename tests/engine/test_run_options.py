"""`run` options where Docker goes on (a warning, the last value, an ignored mode) rather
than refuse, and defaults that must match Docker's, checked in real containers."""

from __future__ import annotations

import os

import pytest
from engine_helpers import Isobox

from harness import unique_id

pytestmark = pytest.mark.engine


def run(isobox: Isobox, *args: str) -> tuple[str, str]:
    p = isobox("run", "--rm", "--network", "none", *args)
    return p.stdout, p.stderr


def test_ports_with_host_or_none_network_are_a_warning(isobox: Isobox) -> None:
    for mode in ("host", "none"):
        p = isobox("run", "--rm", "--network", mode, "-p", "127.0.0.1:48123:80", "busybox",
                   "echo", "ran")
        assert p.stdout == "ran\n"
        assert f"WARNING: Published ports are discarded when using {mode} network mode" \
            in p.stderr


def test_hostname_with_the_host_network(isobox: Isobox) -> None:
    p = isobox("run", "--rm", "--network", "host", "--hostname", "own-name", "busybox",
               "hostname")
    assert p.stdout == "own-name\n"


def test_repeated_ulimit_keeps_the_last(isobox: Isobox) -> None:
    out, _ = run(isobox, "--ulimit", "nofile=10:20", "--ulimit", "nofile=30:40", "busybox",
                 "sh", "-c", "ulimit -Sn; ulimit -Hn")
    assert out.split() == ["30", "40"]


def test_consistency_modes_are_accepted(isobox: Isobox, tmp_path: object) -> None:
    out, _ = run(isobox, "-v", f"{tmp_path}:/data:cached", "--mount",
                 f"type=bind,src={tmp_path},dst=/more,consistency=delegated", "busybox",
                 "sh", "-c", "touch /data/a /more/b && ls /data")
    assert out.split() == ["a", "b"]


def test_cap_all_is_only_all(isobox: Isobox) -> None:
    p = isobox("run", "--rm", "--cap-add", "cap_all", "busybox", "true", check=False)
    assert p.returncode == 125 and 'unknown capability: "CAP_ALL"' in p.stderr
    assert isobox.ids() == []


def test_proc_is_nosuid_nodev_noexec(isobox: Isobox) -> None:
    out, _ = run(isobox, "busybox", "grep", "^proc /proc ", "/proc/mounts")
    options = out.split()[3].split(",")
    assert {"nosuid", "nodev", "noexec"} <= set(options)


def test_a_missing_working_directory_is_made(isobox: Isobox) -> None:
    """As Docker: `-w` names a directory the image lacks; it is made in the root."""
    out, _ = run(isobox, "-w", "/new/dir", "busybox", "sh", "-c", "pwd; ls -ld /new/dir")
    assert out.splitlines()[0] == "/new/dir" and out.splitlines()[1].startswith("drwxr-xr-x")
    out, _ = run(isobox, "-u", "1000", "-w", "/made/for/user", "busybox", "pwd")
    assert out == "/made/for/user\n"
    p = isobox("run", "--rm", "-w", "/bin/sh/x", "busybox", "true", check=False)
    assert p.returncode == 125 and "/bin/sh" in p.stderr and "not a directory" in p.stderr
    assert isobox.ids() == []


def test_the_working_directory_is_made_inside_the_root(isobox: Isobox) -> None:
    """An image's symlink cannot lead the made directory out to the host."""
    escape = f"/tmp/{unique_id('wd-escape')}"
    name, image = unique_id("wdsrc"), f"{unique_id('wdimg')}:1"
    isobox("run", "--name", name, "--network", "none", "busybox", "sh", "-c",
           f"mkdir -p {escape} && ln -s /../../../../../..{escape} /evil")
    isobox("commit", name, image)
    try:
        out, _ = run(isobox, "-w", "/evil/sub", image, "sh", "-c", f"pwd; ls {escape}")
        assert out == f"{escape}/sub\nsub\n"  # made where the link leads, inside the root
        assert not os.path.lexists(escape)
    finally:
        isobox("rm", name)
        isobox("rmi", image)
