"""The `Store` on PostgreSQL: the shared SQL store with PostgreSQL's connections and writer."""

from __future__ import annotations

from hubproxy.store.postgres.db import STATEMENTS, PgConnection, PgWriter, connect
from hubproxy.store.postgres.instances import Heart
from hubproxy.store.sql.store import SQLStore


class PostgresStore(SQLStore):
    def __init__(
        self, url: str, *, create: bool = False, holder: str | None = None, request_prefix: str | None = None
    ) -> None:
        """A server instance gives its lease `holder` name and the `request_prefix` of its request ids:
        it then beats, and what it holds is settled by another instance if it dies."""
        self.url = url
        heart = Heart(holder, request_prefix) if holder and request_prefix else None
        super().__init__(PgWriter(url, heart), connect(url) if create else None, holder)

    def connect(self) -> PgConnection:
        return connect(self.url)

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "database_statements": STATEMENTS[0]}
