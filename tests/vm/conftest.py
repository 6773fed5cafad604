"""Fixtures of the VM tests: per-test and per-session scratch directories (removed afterwards)
and the guest kernel, decompressed once per session into the session cache."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import RUN_PREFIX
from isobox.vm.kernel import GuestKernel, guest_kernel


@pytest.fixture(scope="session")
def vm_cache() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-vmcache-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def vm_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-vm-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def host_kernel(vm_cache: Path) -> GuestKernel:
    return guest_kernel(vm_cache)
