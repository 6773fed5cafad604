"""Health checks on real containers: the per-container shell loop runs the test through the
runtime's exec, records results as Docker does, and dies with its container."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from engine_helpers import Isobox

from harness import unique_id
from isobox.engine.health import effective_probe, go_duration


@pytest.fixture
def ib(isobox: Isobox) -> Iterator[Isobox]:
    yield isobox
    isobox.remove_all_containers()
    assert not health_loops(isobox.root), "a health-check loop outlived its containers"


def health_loops(root: str, cid: str = "") -> list[int]:
    """Pids of health-check loop processes (the shell, or a hook it runs) of this root."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if (b"isobox-health" in cmd or b"health_hook" in cmd) and root.encode() in cmd \
                and cid.encode() in cmd:
            found.append(int(name))
    return found


def run(ib: Isobox, *args: str) -> str:
    name = unique_id("h")
    ib("run", "-d", "--name", name, "--network", "none", *args)
    return name


def health(ib: Isobox, name: str) -> dict[str, Any]:
    out = ib("inspect", "--format", "{{json .State.Health}}", name).stdout
    return dict(json.loads(out))


def wait_for(what: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def ps_names(ib: Isobox, *filters: str) -> list[str]:
    args = [a for f in filters for a in ("--filter", f)]
    return ib("ps", "-a", "--format", "json", *args).stdout.split("\n")[:-1]


def test_passing_check_makes_it_healthy_and_stop_ends_the_loop(ib: Isobox) -> None:
    name = run(ib, "--health-cmd", "echo hi", "--health-interval", "300ms", "busybox",
               "sleep", "60")
    cid = ib.record(name)["id"]
    assert health(ib, name)["Status"] == "starting"
    assert len(health_loops(ib.root, cid)) >= 1
    wait_for(lambda: health(ib, name)["Status"] == "healthy")
    h = health(ib, name)
    assert h["FailingStreak"] == 0
    assert h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Output"] == "hi\n"
    assert h["Log"][-1]["Start"] <= h["Log"][-1]["End"]
    rows = [json.loads(line) for line in ps_names(ib, f"name={name}")]
    assert rows[0]["Status"].endswith("(healthy)")
    assert [r["Names"] for r in (json.loads(x) for x in ps_names(ib, "health=healthy"))] \
        == [name]
    assert not ps_names(ib, "health=none", f"name={name}")
    events = ib("events", "--since", "0", "--until", str(time.time() + 0.5),
                "--filter", f"container={name}", "--filter", "event=health_status").stdout
    assert "health_status: healthy" in events
    ib("stop", "-t", "1", name)
    assert not health_loops(ib.root, cid)
    assert ps_names(ib, "health=healthy", f"name={name}")  # the last status stays (inspect)


def test_failures_make_it_unhealthy_and_rm_f_ends_the_loop(ib: Isobox) -> None:
    name = run(ib, "--health-cmd", "echo bad >&2; exit 3", "--health-interval", "100ms",
               "--health-retries", "2", "busybox", "sleep", "60")
    cid = ib.record(name)["id"]
    wait_for(lambda: health(ib, name)["Status"] == "unhealthy")
    h = health(ib, name)
    assert h["FailingStreak"] >= 2
    assert h["Log"][-1]["ExitCode"] == 3 and h["Log"][-1]["Output"] == "bad\n"
    ps = json.loads(ps_names(ib, f"name={name}")[0])
    assert ps["Status"].endswith("(unhealthy)")
    wait_for(lambda: len(health(ib, name)["Log"]) == 5)
    time.sleep(0.5)
    assert len(health(ib, name)["Log"]) == 5  # Docker keeps the last five
    ib("rm", "-f", name)
    assert not health_loops(ib.root, cid)


def test_a_check_past_its_timeout_is_killed_and_fails(ib: Isobox) -> None:
    name = run(ib, "--health-cmd", "sleep 30", "--health-timeout", "300ms",
               "--health-interval", "100ms", "--health-retries", "1", "busybox", "sleep", "60")
    wait_for(lambda: health(ib, name)["Status"] == "unhealthy")
    entry = health(ib, name)["Log"][0]
    assert entry["ExitCode"] == -1
    assert entry["Output"] == "Health check exceeded timeout (300ms)"
    ib("pause", name)  # no checks while frozen, and no killed check left inside
    time.sleep(0.5)
    ib("unpause", name)
    procs = ib("exec", name, "ps", "-o", "args").stdout
    assert procs.count("sleep 30") <= 1  # at most the check running right now


def test_start_period_failures_do_not_count_until_a_pass(ib: Isobox) -> None:
    name = run(ib, "--health-cmd", "test -e /tmp/ok", "--health-interval", "100ms",
               "--health-retries", "1", "--health-start-period", "60s", "busybox",
               "sleep", "60")
    wait_for(lambda: len(health(ib, name)["Log"]) >= 2)
    h = health(ib, name)
    assert h["Status"] == "starting" and h["FailingStreak"] == 0
    assert h["Log"][-1]["ExitCode"] == 1
    assert ps_names(ib, "health=starting", f"name={name}")
    ib("exec", name, "touch", "/tmp/ok")
    wait_for(lambda: health(ib, name)["Status"] == "healthy")
    ib("exec", name, "rm", "/tmp/ok")  # after a pass, failures count even in the period
    wait_for(lambda: health(ib, name)["Status"] == "unhealthy")


def test_image_healthcheck_and_no_healthcheck(ib: Isobox) -> None:
    tag = unique_id("img").lower()
    with tempfile.TemporaryDirectory() as ctx:
        with open(os.path.join(ctx, "Containerfile"), "w") as f:
            f.write("FROM busybox\nHEALTHCHECK --interval=200ms CMD [\"true\"]\n")
        ib("build", "-q", "-t", tag, ctx)
    try:
        with_image = run(ib, tag, "sleep", "60")
        disabled = run(ib, "--no-healthcheck", tag, "sleep", "60")
        wait_for(lambda: health(ib, with_image)["Status"] == "healthy")
        assert not health_loops(ib.root, ib.record(disabled)["id"])
        names = [json.loads(x)["Names"] for x in ps_names(ib, "health=none")]
        assert disabled in names and with_image not in names
        assert ib("healthcheck", "run", disabled, check=False).returncode == 125
    finally:
        ib.remove_all_containers()
        ib("rmi", "-f", tag, check=False)


def test_healthcheck_run_exit_codes(ib: Isobox) -> None:
    good = run(ib, "--health-cmd", "true", "--health-interval", "1h", "busybox", "sleep", "60")
    bad = run(ib, "--health-cmd", "false", "--health-interval", "1h", "busybox", "sleep", "60")
    none = run(ib, "busybox", "sleep", "60")
    assert ib("healthcheck", "run", good, check=False).returncode == 0
    assert health(ib, good)["Status"] == "healthy"
    proc = ib("healthcheck", "run", bad, check=False)
    assert proc.returncode == 1 and proc.stdout.strip() == "starting"  # 1 of 3 retries
    assert health(ib, bad)["Log"][-1]["ExitCode"] == 1
    proc = ib("healthcheck", "run", none, check=False)
    assert proc.returncode == 125 and "no defined healthcheck" in proc.stderr
    ib("stop", "-t", "0", good)
    assert ib("healthcheck", "run", good, check=False).returncode == 125
    assert ib("healthcheck", "run", "nosuch" + unique_id(), check=False).returncode == 125
    assert ib("ps", "--filter", "health=bogus", check=False).returncode != 0


def test_effective_probe_merges_over_the_image() -> None:
    img = {"Healthcheck": {"Test": ["CMD", "/check", "-q"], "Interval": 5_000_000_000,
                           "Retries": 7}}
    p = effective_probe({"healthcheck": None, "image_config": img})
    assert p is not None and p.argv == ("/check", "-q")
    assert (p.interval_ns, p.timeout_ns, p.retries) == (5_000_000_000, 30_000_000_000, 7)
    p = effective_probe({"healthcheck": {"test": [], "interval_ns": 1_000_000_000},
                         "image_config": img})  # --health-interval only: the image's test
    assert p is not None and p.argv == ("/check", "-q") and p.interval_ns == 1_000_000_000
    p = effective_probe({"healthcheck": {"test": ["CMD-SHELL", "curl -f x || exit 1"]},
                         "image_config": {}})
    assert p is not None and p.argv == ("/bin/sh", "-c", "curl -f x || exit 1")
    assert p.retries == 3
    assert effective_probe({"healthcheck": {"test": ["NONE"]}, "image_config": img}) is None
    assert effective_probe({"image_config": {"Healthcheck": {"Test": ["NONE"]}}}) is None
    assert effective_probe({}) is None
    assert [go_duration(n) for n in (300_000_000, 30_000_000_000, 90_000_000_000,
                                     1_500_000_000, 3_600_000_000_000)] == \
        ["300ms", "30s", "1m30s", "1.5s", "1h0m0s"]
