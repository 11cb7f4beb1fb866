"""The `Store` on one SQLite file: the shared SQL store with SQLite's connections and writer."""

from __future__ import annotations

from pathlib import Path

from hubproxy.store.sql.store import SQLStore
from hubproxy.store.sqlite.db import SQLiteConnection, SQLiteWriter, connect


class SQLiteStore(SQLStore):
    def __init__(self, path: Path, *, create: bool = False, shared: bool = False, holder: str | None = None) -> None:
        """`shared`: other server processes write here too (`serve --workers`)."""
        self.path = path
        super().__init__(SQLiteWriter(path, shared=shared), connect(path, create=True) if create else None, holder)

    def connect(self) -> SQLiteConnection:
        return connect(self.path)
