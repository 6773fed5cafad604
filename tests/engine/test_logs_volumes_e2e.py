"""Logs and volumes through the CLI: streams kept apart, timestamps, tail, rotation with
max-size/max-file, follow; named volumes initialised from the image and kept across
containers; anonymous volumes removed with `rm -v`."""

from __future__ import annotations

import os
import subprocess

import pytest
from engine_helpers import Isobox

pytestmark = pytest.mark.engine


def test_logs_streams_timestamps_tail(isobox: Isobox) -> None:
    isobox("run", "--name", "talk", "--network", "none", "busybox", "sh", "-c",
           "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done")
    p = isobox("logs", "talk")
    assert p.stdout == "".join(f"out{i}\n" for i in range(1, 6))
    assert p.stderr == "".join(f"err{i}\n" for i in range(1, 6))
    tail = isobox("logs", "--tail", "2", "talk")
    assert len((tail.stdout + tail.stderr).splitlines()) == 2  # the last two of both streams
    stamped = isobox("logs", "-t", "talk").stdout.splitlines()
    assert stamped[0].endswith(" out1") and stamped[0][:4].isdigit() and "Z " in stamped[0]
    isobox("rm", "talk")


def test_logs_rotate_and_follow(isobox: Isobox) -> None:
    isobox("run", "-d", "--name", "chatty", "--log-opt", "max-size=2k", "--log-opt",
           "max-file=3", "--network", "none", "busybox", "sh", "-c",
           "i=0; while [ $i -lt 400 ]; do echo line$i; i=$((i+1)); done; sleep 1; echo last")
    follow = isobox.popen("logs", "-f", "chatty", stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
    out, _ = follow.communicate(timeout=20)
    lines = out.decode().splitlines()
    assert lines[-1] == "last"
    log = os.path.join(isobox.root, "containers", isobox.record("chatty")["id"], "ctr.log")
    assert os.path.getsize(log) <= 2048  # rotated at max-size by the monitor
    # what is kept is in order and ends with the newest lines
    numbers = [int(x[4:]) for x in lines if x.startswith("line")]
    assert numbers == sorted(numbers) and numbers[-1] == 399
    isobox("rm", "chatty")


def test_named_volume_initialised_from_image_and_kept(isobox: Isobox) -> None:
    isobox("run", "--rm", "-v", "ibxvol:/etc", "--network", "none", "busybox", "sh", "-c",
           "ls /etc > /dev/null; echo kept > /etc/marker")
    out = isobox("run", "--rm", "-v", "ibxvol:/data", "--network", "none", "busybox", "sh",
                 "-c", "cat /data/marker; ls /data").stdout
    assert out.startswith("kept\n")
    assert "passwd" in out  # copied up from the image's /etc on first use
    assert "ibxvol" in isobox("volume", "ls", "-q").stdout
    isobox("run", "-d", "--name", "user", "-v", "ibxvol:/data", "--network", "none", "busybox",
           "sleep", "30")
    p = isobox("volume", "rm", "ibxvol", check=False)
    assert p.returncode == 1 and "volume is in use" in p.stderr
    isobox("rm", "-f", "user")
    isobox("volume", "rm", "ibxvol")


def test_anonymous_volume_removed_with_rm_v(isobox: Isobox) -> None:
    isobox("run", "--name", "anon", "-v", "/scratch", "--network", "none", "busybox", "true")
    vols = isobox("volume", "ls", "-q").stdout.split()
    assert len(vols) == 1 and len(vols[0]) == 64
    isobox("rm", "-v", "anon")
    assert isobox("volume", "ls", "-q").stdout.split() == []


def test_bind_mount_ro_and_tmpfs(isobox: Isobox, tmp_path: object) -> None:
    src = os.path.join(str(tmp_path), "src")
    os.mkdir(src)
    with open(os.path.join(src, "f"), "w") as f:
        f.write("host-data")
    out = isobox("run", "--rm", "-v", f"{src}:/in:ro", "--tmpfs", "/scratch:size=1m",
                 "--network", "none", "busybox", "sh", "-c",
                 "cat /in/f; touch /in/x 2>/dev/null && echo wrote; "
                 "grep ' /scratch ' /proc/mounts").stdout
    assert out.startswith("host-data")
    assert "wrote" not in out and "tmpfs" in out
    assert not os.path.exists(os.path.join(src, "x"))
