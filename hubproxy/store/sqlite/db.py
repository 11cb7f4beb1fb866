"""SQLite connections, their dialect, and the writer on them.

SQLite allows one writer at a time; the server's writes go through one thread (`store/writer.py`).
Here: how a connection is opened (WAL, a busy timeout, the schema migrated), how its transactions
begin (`SQLITE`: the write lock up front), how the writer notices other processes' commits (`PRAGMA
data_version`), when it checkpoints the write-ahead log, and how `serve --workers` processes take
turns at the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from hubproxy.filemodes import create_private
from hubproxy.store.records import DatabaseError
from hubproxy.store.sql import Connection, Dialect
from hubproxy.store.writer import Writer

try:
    import fcntl
except ImportError:  # Windows: no `serve --workers` there (it shares the port through SO_REUSEPORT)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("hubproxy.store")

BUSY_TIMEOUT_MS = 15_000


class SQLiteConnection(sqlite3.Connection):
    """`sqlite3`'s connection, saying which dialect its SQL is in (`store.sql.transaction` reads it)."""

    dialect: Dialect  # SQLITE, set below

    def value(self, sql: str, parameters: Any) -> Any:
        return self.execute(sql, parameters).fetchone()[0]


def connect(path: Path, *, create: bool = False) -> SQLiteConnection:
    """Open the database in WAL mode with a busy timeout, migrating it to the current schema."""
    from hubproxy.store.sqlite.migrations import migrate

    if not create and not path.exists():
        raise DatabaseError(f"no database at {path}; run `hubproxy init` first")
    create_private(path)
    try:
        conn = sqlite3.connect(
            path,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
            factory=SQLiteConnection,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(_explain(path, exc)) from None
    return conn


def _explain(path: Path, exc: BaseException) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"database {path} is locked by another process for too long ({text}); try again"
    if "not a database" in text or "malformed" in text:
        return f"database {path} is corrupt ({text}); restore it from a backup or move it away"
    return f"database {path}: {text}"


def explain_busy(conn: Connection, exc: BaseException) -> DatabaseError:
    """A BEGIN that failed (locked too long, corrupt), as one line naming the file."""
    return DatabaseError(_explain(Path(conn_path(conn)), exc))


SQLITE = Dialect(
    name="sqlite",
    begin="BEGIN IMMEDIATE",  # the write lock up front: a busy database waits here, not at COMMIT
    first_lock="",  # one writer at a time is SQLite's own rule
    busy=(sqlite3.OperationalError,),
    explain_busy=explain_busy,
)
SQLiteConnection.dialect = SQLITE


def conn_path(conn: Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return row[2] if row else "?"


class SQLiteWriter(Writer):
    """The writer on one SQLite file: changes seen through `PRAGMA data_version`, the write-ahead log
    checkpointed between batches, and (`serve --workers`) the processes taking turns by a file lock."""

    def __init__(self, path: Path, shared: bool = False) -> None:
        """`shared`: other server processes write to the same database (`serve --workers`)."""
        super().__init__()
        self.path = path
        self._lock_fd: int | None = None
        if shared:
            self._lock_fd = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT, 0o600)

    def _open(self) -> Connection:
        conn = connect(self.path)
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # see `_checkpoint`
        return conn

    def _changed(self, conn: Connection) -> bool:
        """Whether another connection committed since the last look (SQLite counts commits for us)."""
        current = conn.execute("PRAGMA data_version").fetchone()[0]
        changed, self._version = current != self._version, current
        return changed

    def _apply(self, conn: Connection, batch: list) -> list:
        """Workers take turns at the database through a file lock before SQLite's own lock.

        SQLite makes a writer that finds the database locked sleep and retry (1 ms, then 2, 5, 10…):
        with several workers committing hundreds of times a second, about one batch in eight slept,
        and the calls waiting on it with it. A process blocked on `flock` is woken as soon as the
        holder lets go.
        """
        if self._lock_fd is None:
            return super()._apply(conn, batch)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            return super()._apply(conn, batch)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _checkpoint(self, conn: Connection) -> None:
        """Copy the write-ahead log back into the database file at a moment nobody waits on it.

        SQLite's automatic checkpoint runs inside the COMMIT that crosses ~1,000 pages, so every call
        waiting on that commit waits for the copy and its fsync too: a tail-latency spike. Here it runs
        when the writer has been idle for WATCH_INTERVAL, or, under load that never pauses, after a
        batch's callers were released. It runs on this connection between transactions, so the log
        starts again from its beginning instead of growing.
        """
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint skipped: %s", exc)
        self._unchecked, self._checked_at = 0, time.monotonic()

    async def close(self) -> None:
        await super().close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
