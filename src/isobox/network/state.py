"""The network state file: one JSON document, replaced atomically, mutations under flock.

Layout::

    {"networks":  {name: NetworkInfo fields without "containers"},
     "endpoints": {name: {container_id: Endpoint fields}},
     "ports":     {container_id: [{"network", "ip", PortMapping fields}]},
     "last_ip":   {name: int}, "last_port": int, "next_bridge": int}

IP leases are the endpoints' addresses; readers never need the lock (rename is atomic).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from isobox import fastjson
from isobox.errors import SystemSetupError
from isobox.filelock import locked_file

State = dict[str, Any]


def empty() -> State:
    return {"networks": {}, "endpoints": {}, "ports": {}, "last_ip": {}, "last_port": 0}


class StateFile:
    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.path = os.path.join(state_dir, "networks.json")
        self.lock_path = os.path.join(state_dir, "lock")

    def load(self) -> State:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return empty()
        try:
            state: State = fastjson.loads(data)
        except ValueError as e:
            raise SystemSetupError(f"{self.path}: corrupt network state: {e}") from None
        for key, value in empty().items():
            state.setdefault(key, value)
        return state

    def save(self, state: State) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, fastjson.dumps(state).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path)

    @contextmanager
    def locked(self) -> Iterator[State]:
        """Hold the lock and yield the current state; the caller saves what it changed."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with locked_file(self.lock_path):
            yield self.load()
