"""Container logs in conmon's k8s-file format: parsing, generations, tail/since, following
across a rename-over rotation, log options; and once against the real conmon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness import RUN_PREFIX, busybox_bundle, leftover_cgroups, unique_id
from isobox.engine.logs import (
    LogRecord,
    follow_logs,
    format_record,
    generations,
    parse_log_opts,
    parse_since,
    parse_timestamp,
    read_logs,
    rotate_generations,
)
from isobox.errors import ConfigError

T0 = 1_800_000_000          # 2027-01-15T08:00:00Z


def stamp(sec: float, offset: str = "+00:00") -> str:
    whole = int(sec)
    ns = round((sec - whole) * 1e9)
    shift = 0
    if offset != "+00:00":
        sign = 1 if offset[0] == "+" else -1
        shift = sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    base = datetime.fromtimestamp(whole + shift, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ns:09d}{offset}"


def rec(sec: float, stream: str, tag: str, text: str, offset: str = "+00:00") -> str:
    return f"{stamp(sec, offset)} {stream} {tag} {text}\n"


def write(path: Path, *lines: str, mode: str = "a") -> None:
    with open(path, mode) as f:
        f.write("".join(lines))


def texts(records: object) -> list[str]:
    return [r.data.decode() for r in records]  # type: ignore[attr-defined]


# -- parsing ------------------------------------------------------------------------------

def test_timestamps() -> None:
    assert parse_timestamp("2027-01-15T08:00:00.000000001+00:00") == T0 * 10**9 + 1
    assert parse_timestamp("2027-01-15T09:30:00.5+01:30") == T0 * 10**9 + 500_000_000
    assert parse_timestamp("2027-01-15T08:00:00Z") == T0 * 10**9
    r = LogRecord("2027-01-15T09:00:00.123456789+01:00", "stdout", b"hi\n",
                  parse_timestamp("2027-01-15T09:00:00.123456789+01:00"))
    assert format_record(r, True) == b"2027-01-15T08:00:00.123456789Z hi\n"
    assert format_record(r, False) == b"hi\n"
    r2 = LogRecord("2027-01-15T08:00:00.000000000Z", "stdout", b"x\n")      # ns not filled
    assert format_record(r2, True) == b"2027-01-15T08:00:00.000000000Z x\n"


def test_partial_lines_and_streams(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    write(log,
          rec(T0, "stdout", "P", "hel"),
          rec(T0 + 0.1, "stderr", "F", "oops"),
          rec(T0 + 0.2, "stdout", "P", "lo "),
          rec(T0 + 0.3, "stdout", "F", "world"),
          rec(T0 + 0.4, "stdout", "F", ""),
          "garbage line\n",
          rec(T0 + 0.5, "stdout", "F", "two  spaces  kept"),
          rec(T0 + 0.6, "stderr", "P", "no newline at exit"))
    got = list(read_logs(str(log)))
    assert [(r.stream, r.data) for r in got] == [
        ("stderr", b"oops\n"), ("stdout", b"hello world\n"), ("stdout", b"\n"),
        ("stdout", b"two  spaces  kept\n"), ("stderr", b"no newline at exit")]
    assert got[1].time == stamp(T0) and got[1].ns == T0 * 10**9   # time of the first part
    assert texts(read_logs(str(log), stderr=False)) == ["hello world\n", "\n",
                                                        "two  spaces  kept\n"]
    assert texts(read_logs(str(log), stdout=False)) == ["oops\n", "no newline at exit"]


def test_generations_tail_since_until(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    write(tmp_path / "ctr.log.2", *(rec(T0 + i, "stdout", "F", f"l{i}") for i in range(3)))
    write(tmp_path / "ctr.log.1", *(rec(T0 + i, "stdout", "F", f"l{i}") for i in range(3, 6)),
          rec(T0 + 6, "stdout", "P", "split-"))
    write(log, rec(T0 + 6.5, "stdout", "F", "across"),
          *(rec(T0 + i, "stdout", "F", f"l{i}") for i in range(7, 10)))
    os.link(log, tmp_path / "ctr.log.3")          # a duplicate inode is read once (oldest)
    write(tmp_path / "ctr.log.x", rec(T0, "stdout", "F", "not a generation"))
    assert generations(str(log)) == [str(tmp_path / f"ctr.log.{k}") for k in (3, 2, 1)] + [
        str(log)]
    all_lines = ["l0\n", "l1\n", "l2\n", "l3\n", "l4\n", "l5\n", "split-across\n",
                 "l7\n", "l8\n", "l9\n"]
    os.unlink(tmp_path / "ctr.log.3")
    assert texts(read_logs(str(log))) == all_lines
    assert texts(read_logs(str(log), tail=4)) == all_lines[-4:]
    assert texts(read_logs(str(log), tail=8)) == all_lines[-8:]
    assert texts(read_logs(str(log), tail=0)) == []
    assert texts(read_logs(str(log), tail=-1)) == all_lines
    assert texts(read_logs(str(log), since=T0 + 5)) == all_lines[5:]     # inclusive
    assert texts(read_logs(str(log), until=T0 + 2)) == all_lines[:3]     # inclusive
    assert texts(read_logs(str(log), since=T0 + 2, until=T0 + 4, tail=2)) == all_lines[3:5]
    assert list(read_logs(str(tmp_path / "none.log"))) == []


def test_same_inode_read_once(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    write(log, rec(T0, "stdout", "F", "a"))
    os.link(log, tmp_path / "ctr.log.1")            # mid-rotation: <log>.1 linked, not renamed
    write(log, rec(T0 + 1, "stdout", "F", "b"))
    assert texts(read_logs(str(log))) == ["a\n", "b\n"]


# -- rotate_generations / parse_log_opts --------------------------------------------------

def test_rotate_generations(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    for k in (1, 2, 3):
        write(tmp_path / f"ctr.log.{k}", f"gen{k}\n")
    write(log, "live\n")
    rotate_generations(str(log), 3)                 # live -> .1, .1 -> .2, the rest dropped
    assert sorted(os.listdir(tmp_path)) == ["ctr.log.1", "ctr.log.2"]
    assert (tmp_path / "ctr.log.1").read_text() == "live\n"
    assert (tmp_path / "ctr.log.2").read_text() == "gen1\n"
    rotate_generations(str(log), 3)                 # no live log: nothing to shift
    assert sorted(os.listdir(tmp_path)) == ["ctr.log.1", "ctr.log.2"]
    write(log, "")
    rotate_generations(str(log), 3)                 # an empty live log stays
    assert sorted(os.listdir(tmp_path)) == ["ctr.log", "ctr.log.1", "ctr.log.2"]
    write(log, "next\n")
    os.link(log, tmp_path / "ctr.log.1.x")
    os.replace(tmp_path / "ctr.log.1.x", tmp_path / "ctr.log.1")
    rotate_generations(str(log), 3)                 # .1 already is the live inode (old engine)
    assert sorted(os.listdir(tmp_path)) == ["ctr.log.1", "ctr.log.2"]
    assert (tmp_path / "ctr.log.1").read_text() == "next\n"
    write(log, "last\n")
    rotate_generations(str(log), 1)                 # max-file 1: no old generations
    assert sorted(os.listdir(tmp_path)) == ["ctr.log"]
    rotate_generations(str(tmp_path / "missing.log"), 3)


def test_parse_log_opts() -> None:
    assert parse_log_opts({}) == (0, 1)
    assert parse_log_opts({"max-size": "10m", "max-file": "3"}) == (10 << 20, 3)
    assert parse_log_opts({"max-size": "1k"}) == (1024, 1)
    assert parse_log_opts({"max-size": "-1"}) == (0, 1)
    for opts, msg in (({"mode": "non-blocking"},
                       "unknown log opt 'mode' for k8s-file log driver"),
                      ({"max-size": "10q"}, "invalid max-size '10q'"),
                      ({"max-size": "0"}, "max-size must be a positive number"),
                      ({"max-size": "1m", "max-file": "x"}, "invalid max-file 'x'"),
                      ({"max-size": "1m", "max-file": "0"}, "max-file cannot be less than 1"),
                      ({"max-file": "3"}, "max-file cannot be set without max-size")):
        with pytest.raises(ConfigError) as e:
            parse_log_opts(opts)
        assert msg in str(e.value)


def test_parse_since() -> None:
    now = 1_800_000_000.0
    assert parse_since("10m", now) == now - 600
    assert parse_since("1h30m", now) == now - 5400
    assert parse_since("1.5s", now) == now - 1.5
    assert parse_since("0", now) == 0.0
    assert parse_since("1700000000", now) == 1_700_000_000.0
    assert parse_since("1700000000.25", now) == 1_700_000_000.25
    assert parse_since("2027-01-15T08:00:00Z", now) == T0
    assert parse_since("2027-01-15T08:00:00.5Z", now) == T0 + 0.5
    assert parse_since("2027-01-15T09:00:00+01:00", now) == T0
    local = datetime(2027, 1, 15, 8, 0, 0).timestamp()
    assert parse_since("2027-01-15T08:00:00", now) == local
    assert parse_since("2027-01-15T08", now) == local
    assert parse_since("2027-01-15", now) == datetime(2027, 1, 15).timestamp()
    for bad in ("yesterday", "10x", "2027-13-45", "", "1h-"):
        with pytest.raises(ConfigError, match="failed to parse value as time or duration"):
            parse_since(bad, now)


# -- follow -------------------------------------------------------------------------------

def test_follow_across_rename_over_rotation(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    write(log, rec(T0, "stdout", "F", "old0"), rec(T0 + 1, "stdout", "F", "old1"))
    done = threading.Event()
    got: list[str] = []

    def writer() -> None:
        """conmon's pattern with the rotation library (max-file 3): append; at the limit
        open <log>.tmp, shift <log>.1 to <log>.2, link <log> as <log>.1, rename over."""
        n = 0
        for gen in range(4):
            for _ in range(5):
                write(log, rec(T0 + 10 + n, "stdout", "F", f"n{n}"))
                n += 1
                time.sleep(0.01)
            write(log, rec(T0 + 10 + n, "stderr", "P", f"part{n}-"))
            tmp = tmp_path / "ctr.log.tmp"
            write(tmp, rec(T0 + 10 + n, "stderr", "F", "end"), mode="w")
            if os.path.exists(tmp_path / "ctr.log.1"):
                os.replace(tmp_path / "ctr.log.1", tmp_path / "ctr.log.2")
            os.link(log, tmp_path / "ctr.log.1")
            os.rename(tmp, log)
            n += 1
            time.sleep(0.25 if gen % 2 else 0.0)     # sometimes faster than the poll
        done.set()

    t = threading.Thread(target=writer)
    start = time.monotonic()
    it = follow_logs(str(log), stop=done.is_set, tail=1, poll=0.05)
    got.append(next(it).data.decode())          # the history is read before any rotation
    t.start()
    for r in it:
        got.append(r.data.decode())
    t.join()
    assert time.monotonic() - start < 10
    expected = ["old1\n"]
    n = 0
    for _ in range(4):
        for _ in range(5):
            expected.append(f"n{n}\n")
            n += 1
        expected.append(f"part{n}-end\n")
        n += 1
    assert got == expected


def test_follow_returns_when_stopped_and_read(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    write(log, rec(T0, "stdout", "F", "a"), rec(T0 + 1, "stdout", "P", "tail-no-nl"))
    assert texts(follow_logs(str(log), stop=lambda: True)) == ["a\n", "tail-no-nl"]
    assert texts(follow_logs(str(log), stop=lambda: True, until=T0 + 0.5)) == ["a\n"]
    assert texts(follow_logs(str(tmp_path / "never.log"), stop=lambda: True)) == []


def test_follow_until_stops_following(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    write(log, rec(T0, "stdout", "F", "a"))
    it = follow_logs(str(log), stop=lambda: False, until=T0 + 5, poll=0.02)
    assert next(it).data == b"a\n"
    write(log, rec(T0 + 1, "stdout", "F", "b"), rec(T0 + 9, "stdout", "F", "late"))
    assert [r.data for r in it] == [b"b\n"]


# -- the real conmon ----------------------------------------------------------------------

@pytest.mark.skipif(not (shutil.which("conmon") and shutil.which("runc")),
                    reason="needs conmon and runc")
def test_real_conmon_rotation(busybox_rootfs: str, tmp_path: Path) -> None:
    """conmon 2.1.6 alone with --log-size-max: P records, local-offset stamps, and rotation
    by a rename over the log that drops the old content (why engine/logrotate.py exists);
    the previous run, moved to <log>.1 by rotate_generations, survives."""
    cid = unique_id("log")
    short = f"/tmp/{RUN_PREFIX}-{cid[-6:]}"       # conmon's socket paths must stay short
    os.makedirs(f"{short}/exits")
    bundle = str(tmp_path / "bundle")
    os.makedirs(bundle)
    busybox_bundle.make_bundle(bundle, ["sh", "-c",
                                        "for i in 1 2 3 4 5 6 7 8; do echo line-$i-xxxxxxxxxx;"
                                        " echo err-$i >&2; sleep 0.05; done; printf end"],
                               rootfs_from=busybox_rootfs)
    with open(os.path.join(bundle, "config.json")) as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["linux"]["cgroupsPath"] = f"/{cid}"
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f)
    log = tmp_path / "ctr.log"
    write(log, rec(T0, "stdout", "F", "previous run"))
    rotate_generations(str(log), 2)
    runc = ["runc", f"--root={short}/runc"]
    try:
        subprocess.run(["conmon", "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
                        "-r", shutil.which("runc") or "runc", "--runtime-arg",
                        f"--root={short}/runc", "-b", bundle, "-p", f"{bundle}/pid",
                        "-P", f"{short}/conmon.pid", "-l", f"k8s-file:{log}",
                        "--log-size-max", "250", "--exit-dir", f"{short}/exits",
                        "--socket-dir-path", short],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=20)
        deadline = time.monotonic() + 20
        while not os.path.exists(f"{bundle}/pid") and time.monotonic() < deadline:
            time.sleep(0.02)
        subprocess.run([*runc, "start", cid], check=True, timeout=20)
        exit_file = f"{short}/exits/{cid}"
        while not os.path.exists(exit_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(exit_file) as f:
            assert f.read() == "0"
        with open(f"{short}/conmon.pid") as f:
            conmon_pid = int(f.read())
        while os.path.exists(f"/proc/{conmon_pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        subprocess.run([*runc, "delete", "--force", cid], check=False, timeout=20,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(short, ignore_errors=True)
    assert not [c for c in leftover_cgroups() if cid in c]
    assert sorted(os.listdir(tmp_path)) == ["bundle", "ctr.log", "ctr.log.1"]
    assert stat_mode(log) == 0o600
    records = list(read_logs(str(log)))
    data = [r.data for r in records]
    assert data[0] == b"previous run\n"
    assert data[-1] == b"end"                                   # a P record at exit
    # each rotation renamed a new file over the old one: conmon alone loses them
    assert b"line-1-xxxxxxxxxx\n" not in data and b"err-1\n" not in data
    assert len(data) < 1 + 16 + 1
    for r in records[1:]:
        assert isinstance(r.time, str) and r.time[-6] in "+-"    # conmon's local offset
        assert abs(r.ns / 1e9 - time.time()) < 120


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o7777
