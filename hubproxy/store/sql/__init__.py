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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

WRITERS = 7_242_001  # the advisory lock every PostgreSQL write transaction takes first


class Connection(Protocol):
    """What the SQL functions use of a connection: SQLite's (`sqlite/db.py`, a `sqlite3.Connection`),
    or PostgreSQL's `PgConnection` (`postgres/db.py`). Rows are DB-API rows (tuples)."""

    dialect: Dialect

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def value(self, sql: str, parameters: Any, /) -> Any:
        """The first column of the query's first row (on PostgreSQL's writer sending a batch as one
        pipeline: a `postgres.db.Later`, read once the batch is sent)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Dialect:
    """How a backend words what its SQL does not share: the statement that begins a write
    transaction, a lock every write transaction takes first, and the errors a BEGIN raises when the
    database is held too long (turned into one line by `explain_busy`)."""

    name: str
    begin: str
    first_lock: str
    busy: tuple[type[BaseException], ...]
    explain_busy: Callable[[Any, BaseException], BaseException]


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """BEGIN … COMMIT, the write lock taken up front (the dialect's `begin` and `first_lock`) so that a
    busy database waits rather than fails late.

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
    dialect = conn.dialect
    try:
        conn.execute(dialect.begin)
    except dialect.busy as exc:
        raise dialect.explain_busy(conn, exc) from None
    try:
        if dialect.first_lock:
            conn.execute(dialect.first_lock)
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
