"""Identical concurrent list requests share one computation (api/coalesce.py), never one that
started before they arrived; and the server's listen backlog takes a burst of clients."""

from __future__ import annotations

import json
import threading
import time

import pytest
from api_helpers import ApiServer, raw
from engine_helpers import Isobox

from isobox.api.coalesce import Coalescer

pytestmark = pytest.mark.engine


def test_requests_arriving_during_a_computation_share_the_next_one() -> None:
    c: Coalescer[tuple[int, float]] = Coalescer()
    started: list[float] = []
    lock = threading.Lock()
    running = 0
    overlap = False

    def compute() -> tuple[int, float]:
        nonlocal running, overlap
        with lock:
            running += 1
            overlap = overlap or running > 1
            t = time.monotonic()
            started.append(t)
        time.sleep(0.1)
        with lock:
            running -= 1
        return len(started), t

    arrivals: list[tuple[float, tuple[int, float]]] = []

    def client(delay: float) -> None:
        time.sleep(delay)
        t = time.monotonic()
        r = c.run("k", compute)
        with lock:
            arrivals.append((t, r))

    threads = [threading.Thread(target=client, args=(i * 0.01,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap  # one computation at a time per key
    # A computation takes 0.1 s and a request waits for at most the next one to start: 30
    # requests arriving over ~0.3 s (longer when the host is loaded and the threads start
    # late) share a handful of computations, not one each.
    spread = max(t for t, _ in arrivals) - min(t for t, _ in arrivals)
    assert len(started) <= spread / 0.1 + 2, (len(started), spread)
    assert len(started) <= 10
    for arrived, (_, computed_at) in arrivals:
        assert computed_at >= arrived  # never an answer computed before the request came
    with pytest.raises(ValueError):  # errors reach every sharer
        c.run("bad", lambda: (_ for _ in ()).throw(ValueError("x")))


def test_a_burst_of_list_requests_is_served(api_server: ApiServer, isobox: Isobox) -> None:
    created = []
    for _ in range(5):
        status, _, body = raw(api_server.socket_path, "POST", "/containers/create",
                              {"Image": "busybox", "Cmd": ["true"]})
        assert status == 201
        created.append(json.loads(body)["Id"])
    results: list[tuple[int, list[str]]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(60)

    def one() -> None:
        barrier.wait()
        try:
            status, _, body = raw(api_server.socket_path, "GET", "/containers/json?all=1")
            results.append((status, [c["Id"] for c in json.loads(body)]))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []  # more clients than socketserver's default backlog of 5
    assert len(results) == 60
    for status, ids in results:
        assert status == 200 and set(created) <= set(ids)
    status, _, body = raw(api_server.socket_path, "GET", "/containers/json?filters=x")
    assert status == 400  # a shared computation's error is each request's
