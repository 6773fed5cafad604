"""isobox.oci.defaults: runc's default spec, and moby's confinement defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

import pytest

from isobox.oci.config import validate_config
from isobox.oci.defaults import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    DOCKER_DEFAULT_CAPS,
    default_spec,
)

# Capability numbers from linux/capability.h, for the default set's bit mask.
CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}


def runc_spec(*flags: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["runc", "spec", *flags], cwd=tmp, check=True, capture_output=True)
        with open(os.path.join(tmp, "config.json")) as f:
            doc: dict[str, Any] = json.load(f)
            return doc


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
@pytest.mark.parametrize("rootless", [False, True])
def test_equals_runc_spec(rootless: bool) -> None:
    expected = runc_spec("--rootless") if rootless else runc_spec()
    assert default_spec(rootless=rootless) == expected


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_is_valid_and_fresh(rootless: bool) -> None:
    a = default_spec(rootless=rootless)
    validate_config(a)
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    a["linux"]["maskedPaths"].clear()
    b = default_spec(rootless=rootless)
    assert "CAP_SYS_ADMIN" not in b["process"]["capabilities"]["bounding"]
    assert b["linux"]["maskedPaths"]


def test_rootless_maps_the_caller() -> None:
    linux = default_spec(rootless=True)["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert {"type": "network"} not in linux["namespaces"]


def test_args() -> None:
    args = ["/bin/echo", "hi"]
    spec = default_spec(args=args)
    assert spec["process"]["args"] == args
    assert spec["process"]["args"] is not args
    assert default_spec()["process"]["args"] == ["sh"]


def test_docker_default_caps_mask() -> None:
    assert len(DOCKER_DEFAULT_CAPS) == len(set(DOCKER_DEFAULT_CAPS)) == 14
    mask = 0
    for cap in DOCKER_DEFAULT_CAPS:
        mask |= 1 << CAP_NUMBERS[cap]
    assert mask == 0xA80425FB  # catalogue case 11: CapBnd = CapPrm = CapEff


def test_masked_and_readonly_paths() -> None:
    # Catalogue case 15: moby's list, which covers everything runc's example masks.
    runc_masked = default_spec()["linux"]["maskedPaths"]
    assert set(runc_masked) <= set(DEFAULT_MASKED_PATHS)
    for p in ("/proc/interrupts", "/sys/devices/virtual/powercap", "/proc/kcore", "/proc/keys",
              "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"):
        assert p in DEFAULT_MASKED_PATHS
    # Case 16.
    assert DEFAULT_READONLY_PATHS == (
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
    )
    doc = default_spec()
    doc["linux"]["maskedPaths"] = list(DEFAULT_MASKED_PATHS)
    doc["process"]["capabilities"] = {k: list(DOCKER_DEFAULT_CAPS)
                                      for k in ("bounding", "effective", "permitted")}
    validate_config(doc)
