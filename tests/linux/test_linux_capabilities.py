"""isobox.linux.capabilities: the name table, parse_caps errors, and the sets on a real kernel.

Everything that changes capabilities runs in a forked child (see harness.run_in_child).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from isobox.errors import ConfigError
from isobox.linux import capabilities as caps
from isobox.linux import syscalls

RunInChild = Callable[..., Any]  # harness.run_in_child, via the in_child fixture

DOCKER_MASK = 0xA80425FB
CHOWN_KILL = {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN", "CAP_KILL"],
              "permitted": ["CAP_CHOWN", "CAP_KILL"], "inheritable": [], "ambient": []}


def docker_caps(**extra: list[str]) -> dict[str, list[str]]:
    obj = {key: list(caps.DOCKER_DEFAULT) for key in ("bounding", "effective", "permitted")}
    obj.update(extra)
    return obj


# -- pure ------------------------------------------------------------------------------------

def test_name_table() -> None:
    assert len(caps.NAMES) == 41
    assert caps.number("CAP_CHOWN") == 0
    assert caps.number("CAP_CHECKPOINT_RESTORE") == 40
    assert caps.number("cap_sys_admin") == 21
    assert caps.number("NET_RAW") == 13
    assert caps.name(24) == "CAP_SYS_RESOURCE"
    assert caps.name(41) == "CAP_41"
    for i, n in enumerate(caps.NAMES):
        assert caps.NUMBERS[n] == i
    with pytest.raises(KeyError):
        caps.number("CAP_BOGUS")


def test_last_cap_matches_table() -> None:
    assert caps.last_cap() == len(caps.NAMES) - 1


def test_docker_default_mask() -> None:
    parsed = caps.parse_caps(docker_caps())
    assert caps.to_mask(parsed["bounding"]) == DOCKER_MASK
    assert caps.from_mask(DOCKER_MASK) == parsed["effective"]


def test_missing_keys_are_empty_sets() -> None:
    assert caps.parse_caps({}) == {k: set() for k in caps.SETS}


def test_unknown_capability_names_the_field() -> None:
    obj = docker_caps(bounding=["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_BOGUS"])
    with pytest.raises(ConfigError) as ei:
        caps.parse_caps(obj, "config.json: process.capabilities")
    assert ei.value.where == "config.json: process.capabilities.bounding[3]"
    assert ei.value.message == 'unknown capability "CAP_BOGUS"'
    assert str(ei.value) == ('config.json: process.capabilities.bounding[3]: '
                             'unknown capability "CAP_BOGUS"')


def test_ambient_outside_inheritable_is_accepted_and_skipped() -> None:
    """runc's own default spec lists ambient caps with no inheritable set: accepted (as
    runc), and apply_sets raises only those in permitted and inheritable."""
    parsed = caps.parse_caps({"permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]}, "caps")
    assert parsed["ambient"] == {caps.number("CAP_KILL")}


@pytest.mark.parametrize(("obj", "where", "text"), [
    ([], "caps", "must be an object"),
    ({"effective": "CAP_CHOWN"}, "caps.effective", "must be an array"),
    ({"ambient": [5]}, "caps.ambient[0]", "must be a string"),
    ({"permitted": ["CAP_CHOWN"], "effective": ["CAP_CHOWN", "CAP_KILL"]}, "caps.effective[1]",
     "not in the permitted set"),
])
def test_parse_errors(obj: object, where: str, text: str) -> None:
    with pytest.raises(ConfigError) as ei:
        caps.parse_caps(obj, "caps")
    assert ei.value.where == where
    assert text in ei.value.message


def test_import_is_cheap() -> None:
    code = ("import sys; import isobox.linux.capabilities; "
            "bad = {'ctypes', 'typing', 're', 'enum', 'dataclasses', 'json'} & set(sys.modules); "
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_read_status_matches_capget() -> None:
    status = caps.read_status()
    assert set(status) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
    eff, prm, inh = caps.capget()
    assert (status["CapEff"], status["CapPrm"], status["CapInh"]) == (eff, prm, inh)


# -- on the kernel, in a child ---------------------------------------------------------------

def test_keep_chown_and_kill(in_child: RunInChild) -> None:
    def child() -> dict[str, int]:
        parsed = caps.parse_caps(CHOWN_KILL)
        caps.apply_bounding(parsed)
        caps.apply_sets(parsed)
        return caps.read_status()

    st = in_child(child).ok()
    assert st == {"CapInh": 0, "CapPrm": 0x21, "CapEff": 0x21, "CapBnd": 0x21, "CapAmb": 0}


def test_bounding_drop_is_visible_to_capbset_read(in_child: RunInChild) -> None:
    def child() -> list[int]:
        caps.drop_bounding({0, 5})
        return [syscalls.prctl(syscalls.PR_CAPBSET_READ, c) for c in range(caps.last_cap() + 1)]

    read = in_child(child).ok()
    assert [i for i, v in enumerate(read) if v] == [0, 5]


def test_docker_default_as_root(in_child: RunInChild) -> None:
    def child() -> dict[str, int]:
        parsed = caps.parse_caps(docker_caps())
        caps.apply_bounding(parsed)
        caps.apply_sets(parsed)
        return caps.read_status()

    st = in_child(child).ok()
    assert st == {"CapInh": 0, "CapPrm": DOCKER_MASK, "CapEff": DOCKER_MASK,
                  "CapBnd": DOCKER_MASK, "CapAmb": 0}


def _switch_user(uid: int, keepcaps: bool) -> None:
    if keepcaps:
        syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if keepcaps:
        syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)


def test_sets_after_setresuid_with_keepcaps(in_child: RunInChild) -> None:
    """The documented order, then execve: only the ambient set survives for a non-root user."""
    obj = docker_caps(inheritable=["CAP_NET_BIND_SERVICE"], ambient=["CAP_NET_BIND_SERVICE"])

    def child() -> tuple[dict[str, int], dict[str, int], str]:
        parsed = caps.parse_caps(obj)
        caps.apply_bounding(parsed)
        _switch_user(1000, keepcaps=True)
        between = caps.read_status()
        caps.apply_sets(parsed)
        after = caps.read_status()
        out = subprocess.run(["grep", "^Cap", "/proc/self/status"], capture_output=True,
                             text=True, check=True, cwd="/").stdout
        return between, after, out

    between, after, out = in_child(child).ok()
    # setresuid away from 0 with KEEPCAPS: permitted kept (the bounding drop does not touch
    # it), effective cleared; apply_sets then shrinks permitted
    assert between["CapPrm"] == caps.read_status()["CapPrm"]
    assert between["CapEff"] == 0 and between["CapBnd"] == DOCKER_MASK
    assert after == {"CapInh": 0x400, "CapPrm": DOCKER_MASK, "CapEff": DOCKER_MASK,
                     "CapBnd": DOCKER_MASK, "CapAmb": 0x400}
    execed = {k: int(v, 16) for k, v in (line.split(":") for line in out.splitlines())}
    assert execed == {"CapInh": 0x400, "CapPrm": 0x400, "CapEff": 0x400,
                      "CapBnd": DOCKER_MASK, "CapAmb": 0x400}


def test_sets_after_setresuid_without_keepcaps_fail(in_child: RunInChild) -> None:
    def child() -> None:
        parsed = caps.parse_caps(docker_caps())
        caps.apply_bounding(parsed)
        _switch_user(1000, keepcaps=False)
        caps.apply_sets(parsed)

    res = in_child(child)
    assert res.errno == errno.EPERM, res


def test_ambient_needs_inheritable(in_child: RunInChild) -> None:
    def child() -> None:
        caps.set_sets({5}, {5}, set())
        caps.set_ambient({5})

    res = in_child(child)
    assert res.errno == errno.EPERM
    assert res.error is not None and "CAP_KILL" in res.error
