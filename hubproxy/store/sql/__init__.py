"""The SQL both backends run: users, keys and the ledger (`accounts`), usage and reservations
(`usage`), balance leases (`leases`), shared limit counters (`limits`), and the `Store` built on them
(`store`). Each function takes a DB-API connection: `sqlite3`'s, or the PostgreSQL adapter of
`store/postgres/db.py`, which takes the same `?` placeholders. The statements keep to what both
dialects share (`ON CONFLICT … DO UPDATE` with its target, `RETURNING`, no SQLite-only functions).

SQLite runs one writer at a time, so a read followed by a write in one transaction is safe there.
On PostgreSQL every write transaction begins by taking one advisory lock (`WRITERS`), so the
instances' writers take turns as `serve --workers` processes do on SQLite: the read-then-write code
(leases, spend caps, the change counter) stays correct, and batches that touch the same users and
daily rows in different orders cannot deadlock. A batch holds it for a few milliseconds; the hot
path commits one batch per many calls.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any, Protocol

WRITERS = 7_242_001  # the advisory lock every PostgreSQL write transaction takes first


class Connection(Protocol):
    """What the SQL functions use of a connection: `sqlite3.Connection`, or PostgreSQL's
    `PgConnection` (store/postgres/db.py). Rows are DB-API rows (tuples)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """BEGIN IMMEDIATE … COMMIT: take the write lock up front so a busy database waits, not fails late.

    Inside a transaction already (a function run by the writer thread), it is a savepoint instead,
    so the same account functions serve the CLI and the server.
    """
    if conn.in_transaction:
        conn.execute("SAVEPOINT nested")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO nested")
            conn.execute("RELEASE nested")
            raise
        conn.execute("RELEASE nested")
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        from hubproxy.store.sqlite.db import explain_busy

        raise explain_busy(conn, exc) from None
    try:
        if conn.__class__ is not sqlite3.Connection:
            conn.execute(f"SELECT pg_advisory_xact_lock({WRITERS})")
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
