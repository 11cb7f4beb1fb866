"""PostgreSQL connections that run the SQL written for SQLite, and the writer thread on them.

`PgConnection` wraps a psycopg 3 connection (autocommit, so `BEGIN`/`COMMIT` are the SQL's own, as
with `sqlite3` in autocommit mode) and takes `?` placeholders. Python bools are written as 0/1 (the
columns are integers, as in SQLite) and whole `numeric` results (`sum()` of BIGINT) come back as
ints, so the shared SQL functions see the same values from both backends.

The writer is the backends' one (`store/writer.py`: one thread, a transaction per batch) with these
differences from SQLite's:
PostgreSQL has no commit counter to watch, so it looks for changed rows every `WATCH_INTERVAL`
(three indexed queries); there is no write-ahead log to checkpoint; a batch's settlements go in one
pipeline; it beats for its instance; and it rides out the database going away (`_commit`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import adapt
from psycopg.pq import TransactionStatus

from hubproxy.store import redacted
from hubproxy.store.postgres.bulk import json_insert, payloads
from hubproxy.store.postgres.instances import Heart
from hubproxy.store.records import DatabaseError
from hubproxy.store.sql import WRITERS, Dialect
from hubproxy.store.sql.store import CALLS
from hubproxy.store.writer import WRITE_ATTEMPTS, Writer, failed

log = logging.getLogger("hubproxy.store")

WATCH_INTERVAL = 0.25  # a change made through another instance is seen within this (README: 1 s)
RECONNECT_MAX = 5.0  # seconds between tries while the database is away
STOP_WAITING = 10.0  # a stopping server waits this long for it, then leaves its writes to the journal
CONNECT_TIMEOUT = 5


class IntFromBool(adapt.Dumper):
    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class WholeNumeric(adapt.Loader):
    def load(self, data: Any) -> int | Decimal:
        text = bytes(data).decode()
        return int(text) if text.lstrip("-").isdigit() else Decimal(text)


STATEMENTS = [0]  # statements this process sent to PostgreSQL (an `executemany` counts once)


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite's SQL with parameters, in psycopg's placeholders (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def explain_busy(conn: Any, exc: BaseException) -> DatabaseError:
    return DatabaseError(f"PostgreSQL: {first_line(exc)}")


POSTGRES = Dialect(
    name="postgresql",
    begin="BEGIN",  # rows are locked as they are written; the writers' turn is the advisory lock
    first_lock=f"SELECT pg_advisory_xact_lock({WRITERS})",
    busy=(),  # a BEGIN waits on nothing here
    explain_busy=explain_busy,
)


class PgConnection:
    """A psycopg connection with the surface the shared SQL uses (`store.sql.Connection`)."""

    dialect = POSTGRES

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw
        self.replaying = False  # set by the writer while it writes a batch again after an outage
        self.deferring = False  # set by the writer while it sends a batch as one pipeline (`value`)

    def value(self, sql: str, params: tuple | list) -> Any:
        """The first column of the first row; while the writer sends a batch as one pipeline, a
        `Later` it reads once the batch is sent, so the read costs no round trip of its own."""
        cursor = self.execute(sql, params)
        if self.deferring:
            return Later(cursor)
        row = cursor.fetchone()
        return row[0] if row else None

    def execute(self, sql: str, params: tuple | list | None = None) -> psycopg.Cursor:
        STATEMENTS[0] += 1
        if params is None:
            return self.raw.execute(sql)
        return self.raw.execute(translate(sql), params)

    def executemany(self, sql: str, rows: Any) -> psycopg.Cursor:
        """Many rows of a plain INSERT as one statement over JSON (`bulk`); others once per row."""
        cursor = self.raw.cursor()
        rows = list(rows)
        if not rows:
            return cursor
        STATEMENTS[0] += 1
        shape = json_insert(sql) if len(rows) > 1 else None
        sent = payloads(shape, rows) if shape is not None else None
        if shape is None or sent is None:
            cursor.executemany(translate(sql), rows)
        else:
            for payload in sent:
                cursor.execute(shape.sql, (payload,))
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


def connect(url: str) -> PgConnection:
    """Connect and bring the schema up to date (the database must exist; its tables are made here)."""
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


class Later:
    """A value a pipelined query returns once its pipeline has been sent and answered."""

    __slots__ = ("_cursor", "_value")

    def __init__(self, cursor: psycopg.Cursor) -> None:
        self._cursor: psycopg.Cursor | None = cursor
        self._value: Any = None

    def get(self) -> Any:
        if self._cursor is not None:
            row = self._cursor.fetchone()
            self._value, self._cursor = (row[0] if row else None), None
        return self._value


def resolved(results: list) -> list:
    """The batch's outcomes with each `Later` read (the pipeline has been answered)."""
    return [(fut, then, out.get() if out.__class__ is Later else out, exc) for fut, then, out, exc in results]


class PgWriter(Writer):
    """The writer thread on PostgreSQL (see the module's docstring); with a `heart`, it also beats for
    this instance and settles what dead ones left (`instances.py`)."""

    def __init__(self, url: str, heart: Heart | None = None) -> None:
        super().__init__()
        self.url = url
        self.heart = heart
        self.watch_interval = WATCH_INTERVAL
        self._next_try = 0.0

    async def close(self) -> None:
        if self.heart is not None and self._thread is not None:
            self.submit(self.heart.stop)
        await super().close()

    def _open(self) -> PgConnection:
        return connect(self.url)

    def _changed(self, conn: Any) -> bool:
        return not self.down

    def _apply(self, conn: Any, batch: list) -> list:
        """A batch of bulk items only (settlements, leases, limits: the hot path's) goes as one
        pipeline, BEGIN and COMMIT included: its statements are sent without waiting and the new
        balances it reads are read once the COMMIT is sent too (`Later`), so a batch of settlements
        costs one round trip, where it cost one per BEGIN, lock, read and COMMIT. A batch with a plain
        function (an account change, a sweep) is written as on SQLite: each function in its savepoint."""
        if not all(what.__class__ is str for what, _, _, _ in batch):
            return super()._apply(conn, batch)
        grouped: dict[str, list] = {}
        for kind, item, fut, then in batch:
            grouped.setdefault(kind, []).append((item, fut, then))
        try:
            conn.deferring = True
            with conn.raw.pipeline():
                conn.execute(POSTGRES.begin)
                conn.execute(POSTGRES.first_lock)
                results = self._run_bulk(conn, grouped)
                conn.execute("COMMIT")
        except BaseException:
            if not conn.raw.broken and not conn.raw.closed and conn.in_transaction:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise
        finally:
            conn.deferring = False
        return resolved(results)

    def _bulk_statements(self, conn: Any) -> contextlib.AbstractContextManager:
        """The settlements' statements in psycopg's pipeline mode: sent one after another without
        waiting, answered at the first read (the new balances) and at the end: ~3 round trips
        instead of one per statement. An error fails the batch, as a bulk error does anyway."""
        return conn.raw.pipeline()

    def _commit(self, conn: Any, batch: list) -> None:
        """Commit the batch; if the database is away, keep it and try again until it is back.

        Meanwhile the calls whose settlement is in the batch are let go (their futures resolve; the
        `then` callbacks, which move balances in memory and close journal entries, wait for the real
        commit): their answers reach their clients, their charges are kept here and in the journal.
        New calls are refused while `down` (the server checks `available`). A batch whose COMMIT was
        cut off may have committed: after connecting again, usage rows already there are not written
        twice (`usage.record_calls` checks when the connection says `replaying`)."""
        waited, attempts = 0.0, 0
        while True:
            try:
                conn.replaying = waited > 0
                results = self._apply(conn, batch)
                break
            except psycopg.OperationalError as exc:
                if not conn.raw.broken and not conn.raw.closed:  # a deadlock, a serialization failure
                    attempts += 1
                    if attempts < WRITE_ATTEMPTS:
                        continue
                    log.error("write batch of %d failed: %s", len(batch), first_line(exc))
                    results = failed(batch, exc)
                    break
                if not self.down:
                    log.error("PostgreSQL unreachable (%s): new calls get 503; writes are kept", first_line(exc))
                    self.down = True
                    self._let_calls_go(batch)
            except Exception as exc:
                log.error("write batch of %d failed: %s", len(batch), first_line(exc))
                results = failed(batch, exc)
                break
            finally:
                conn.replaying = False
            if self.stopping and waited >= STOP_WAITING:
                log.error("stopping with PostgreSQL unreachable: %d writes left to the journal", len(batch))
                results = failed(batch, DatabaseError("database unreachable"))
                break
            pause = min(RECONNECT_MAX, 0.25 * 2 ** min(waited, 5))
            time.sleep(pause)
            waited += pause
            conn = self._reconnect() or conn
        if self.down and waited and results and results[0][3] is None:
            log.warning("PostgreSQL is back: %d kept writes committed", len(batch))
            self.down = False
        self._deliver(batch, results)

    def submit_item(self, kind: str, item: Any, then: Any = None) -> Any:
        """While the database is away a settlement's future resolves at once (see `_commit`)."""
        fut = super().submit_item(kind, item, then)
        if self.down and kind == CALLS:
            fut.set_result(None)
        return fut

    def _reconnect(self) -> PgConnection | None:
        try:
            fresh = connect(self.url)
        except DatabaseError:
            return None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = fresh
        return fresh

    def _let_calls_go(self, batch: list) -> None:
        calls = [fut for kind, _, fut, _ in batch if kind == CALLS]
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_release, calls)

    def _tick(self, conn: Any) -> None:
        """Beat for this instance; while the database is away, try to connect again now and then."""
        now = time.monotonic()
        if self.down:
            if now >= self._next_try:
                self._next_try = now + RECONNECT_MAX
                if self._reconnect() is not None:
                    log.warning("PostgreSQL is back")
                    self.down = False
            return
        if self.heart is not None and not self.heart.tick(conn) and (conn.raw.broken or conn.raw.closed):
            log.error("PostgreSQL unreachable: new calls get 503 until it is back")
            self.down = True
            self._next_try = now + RECONNECT_MAX / 5

    def _checkpoint(self, conn: Any) -> None:
        self._unchecked = 0


def _release(futures: list) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)
