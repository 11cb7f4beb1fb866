"""The SQL both backends run: users, keys and the ledger (`accounts`), usage and reservations
(`usage`), balance leases (`leases`), shared limit counters (`limits`), and the `Store` built on them
(`store`). Each function takes a DB-API connection: `sqlite3`'s, or the PostgreSQL adapter of
`store/postgres/db.py`, which takes the same `?` placeholders. The statements keep to what both
dialects share (`ON CONFLICT … DO UPDATE` with its target, `RETURNING`, no SQLite-only functions).

SQLite runs one writer at a time, so a read followed by a write in one transaction is safe there;
PostgreSQL runs writers side by side, so such code first takes `lock(conn, …)`, a no-op on SQLite.
"""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from collections.abc import Iterator
from typing import Any


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
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def lock(conn: Any, name: str, *ids: object) -> None:
    """Serialize, until this transaction ends, the writers that read then write what `name` and `ids`
    name (a user's unpromised money, a key's spend cap, the change counter). SQLite has one writer
    at a time already; PostgreSQL takes a transaction-scoped advisory lock."""
    if conn.__class__ is sqlite3.Connection:
        return
    for item in ids or (0,):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(f"{name}:{item}".encode()) - 2**31,))
