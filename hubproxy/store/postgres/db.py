"""PostgreSQL connections that run the SQL written for SQLite, and the writer thread on them.

`PgConnection` wraps a psycopg 3 connection (autocommit, so `BEGIN`/`COMMIT` are the SQL's own, as
with `sqlite3` in autocommit mode) and takes `?` placeholders. Python bools are written as 0/1 (the
columns are integers, as in SQLite) and whole `numeric` results (`sum()` of BIGINT) come back as
ints, so the shared SQL functions see the same values from both backends.

The writer is SQLite's (`sqlite/db.py`: one thread, a transaction per batch) with two differences:
PostgreSQL has no commit counter to watch, so it looks for changed rows every `WATCH_INTERVAL`
(three indexed queries); and there is no write-ahead log to checkpoint.
"""

from __future__ import annotations

import functools
import logging
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import adapt
from psycopg.pq import TransactionStatus

from hubproxy.store import redacted
from hubproxy.store.postgres.instances import Heart
from hubproxy.store.records import DatabaseError
from hubproxy.store.sqlite.db import Writer

log = logging.getLogger("hubproxy.store")

WATCH_INTERVAL = 0.25  # a change made through another instance is seen within this (README: 1 s)
CONNECT_TIMEOUT = 5


class IntFromBool(adapt.Dumper):
    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class WholeNumeric(adapt.Loader):
    def load(self, data: Any) -> int | Decimal:
        text = bytes(data).decode()
        return int(text) if text.lstrip("-").isdigit() else Decimal(text)


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite's SQL with parameters, in psycopg's placeholders (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection with `sqlite3.Connection`'s surface as the shared SQL uses it."""

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: tuple | list | None = None) -> psycopg.Cursor:
        if sql == "BEGIN IMMEDIATE":  # SQLite's write lock up front; PostgreSQL locks rows as it goes
            sql = "BEGIN"
        if params is None:
            return self.raw.execute(sql)
        return self.raw.execute(translate(sql), params)

    def executemany(self, sql: str, rows: Any) -> psycopg.Cursor:
        cursor = self.raw.cursor()
        rows = list(rows)
        if rows:
            cursor.executemany(translate(sql), rows)
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str, *, create: bool = False) -> PgConnection:
    """Connect and bring the schema up to date (`create` is implied: the database must exist, its
    tables are made here)."""
    from hubproxy.store.postgres.migrations import migrate

    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot reach PostgreSQL at {redacted(url)}: {first_line(exc)}") from None
    raw.adapters.register_dumper(bool, IntFromBool)
    raw.adapters.register_loader("numeric", WholeNumeric)
    conn = PgConnection(raw)
    try:
        migrate(conn)
    except psycopg.Error as exc:
        conn.close()
        raise DatabaseError(f"PostgreSQL at {redacted(url)}: {first_line(exc)}") from None
    return conn


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class PgWriter(Writer):
    """The writer thread on PostgreSQL (see the module's docstring); with a `heart`, it also beats for
    this instance and settles what dead ones left (`instances.py`)."""

    def __init__(self, url: str, heart: Heart | None = None) -> None:
        super().__init__(url)  # type: ignore[arg-type]
        self.url = url
        self.heart = heart
        self.watch_interval = WATCH_INTERVAL

    def _tick(self, conn: Any) -> None:
        if self.heart is not None:
            self.heart.tick(conn)

    async def close(self) -> None:
        if self.heart is not None and self._thread is not None:
            self.submit(self.heart.stop)
        await super().close()

    def _open(self) -> PgConnection:
        return connect(self.url)

    def _changed(self, conn: Any) -> bool:
        return True

    def _checkpoint(self, conn: Any) -> None:
        self._unchecked = 0
