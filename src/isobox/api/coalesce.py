"""Identical read-only requests that pile up share one computation.

A container list costs tens of milliseconds of Python per request (an inspect per
container), and the interpreter runs one thread at a time: 50 clients asking at once would
wait for 50 computations in a row. Instead, requests with the same key that arrive while one
is being computed wait for the *next* computation and share its answer. Each answer is
computed after every request it serves arrived, so a client never sees state older than its
request (a container it has just created is listed). At most one computation per key runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class _Flight(Generic[T]):
    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, _Flight[T]] = {}
        self._pending: dict[Hashable, _Flight[T]] = {}

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            flight = self._pending.get(key)
            leader = flight is None
            if flight is None:
                flight = self._pending[key] = _Flight()
            ahead = self._running.get(key)
        if leader:
            if ahead is not None:
                ahead.done.wait()
            with self._lock:  # from here, new arrivals wait for the computation after this
                del self._pending[key]
                self._running[key] = flight
            try:
                flight.result = compute()
            except BaseException as e:
                flight.error = e
            finally:
                with self._lock:
                    del self._running[key]
                flight.done.set()
        else:
            flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return flight.result  # type: ignore[return-value]
