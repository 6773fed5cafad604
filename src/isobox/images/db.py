"""The image index: one SQLite database (WAL) mapping references to images, images to their
layers, and recording which unpacked layers, snapshots and build-cache entries exist.

Rows are written only after the content they name is committed to disk, inside one
transaction, so an interrupted import leaves no visible image.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from isobox.sqlitedb import open_wal, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS images(
  id TEXT PRIMARY KEY,               -- digest of the config blob (Docker's image ID)
  manifest_digest TEXT NOT NULL,
  manifest_media_type TEXT NOT NULL,
  created TEXT NOT NULL DEFAULT '',
  platform TEXT NOT NULL DEFAULT '',
  size INTEGER NOT NULL,             -- sum of uncompressed layer sizes
  intermediate INTEGER NOT NULL DEFAULT 0,   -- a build-cache step, hidden from `image ls`
  added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS image_layers(
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  diff_id TEXT NOT NULL,
  blob_digest TEXT NOT NULL,
  blob_size INTEGER NOT NULL,
  media_type TEXT NOT NULL,
  PRIMARY KEY(image_id, position));
CREATE TABLE IF NOT EXISTS refs(
  name TEXT PRIMARY KEY,             -- registry/repo:tag or registry/repo@digest
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS layers(
  diff_id TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots(
  id TEXT PRIMARY KEY,
  image_id TEXT,                     -- the image it was made from (blocks rmi), may be NULL
  layers TEXT NOT NULL,              -- JSON list of diff_ids, lowest first
  kind TEXT NOT NULL,
  created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS build_cache(
  key TEXT PRIMARY KEY,
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS image_layers_diff ON image_layers(diff_id);
CREATE INDEX IF NOT EXISTS refs_image ON refs(image_id);
"""


@dataclass(frozen=True)
class LayerRow:
    """One layer of the store: its diff ID and the blob it came from."""

    diff_id: str
    blob_digest: str
    blob_size: int
    media_type: str


@dataclass(frozen=True)
class ImageRow:
    """One image of the store, as its database row."""

    id: str
    manifest_digest: str
    manifest_media_type: str
    created: str
    platform: str
    size: int
    intermediate: bool
    added: float


class ImageDB:
    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = open_wal(path, SCHEMA, foreign_keys=True)

    def close(self) -> None:
        self.conn.close()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.conn)

    # images -------------------------------------------------------------------------------
    def add_image(self, row: ImageRow, layers: list[LayerRow], refs: list[str]) -> None:
        with self.tx() as c:
            c.execute("INSERT OR IGNORE INTO images VALUES(?,?,?,?,?,?,?,?)",
                      (row.id, row.manifest_digest, row.manifest_media_type, row.created,
                       row.platform, row.size, int(row.intermediate), row.added))
            if not row.intermediate:
                c.execute("UPDATE images SET intermediate=0 WHERE id=?", (row.id,))
            c.execute("UPDATE images SET manifest_digest=?, manifest_media_type=? WHERE id=?",
                      (row.manifest_digest, row.manifest_media_type, row.id))
            c.execute("DELETE FROM image_layers WHERE image_id=?", (row.id,))
            c.executemany("INSERT INTO image_layers VALUES(?,?,?,?,?,?)",
                          [(row.id, i, la.diff_id, la.blob_digest, la.blob_size, la.media_type)
                           for i, la in enumerate(layers)])
            for ref in refs:
                c.execute("INSERT OR REPLACE INTO refs VALUES(?,?)", (ref, row.id))

    def image(self, image_id: str) -> ImageRow | None:
        r = self.conn.execute("SELECT * FROM images WHERE id=?", (image_id,)).fetchone()
        return _image_row(r) if r else None

    def images(self, *, include_intermediate: bool = False) -> list[ImageRow]:
        q = "SELECT * FROM images" + ("" if include_intermediate else " WHERE intermediate=0")
        return [_image_row(r) for r in self.conn.execute(q + " ORDER BY added DESC")]

    def image_ids_with_prefix(self, prefix: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM images WHERE substr(id, 8, ?) = ?", (len(prefix), prefix))]

    def layers_of(self, image_id: str) -> list[LayerRow]:
        return [LayerRow(*r) for r in self.conn.execute(
            "SELECT diff_id, blob_digest, blob_size, media_type FROM image_layers "
            "WHERE image_id=? ORDER BY position", (image_id,))]

    def delete_image(self, image_id: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM images WHERE id=?", (image_id,))

    # references -------------------------------------------------------------------------
    def ref(self, name: str) -> str | None:
        r = self.conn.execute("SELECT image_id FROM refs WHERE name=?", (name,)).fetchone()
        return str(r[0]) if r else None

    def refs_of(self, image_id: str) -> list[str]:
        return sorted(r[0] for r in self.conn.execute(
            "SELECT name FROM refs WHERE image_id=?", (image_id,)))

    def all_refs(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT name, image_id FROM refs"))

    def set_ref(self, name: str, image_id: str) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO refs VALUES(?,?)", (name, image_id))

    def delete_ref(self, name: str) -> bool:
        with self.tx() as c:
            return c.execute("DELETE FROM refs WHERE name=?", (name,)).rowcount > 0

    # unpacked layers --------------------------------------------------------------------
    def add_layer(self, diff_id: str, size: int) -> None:
        with self.tx() as c:
            c.execute("INSERT OR IGNORE INTO layers VALUES(?,?,?)", (diff_id, size, time.time()))

    def has_layer(self, diff_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM layers WHERE diff_id=?",
                                 (diff_id,)).fetchone() is not None

    def layer_sizes(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT diff_id, size FROM layers"))

    def delete_layer(self, diff_id: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM layers WHERE diff_id=?", (diff_id,))

    def blob_for_diff(self, diff_id: str) -> LayerRow | None:
        r = self.conn.execute("SELECT diff_id, blob_digest, blob_size, media_type FROM "
                              "image_layers WHERE diff_id=? LIMIT 1", (diff_id,)).fetchone()
        return LayerRow(*r) if r else None

    # snapshots --------------------------------------------------------------------------
    def add_snapshot(self, snap_id: str, image_id: str | None, layers: list[str],
                     kind: str) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO snapshots VALUES(?,?,?,?,?)",
                      (snap_id, image_id, json.dumps(layers), kind, time.time()))

    def snapshot(self, snap_id: str) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT id, image_id, layers, kind, created FROM snapshots "
                              "WHERE id=?", (snap_id,)).fetchone()
        if r is None:
            return None
        return {"id": r[0], "image_id": r[1], "layers": json.loads(r[2]), "kind": r[3],
                "created": r[4]}

    def snapshots(self) -> list[dict[str, Any]]:
        return [s for r in self.conn.execute("SELECT id FROM snapshots")
                if (s := self.snapshot(r[0])) is not None]

    def snapshots_of_image(self, image_id: str) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM snapshots WHERE image_id=?",
                                                (image_id,))]

    def delete_snapshot(self, snap_id: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM snapshots WHERE id=?", (snap_id,))

    # build cache ------------------------------------------------------------------------
    def cache_get(self, key: str) -> str | None:
        r = self.conn.execute("SELECT image_id FROM build_cache WHERE key=?", (key,)).fetchone()
        return str(r[0]) if r else None

    def cache_put(self, key: str, image_id: str) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO build_cache VALUES(?,?,?)",
                      (key, image_id, time.time()))

    def cache_clear(self) -> int:
        with self.tx() as c:
            return c.execute("DELETE FROM build_cache").rowcount


def _image_row(r: tuple[Any, ...]) -> ImageRow:
    return ImageRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7])
