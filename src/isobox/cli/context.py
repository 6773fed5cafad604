"""What every ``isobox`` command shares: the store root and lazily opened stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.images.snapshots import Snapshots
    from isobox.images.store import ImageStore


@dataclass
class CliContext:
    root: str
    _store: ImageStore | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from isobox.engine.engine import Engine

            self._engine = Engine(self.root, store=self.store)
        return self._engine

    @property
    def store(self) -> ImageStore:
        if self._store is None:
            from isobox.images.store import ImageStore

            self._store = ImageStore(self.root)
        return self._store

    @property
    def snapshots(self) -> Snapshots:
        from isobox.images.snapshots import Snapshots

        return Snapshots(self.store)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        if self._store is not None:
            self._store.close()
