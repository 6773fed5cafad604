#!/usr/bin/env python3
"""The Docker API: docker-py's `containers.run("busybox", "true", remove=True)` against
`isobox serve` and against `podman system service` (runc), alternating; then, with 100
created containers on each, 50 concurrent `GET /containers/json?all=1` (p50/p99 latency).

Both servers run from throw-away stores (bench_common's IsoboxEnv / PodmanEnv: own roots, own
bridge and nft names) on their own unix sockets in those directories.

Usage: benchmarks/api.py [--rounds 30] [--containers 100] [--clients 50] [--batches 10]
                         [--no-peer] [--profile]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import docker
from bench_common import IsoboxEnv, PodmanEnv, med, pct
from docker.types import Ulimit

# podman's default rlimits are over this machine's hard limits (bench_common.PODMAN_ULIMITS);
# both engines get the same ones
ULIMITS = [Ulimit(name="nofile", soft=1024, hard=20000), Ulimit(name="nproc", soft=4096,
                                                                  hard=4096)]


class Server:
    """A server process listening on a unix socket; stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], sock: str, env: dict[str, str] | None,
                 log: str) -> None:
        self.name, self.sock, self.log = name, sock, log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.tail()}")
            try:
                if get(sock, "/_ping")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{name} did not answer on {sock}: {self.tail()}")

    def tail(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def get(sock: str, path: str) -> tuple[int, bytes]:
    """One request on a fresh connection (as the docker CLI makes them)."""
    conn = _Unix(sock)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def start_isobox(iso: IsoboxEnv) -> Server:
    sock = os.path.join(iso.root, "api.sock")
    # --group root: no `isobox` group is created on the host for the benchmark
    return Server("isobox serve", iso.argv("serve", "--socket", sock, "--group", "root"), sock,
                  iso.env, os.path.join(iso.root, "serve.log"))


def start_podman(pod: PodmanEnv) -> Server:
    sock = os.path.join(pod.dir, "podman.sock")
    # events on: without them podman's `logs?follow=1` (docker-py's run) never sees the exit
    argv = [a if a != "none" else "file" for a in pod.argv("system", "service", "--time=0",
                                                           f"unix://{sock}")]
    return Server("podman system service", argv, sock, None,
                  os.path.join(pod.dir, "service.log"))


def client(sock: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{sock}", version="1.41", timeout=120)


def compare(servers: dict[str, Server], rounds: int) -> dict[str, float]:
    clients = {n: client(s.sock) for n, s in servers.items()}
    medians: dict[str, float] = {}
    for net in ("default", "none"):
        kw: dict[str, Any] = {"remove": True, "ulimits": ULIMITS}
        if net == "none":
            kw["network_mode"] = "none"

        def run(c: docker.DockerClient, kw: dict[str, Any] = kw) -> float:
            t = time.perf_counter()
            c.containers.run("busybox", "true", **kw)
            return time.perf_counter() - t

        for c in clients.values():  # warm-up: page cache, bridge creation
            run(c)
            run(c)
        times: dict[str, list[float]] = {n: [] for n in clients}
        for i in range(rounds):
            order = list(clients.items()) if i % 2 == 0 else list(clients.items())[::-1]
            for name, c in order:
                times[name].append(run(c))
        print(f"\ndocker-py containers.run('busybox', 'true', remove=True), network {net}, "
              f"{rounds} rounds, alternating")
        print(f"{'server':<24}{'median ms':>11}{'p95 ms':>9}{'min ms':>9}")
        for name, xs in times.items():
            print(f"{name:<24}{med(xs) * 1000:>11.1f}{pct(xs, 0.95) * 1000:>9.1f}"
                  f"{min(xs) * 1000:>9.1f}")
            medians[f"{name}/{net}"] = med(xs)
        if len(times) == 2:
            r = med(times["isobox serve"]) / med(times["podman system service"])
            print(f"ratio isobox / podman: {r:.2f}x (median; target <= 0.5x: "
                  f"{'met' if r <= 0.5 else 'NOT met'})")
    for c in clients.values():
        c.close()
    return medians


def concurrent_list(servers: dict[str, Server], containers: int, clients: int,
                    batches: int) -> None:
    made: dict[str, list[str]] = {}
    for name, s in servers.items():
        c = client(s.sock)
        made[name] = [c.containers.create("busybox", "true", ulimits=ULIMITS).id
                      for _ in range(containers)]
        c.close()
    print(f"\n{clients} concurrent GET /containers/json?all=1 with {containers} created "
          f"containers, {batches} batches (a fresh connection per request)")
    print(f"{'server':<24}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'batch wall ms':>15}"
          f"{'entries':>9}")
    lat: dict[str, list[float]] = {n: [] for n in servers}
    walls: dict[str, list[float]] = {n: [] for n in servers}
    sizes: dict[str, int] = {}
    for i in range(batches):
        order = list(servers.items()) if i % 2 == 0 else list(servers.items())[::-1]
        for name, s in order:
            walls[name].append(_batch(s.sock, clients, lat[name], sizes, name))
    for name in servers:
        xs = lat[name]
        print(f"{name:<24}{med(xs) * 1000:>9.1f}{pct(xs, 0.99) * 1000:>9.1f}"
              f"{max(xs) * 1000:>9.1f}{med(walls[name]) * 1000:>15.1f}{sizes[name]:>9}")
    for name, s in servers.items():
        c = client(s.sock)
        for cid in made[name]:
            c.api.remove_container(cid, force=True)
        c.close()


def _batch(sock: str, n: int, lat: list[float], sizes: dict[str, int], name: str) -> float:
    import json

    barrier = threading.Barrier(n)
    lock = threading.Lock()
    errors: list[str] = []

    def one() -> None:
        barrier.wait()
        t = time.perf_counter()
        try:
            status, body = get(sock, "/v1.41/containers/json?all=1")
        except OSError as e:
            with lock:
                errors.append(str(e))
            return
        dt = time.perf_counter() - t
        with lock:
            lat.append(dt)
            if status != 200:
                errors.append(f"status {status}")
            else:
                sizes[name] = len(json.loads(body))

    threads = [threading.Thread(target=one) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} requests failed: {errors[:3]}")
    return time.perf_counter() - t0


def profile(iso: IsoboxEnv, rounds: int) -> None:
    """Where one docker-py run's time goes on the isobox side: per request (client-side
    wall time), and the engine calls the same run makes without the API."""
    srv = start_isobox(iso)
    try:
        c = client(srv.sock)
        api = c.api
        steps: dict[str, list[float]] = {}

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            t = time.perf_counter()
            r = fn()
            steps.setdefault(name, []).append(time.perf_counter() - t)
            return r

        for i in range(rounds + 2):
            t0 = time.perf_counter()
            cid = timed("POST /containers/create", lambda: api.create_container(
                "busybox", "true", host_config=api.create_host_config(ulimits=ULIMITS))["Id"])
            timed("POST /containers/{id}/start", lambda cid=cid: api.start(cid))
            timed("POST /containers/{id}/wait", lambda cid=cid: api.wait(cid))
            timed("DELETE /containers/{id}", lambda cid=cid: api.remove_container(cid))
            total = time.perf_counter() - t0
            # the same as docker-py's run does it: logs?follow=1 opened before the wait and
            # read to its end after it
            t1 = time.perf_counter()
            cid = api.create_container("busybox", "true", host_config=api.create_host_config(
                ulimits=ULIMITS))["Id"]
            api.inspect_container(cid)
            api.start(cid)
            logs = api.logs(cid, stream=True, follow=True)
            api.wait(cid)
            tw = time.perf_counter()
            b"".join(logs)
            tail = time.perf_counter() - tw
            api.remove_container(cid)
            with_logs = time.perf_counter() - t1
            if i < 2:
                steps.clear()
                continue
            steps.setdefault("the four together", []).append(total)
            steps.setdefault("+ inspect, logs?follow=1 (docker-py's run)", []).append(with_logs)
            steps.setdefault("  of which: logs end after the wait", []).append(tail)
        c.close()
    finally:
        srv.stop()
    cli = [iso.argv("run", "--rm", "busybox", "true")] * rounds
    from bench_common import timed as timed_cli

    cli_times = [timed_cli(a, iso.env) for a in cli]
    print(f"\nwhere one API run goes (isobox serve, create/start/wait/remove as docker-py "
          f"does them; {rounds} rounds, medians)")
    for name, xs in steps.items():
        print(f"  {name:<46}{med(xs) * 1000:>8.1f} ms")
    print(f"  {'isobox run --rm busybox true (CLI)':<46}{med(cli_times) * 1000:>8.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--no-peer", action="store_true", help="isobox only")
    ap.add_argument("--profile", action="store_true", help="also the per-request breakdown")
    ap.add_argument("--skip", action="append", default=[], choices=("run", "list"))
    args = ap.parse_args()
    iso = IsoboxEnv()
    pod: PodmanEnv | None = None
    servers: dict[str, Server] = {}
    try:
        servers["isobox serve"] = start_isobox(iso)
        if not args.no_peer:
            pod = PodmanEnv(iso)
            v = subprocess.run(pod.argv("--version"), capture_output=True, text=True).stdout
            print(f"peer: {v.strip()} (system service) with runc, private store {pod.dir}")
            servers["podman system service"] = start_podman(pod)
        if "run" not in args.skip:
            compare(servers, args.rounds)
        if "list" not in args.skip:
            concurrent_list(servers, args.containers, args.clients, args.batches)
        for s in servers.values():
            s.stop()
        servers.clear()
        if args.profile:
            profile(iso, args.rounds)
        left = iso.leftovers()
        if left:
            print(f"\nLEFT BEHIND in {iso.root}: {left[:10]}")
        return 0
    finally:
        for s in servers.values():
            s.stop()
        if pod is not None:
            pod.close()
        iso.close()


if __name__ == "__main__":
    sys.exit(main())
