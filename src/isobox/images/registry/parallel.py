"""Run the blob jobs of a pull or push on a few threads.

What ``ThreadPoolExecutor`` gave these two callers, without ``concurrent.futures``, whose
import brings ``logging`` (~5 ms of every pull and push here).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def run_all(jobs: Sequence[Callable[[], T]], workers: int, name: str) -> list[T]:
    """Run every job on up to ``workers`` threads and wait for all of them; then raise the
    error of the first job (in order) that failed, or return the results in order."""
    results: list[T | None] = [None] * len(jobs)
    errors: list[BaseException | None] = [None] * len(jobs)
    pending = iter(range(len(jobs)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(pending, None)
            if i is None:
                return
            try:
                results[i] = jobs[i]()
            except BaseException as e:  # handed to the caller below
                errors[i] = e

    threads = [threading.Thread(target=work, name=f"{name}-{k}")
               for k in range(max(1, min(workers, len(jobs))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results  # type: ignore[return-value]  # every job returned
