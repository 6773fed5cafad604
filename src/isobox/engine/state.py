"""The container state store: one SQLite database (WAL) that every ``isobox`` process shares.

A record is inserted first (status ``creating``, with the creating process's pid) so that the
name is reserved atomically; it becomes ``created`` only when everything it names exists. A
``creating`` record whose creator is dead is debris of a killed CLI: ``ps -a`` shows it as
``dead`` and ``system prune`` removes it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from isobox.errors import ConflictError, NotFoundError
from isobox.sqlitedb import open_wal, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  image_id TEXT NOT NULL,
  image_ref TEXT NOT NULL,
  created REAL NOT NULL,
  options TEXT NOT NULL,            -- CreateOptions as JSON
  status TEXT NOT NULL,   -- creating created running paused restarting exited dead removing
  creator_pid INTEGER NOT NULL DEFAULT 0,
  pid INTEGER NOT NULL DEFAULT 0,
  monitor_pid INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER NOT NULL DEFAULT 0,
  oom_killed INTEGER NOT NULL DEFAULT 0,
  started_at REAL NOT NULL DEFAULT 0,
  finished_at REAL NOT NULL DEFAULT 0,
  restart_count INTEGER NOT NULL DEFAULT 0,
  manually_stopped INTEGER NOT NULL DEFAULT 0,
  epoch TEXT NOT NULL DEFAULT '',   -- run-directory epoch the process was started under
  network TEXT NOT NULL DEFAULT '{}',   -- endpoints and published ports while running
  health TEXT NOT NULL DEFAULT '{}',
  error TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  time REAL NOT NULL,
  type TEXT NOT NULL,
  action TEXT NOT NULL,
  actor TEXT NOT NULL,
  attributes TEXT NOT NULL);
"""

_COLUMNS = ("id", "name", "image_id", "image_ref", "created", "options", "status",
            "creator_pid", "pid", "monitor_pid", "exit_code", "oom_killed", "started_at",
            "finished_at", "restart_count", "manually_stopped", "epoch", "network", "health",
            "error")
_JSON = {"options", "network", "health"}


@dataclass
class ContainerRow:
    """One container as the state database holds it."""

    id: str
    name: str
    image_id: str
    image_ref: str
    created: float
    options: dict[str, Any]
    status: str
    creator_pid: int = 0
    pid: int = 0
    monitor_pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    started_at: float = 0.0
    finished_at: float = 0.0
    restart_count: int = 0
    manually_stopped: bool = False
    epoch: str = ""
    network: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def healthcheck_configured(self) -> bool:
        """Whether the container or its image sets a healthcheck (maybe ``NONE``): without
        one there is no checker to start or stop, and :mod:`isobox.engine.health` (~3 ms of
        imports) is not loaded."""
        image_config = self.options.get("image_config") or {}
        return bool(self.options.get("healthcheck") or image_config.get("Healthcheck"))


def _row(r: sqlite3.Row | tuple[Any, ...]) -> ContainerRow:
    values: dict[str, Any] = {}
    for name, value in zip(_COLUMNS, r, strict=True):
        values[name] = json.loads(value) if name in _JSON else value
    values["oom_killed"] = bool(values["oom_killed"])
    values["manually_stopped"] = bool(values["manually_stopped"])
    return ContainerRow(**values)


@dataclass(frozen=True)
class Event:
    """One entry of the event log (``isobox events``, ``GET /events``)."""

    seq: int
    time: float
    type: str
    action: str
    actor: str
    attributes: dict[str, str]


class ContainerDB:
    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = open_wal(path, SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.conn)

    def insert(self, row: ContainerRow) -> None:
        values = [json.dumps(getattr(row, c)) if c in _JSON else getattr(row, c)
                  for c in _COLUMNS]
        try:
            with self.tx() as c:
                c.execute(f"INSERT INTO containers VALUES({','.join('?' * len(_COLUMNS))})",
                          values)
        except sqlite3.IntegrityError:
            other = self.by_name(row.name)
            owner = other.id if other else "?"
            raise ConflictError(
                f'Conflict. The container name "/{row.name}" is already in use by container '
                f'"{owner}". You have to remove (or rename) that container to be able to '
                f"reuse that name.") from None

    def update(self, cid: str, **values: Any) -> None:
        if not values:
            return
        cols = []
        args: list[Any] = []
        for k, v in values.items():
            if k not in _COLUMNS or k == "id":
                raise KeyError(k)
            cols.append(f"{k}=?")
            args.append(json.dumps(v) if k in _JSON else v)
        args.append(cid)
        with self.tx() as c:
            c.execute(f"UPDATE containers SET {', '.join(cols)} WHERE id=?", args)

    def rename(self, cid: str, name: str) -> None:
        try:
            self.update(cid, name=name)
        except sqlite3.IntegrityError:
            other = self.by_name(name)
            raise ConflictError(
                f'Error when allocating new name: Conflict. The container name "/{name}" is '
                f'already in use by container "{other.id if other else "?"}". You have to '
                "remove (or rename) that container to be able to reuse that name.") from None

    def delete(self, cid: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM containers WHERE id=?", (cid,))

    def get(self, cid: str) -> ContainerRow | None:
        r = self.conn.execute(f"SELECT {','.join(_COLUMNS)} FROM containers WHERE id=?",
                              (cid,)).fetchone()
        return _row(r) if r else None

    def by_name(self, name: str) -> ContainerRow | None:
        r = self.conn.execute(f"SELECT {','.join(_COLUMNS)} FROM containers WHERE name=?",
                              (name,)).fetchone()
        return _row(r) if r else None

    def all(self) -> list[ContainerRow]:
        return [_row(r) for r in self.conn.execute(
            f"SELECT {','.join(_COLUMNS)} FROM containers ORDER BY created DESC")]

    def resolve(self, text: str) -> ContainerRow:
        """A container by full id, name (with or without a leading /) or unique id prefix."""
        name = text[1:] if text.startswith("/") else text
        row = self.get(text) or self.by_name(name)
        if row is not None:
            return row
        if text and all(ch in "0123456789abcdef" for ch in text):
            rows = self.conn.execute(
                f"SELECT {','.join(_COLUMNS)} FROM containers WHERE substr(id, 1, ?) = ?",
                (len(text), text)).fetchall()
            if len(rows) == 1:
                return _row(rows[0])
            if len(rows) > 1:
                raise ConflictError(f"multiple containers found with provided prefix: {text}")
        raise NotFoundError(f"No such container: {text}")

    # events -------------------------------------------------------------------------------
    def add_event(self, type_: str, action: str, actor: str,
                  attributes: dict[str, str]) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO events(time, type, action, actor, attributes) "
                      "VALUES(?,?,?,?,?)",
                      (time.time(), type_, action, actor, json.dumps(attributes)))
            # keep the journal bounded, like Docker's in-memory ring of 256 events
            c.execute("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - 10000")

    def events_after(self, seq: int, since: float = 0.0) -> list[Event]:
        return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in
                self.conn.execute("SELECT seq, time, type, action, actor, attributes FROM "
                                  "events WHERE seq > ? AND time >= ? ORDER BY seq",
                                  (seq, since))]

    def last_event_seq(self) -> int:
        r = self.conn.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(r[0] or 0)
