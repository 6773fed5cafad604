"""OCI conformance, differential: isobox-runtime must pass every assertion that runc 1.1
passes on this host (scripts/conformance.py: runtime-tools-style validation tests, with a
runtimetest built offline from Debian's Go packages)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import conformance  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUILD_DIR = os.environ.get("ISOBOX_CONFORMANCE_BUILD_DIR", conformance.DEFAULT_BUILD_DIR)

# (test, assertion) that runc passes only by an accident of its Go implementation, not
# because the runtime-spec requires it: none so far. Anything else that runc passes and
# isobox-runtime fails is a bug of isobox-runtime.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}

# What the harness had to clean up after isobox-runtime's own `delete` (or `delete --force`
# by the cleanup) would be a leak of the runtime: processes, mounts, cgroups.
LEAKS = ("killed process", "unmounted", "removed cgroup")


def _runtimes() -> list[str]:
    runc = shutil.which("runc") or "/usr/sbin/runc"
    ours = conformance.default_runtimes()[1]
    return [runc, ours]


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, dict[str, Any]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    runc, ours = _runtimes()
    if not os.path.exists(runc):
        pytest.skip("runc is not installed (apt-get install runc)")
    if not shutil.which("go") and not os.path.exists("/usr/bin/go"):
        pytest.skip("Go is not installed (apt-get install "
                    + " ".join(conformance.APT_PACKAGES) + ")")
    yield conformance.run_suite([runc, ours], BUILD_DIR, timeout=60, log=lambda _: None)


@pytest.mark.parametrize("name", list(conformance.TESTS))
def test_isobox_passes_what_runc_passes(results: dict[str, dict[str, Any]], name: str) -> None:
    runc, ours = _runtimes()
    missing = [
        f"{desc}: {' | '.join(diag[:4])}"
        for test, desc, diag in conformance.regressions({name: results[name]}, runc, ours)
        if (test, desc) not in KNOWN_EXCEPTIONS
    ]
    assert not missing, f"{name}: runc passes, isobox-runtime fails:\n" + "\n".join(missing)


def test_isobox_leaves_nothing_behind(results: dict[str, dict[str, Any]]) -> None:
    ours = _runtimes()[1]
    leaks = [f"{name}: {item}" for name, by_rt in results.items()
             for item in by_rt[ours].leftovers if item.startswith(LEAKS)]
    assert not leaks, "\n".join(leaks)


def test_report_has_totals(results: dict[str, dict[str, Any]]) -> None:
    text = conformance.report(results, _runtimes())
    assert "TOTAL" in text
    totals = {r: sum(o.tap.passed for o in (by[r] for by in results.values()))
              for r in _runtimes()}
    assert totals[_runtimes()[1]] >= totals[_runtimes()[0]], text
