"""run_all: the thread pool of pull and push."""

from __future__ import annotations

import threading
import time

import pytest

from isobox.images.registry.parallel import run_all


def test_results_in_order_on_bounded_threads() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def job(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return i * i

    assert run_all([lambda i=i: job(i) for i in range(9)], 3, "t") == [i * i for i in range(9)]
    assert peak == 3


def test_first_error_in_order_is_raised_after_every_job_ran() -> None:
    done: list[int] = []

    def job(i: int) -> int:
        time.sleep(0.05 if i == 1 else 0)
        done.append(i)
        if i in (1, 3):
            raise ValueError(f"job {i}")
        return i

    with pytest.raises(ValueError, match="job 1"):
        run_all([lambda i=i: job(i) for i in range(5)], 2, "t")
    assert sorted(done) == [0, 1, 2, 3, 4]


def test_no_jobs() -> None:
    assert run_all([], 4, "t") == []
