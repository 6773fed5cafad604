"""What every ``isobox`` command shares: the store root and lazily opened stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isobox.api.client import Client
    from isobox.engine.engine import Engine
    from isobox.images.snapshots import Snapshots
    from isobox.images.store import ImageStore


@dataclass
class CliContext:
    """What every command gets: the engine root or a remote host, with its store, engine and
    API client made on first use."""

    root: str
    host: str = ""                        # --host: a remote `isobox serve`, never the local engine
    tls: tuple[str, str, str] = ("", "", "")   # client cert, key, CA for tcp:// hosts
    _store: ImageStore | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    _client: Client | None = field(default=None, repr=False)

    def _local(self) -> None:
        """With --host nothing may run locally (cli/remote.py routes what can go remote)."""
        if self.host:
            from isobox.cli.remote import RemoteUnsupported

            raise RemoteUnsupported("this command")

    @property
    def client(self) -> Client:
        if self._client is None:
            from isobox.api.client import Client

            cert, key, ca = self.tls
            self._client = Client(self.host, tls_cert=cert, tls_key=key, tls_ca=ca)
        return self._client

    @property
    def engine(self) -> Engine:
        self._local()
        if self._engine is None:
            from isobox.engine.engine import Engine

            self._engine = Engine(self.root, store=self.store)
        return self._engine

    @property
    def store(self) -> ImageStore:
        self._local()
        if self._store is None:
            from isobox.images.store import ImageStore

            self._store = ImageStore(self.root)
        return self._store

    @property
    def snapshots(self) -> Snapshots:
        from isobox.images.snapshots import Snapshots

        return Snapshots(self.store)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._engine is not None:
            self._engine.close()
        if self._store is not None:
            self._store.close()
