"""The exit and health hooks of a container whose root was deleted meanwhile (a test root
torn down while a container still ran) make nothing anew: no root, no run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(("hook", "status"), [("exit_hook", 0), ("health_hook", 1)])
def test_a_hook_of_a_deleted_root_makes_nothing(tmp_path: Path, hook: str, status: int) -> None:
    root, run_dir = tmp_path / "gone-root", tmp_path / "gone-run"
    p = subprocess.run([sys.executable, "-I", "-m", f"isobox.engine.{hook}", "--root",
                        str(root), "--run-dir", str(run_dir), "0" * 64],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert (p.returncode, p.stderr) == (status, "")
    assert not root.exists() and not run_dir.exists()
