"""benchmarks/vm_boot.py still runs: one round of isobox's VM against the hand-written QEMU
(both boot the real kernel under TCG, so both halves of the comparison must work), and the
benchmark leaves nothing behind in its throw-away root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (VMs, cgroups)")]

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "vm_boot.py"


def test_vm_boot_benchmark_one_round() -> None:
    p = subprocess.run([sys.executable, str(BENCH), "--rounds", "1", "--skip", "output",
                        "--skip", "memory", "--skip", "snapshot", "--skip", "profile"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "LEFT BEHIND" not in p.stdout
    rows = dict(re.findall(r"^(isobox|qemu)\s+([\d.]+)", p.stdout, re.M))
    assert set(rows) == {"isobox", "qemu"}, p.stdout
    # the bare VM really booted the kernel and ran its /init (not an instant QEMU failure)
    assert float(rows["qemu"]) > 0.5 and float(rows["isobox"]) > 0.5
    assert re.search(r"ratio isobox / bare qemu: [\d.]+x", p.stdout)
