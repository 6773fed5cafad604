"""Which registry repositories a blob is known to exist in (learnt on pull and push), so a
push can ask for a cross-repository mount instead of uploading the bytes again.

One table of its own in the store's database, created on first use."""

from __future__ import annotations

import time

from isobox.images.store import ImageStore

SCHEMA = """CREATE TABLE IF NOT EXISTS blob_sources(
  digest TEXT NOT NULL,
  registry TEXT NOT NULL,
  repository TEXT NOT NULL,
  added REAL NOT NULL,
  PRIMARY KEY(digest, registry, repository))"""


def _ensure(store: ImageStore) -> None:
    store.db.conn.execute(SCHEMA)


def record_sources(store: ImageStore, registry: str, repository: str,
                   digests: list[str]) -> None:
    _ensure(store)
    now = time.time()
    with store.db.tx() as c:
        c.executemany("INSERT OR REPLACE INTO blob_sources VALUES(?,?,?,?)",
                      [(d, registry, repository, now) for d in digests])


def sources_of(store: ImageStore, digest: str, registry: str) -> list[str]:
    """Repositories of ``registry`` that had ``digest``, most recent first."""
    _ensure(store)
    return [r[0] for r in store.db.conn.execute(
        "SELECT repository FROM blob_sources WHERE digest=? AND registry=? "
        "ORDER BY added DESC LIMIT 5", (digest, registry))]
