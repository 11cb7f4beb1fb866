"""The one writer thread of a store, whichever backend.

A single thread owns the write connection; the event loop hands it small functions through a queue
and (when it must) awaits a future. Each batch of queued functions is one transaction, so under load
hundreds of settlements share one commit. The same thread notices changes made by other processes
(the CLI, other instances) and hands them to the loop, so the hot path reads only memory. A backend
subclasses `Writer` for how it opens its connection and notices changes (`sqlite/db.py`,
`postgres/db.py`); the transaction itself is `store.sql.transaction`, worded by the connection's
dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from hubproxy.store.records import AccountError
from hubproxy.store.sql import Connection, transaction

log = logging.getLogger("hubproxy.store")

WATCH_INTERVAL = 0.1
WRITE_ATTEMPTS = 3
CHECKPOINT_AFTER_WRITES = 1000  # under steady load, housekeeping after this many writes …
CHECKPOINT_AFTER_SECONDS = 10.0  # … or this long, whichever comes first

WriteFn = Callable[[Connection], Any]
Committed = Callable[[Any, BaseException | None], None]
BulkFn = Callable[[Connection, list], list]
_STOP = object()


class Writer:
    """The single writer thread. `submit` from the event loop; `close` flushes everything."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list = []
        self._watchers: list[tuple[WriteFn, Callable[[Any], None]]] = []
        self._bulk: dict[str, BulkFn] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.conn: Connection | None = None
        self.batches = 0
        self.writes = 0
        self.watch_interval = WATCH_INTERVAL
        self._version: object = None
        self.down = False  # the database cannot be reached (PostgreSQL; a SQLite file is always there)
        self.stopping = False
        self._unchecked = 0
        self._checked_at = time.monotonic()

    @property
    def queued(self) -> int:
        """Writes waiting for the thread (this loop iteration's and the handed-over lists)."""
        return len(self._pending) + self._queue.qsize()

    def watch(self, read: WriteFn, apply: Callable[[Any], None]) -> None:
        """When another process changes the database, run `read` here and `apply(result)` on the loop."""
        self._watchers.append((read, apply))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.conn = self._open()
        self._thread = threading.Thread(target=self._run, name="hubproxy-writer", daemon=True)
        self._thread.start()

    def _open(self) -> Connection:
        """The write connection (the backend's)."""
        raise NotImplementedError

    def _changed(self, conn: Connection) -> bool:
        """Whether another connection committed since the last look (the backend knows how)."""
        raise NotImplementedError

    def _tick(self, conn: Connection) -> None:
        """Between batches, at least every `watch_interval`: a backend's housekeeping (none here)."""

    def bulk(self, kind: str, handler: BulkFn) -> None:
        """Register `handler(conn, items) -> results` for items submitted with `submit_item(kind, …)`.

        All items of one kind in a batch go to one call, so the hot path's writes become a few
        `executemany` statements per batch instead of several statements per request.
        """
        self._bulk[kind] = handler

    def submit(self, fn: WriteFn) -> asyncio.Future:
        """Queue `fn(conn)` for the next batch; the future resolves once its batch is committed."""
        return self._put(fn, None)

    def submit_item(self, kind: str, item: Any, then: Committed | None = None) -> asyncio.Future:
        """Queue one item for the bulk handler of `kind`; resolves to its result once committed.

        `then(result, error)` runs on the loop as the batch's outcome arrives, before the future is
        resolved and even if whoever awaited the future was cancelled meanwhile: memory that mirrors
        the database (a balance) must learn the outcome in every case."""
        return self._put(kind, item, then)

    def _put(self, what: WriteFn | str, item: Any, then: Committed | None = None) -> asyncio.Future:
        """Collect this loop iteration's writes and hand them to the thread as one list.

        One queue put per iteration instead of one per write: every put wakes the writer thread,
        and on a busy single core each wake-up costs a GIL hand-off and two context switches.
        """
        assert self._loop is not None, "writer not started"
        fut = self._loop.create_future()
        self._pending.append((what, item, fut, then))
        if len(self._pending) == 1:
            self._loop.call_soon(self._hand_over)
        return fut

    def _hand_over(self) -> None:
        pending, self._pending = self._pending, []
        self._queue.put(pending)

    async def close(self) -> None:
        """Commit everything queued so far, then stop the thread."""
        if self._thread is None:
            return
        if self._pending:
            self._hand_over()
        self.stopping = True
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None
        if self.conn is not None:
            self.conn.close()

    def _run(self) -> None:
        conn = self.conn
        if conn is None:
            raise RuntimeError("the writer runs once its connection is open (`start`)")
        self._changed(conn)
        self._notify(conn)  # what changed between the caller's initial load and `version`
        last_watch = time.monotonic()
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self.watch_interval)
            except queue.Empty:
                first = None
            batch = []
            handed = first
            while handed is not None:
                if handed is _STOP:
                    stopping = True
                else:
                    batch.extend(handed)
                try:
                    handed = self._queue.get_nowait()
                except queue.Empty:
                    handed = None
            if batch:
                self._commit(conn, batch)
                conn = self.conn or conn  # a backend may have connected again meanwhile
                self._unchecked += len(batch)
                if (
                    self._unchecked >= CHECKPOINT_AFTER_WRITES
                    or time.monotonic() - self._checked_at >= CHECKPOINT_AFTER_SECONDS
                ):
                    self._checkpoint(conn)
            elif first is None and self._unchecked:
                self._checkpoint(conn)  # nothing to write for WATCH_INTERVAL: nobody waits on us
            now = time.monotonic()
            if now - last_watch >= self.watch_interval or first is None:
                last_watch = now
                if self._changed(conn):
                    self._notify(conn)
                self._tick(conn)
                conn = self.conn or conn

    def _commit(self, conn: Connection, batch: list) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                results = self._apply(conn, batch)
                break
            except Exception as exc:
                log.error("write batch of %d failed (attempt %d): %s", len(batch), attempt, exc)
                results = failed(batch, exc)
        self._deliver(batch, results)

    def _deliver(self, batch: list, results: list) -> None:
        """Count the batch and hand its outcomes to the loop."""
        self.batches += 1
        self.writes += len(batch)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, results)

    def _checkpoint(self, conn: Connection) -> None:
        """Housekeeping at a moment nobody waits on the database (SQLite: its write-ahead log)."""
        self._unchecked, self._checked_at = 0, time.monotonic()

    def _apply(self, conn: Connection, batch: list) -> list:
        """One transaction: plain functions first, in order, each in a savepoint so that one failure
        spoils only itself; then each bulk kind in one call (a bulk failure fails the batch)."""
        results: list[tuple[Any, Any, Any, Exception | None]] = []
        grouped: dict[str, list] = {}
        with transaction(conn):
            for i, (what, item, fut, then) in enumerate(batch):
                if isinstance(what, str):
                    grouped.setdefault(what, []).append((item, fut, then))
                    continue
                conn.execute(f"SAVEPOINT w{i}")
                try:
                    results.append((fut, then, what(conn), None))
                    conn.execute(f"RELEASE w{i}")
                except Exception as exc:
                    conn.execute(f"ROLLBACK TO w{i}")
                    conn.execute(f"RELEASE w{i}")
                    results.append((fut, then, None, exc))
            with self._bulk_statements(conn):
                results.extend(self._run_bulk(conn, grouped))
        return results

    def _run_bulk(self, conn: Connection, grouped: dict[str, list]) -> list:
        """Each kind's items, `(item, future, then)` as grouped from a batch, through its bulk handler
        in one call; the outcomes as `_resolve` takes them."""
        results: list[tuple[Any, Any, Any, Exception | None]] = []
        for kind, entries in grouped.items():
            outcomes = self._bulk[kind](conn, [item for item, _, _ in entries])
            results.extend((fut, then, out, None) for (_, fut, then), out in zip(entries, outcomes, strict=True))
        return results

    def _bulk_statements(self, conn: Connection) -> contextlib.AbstractContextManager:
        """Around the bulk handlers' statements (which fail or succeed as one): a backend may send
        them without waiting for each answer. SQLite has no network to wait on."""
        return contextlib.nullcontext()

    def notify_watchers(self, conn: Connection) -> None:
        """Run the watchers now, inside the current write (on the writer thread): the loop learns of
        this transaction's changes before its writer's future resolves."""
        self._notify(conn)

    def _notify(self, conn: Connection) -> None:
        assert self._loop is not None
        for read, apply in self._watchers:
            try:
                result = read(conn)
            except Exception as exc:
                log.error("reading changes failed: %s", exc)
                continue
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(apply, result)


def failed(batch: list, exc: BaseException) -> list:
    """Every write of `batch` failed with `exc`, as `_resolve` takes outcomes."""
    return [(fut, then, None, exc) for _, _, fut, then in batch]


def _resolve(results: list) -> None:
    for fut, then, value, exc in results:
        if then is not None:
            then(value, exc)
        if fut.done():
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)
            fut.add_done_callback(_log_unretrieved)


def _log_unretrieved(fut: asyncio.Future) -> None:
    """A failed write is logged; a refused one (an account that exists, a key not found: the caller's
    mistake, answered to them) at INFO and without its message, which quotes the caller's input."""
    exc = fut.exception()
    if isinstance(exc, AccountError):
        log.info("write refused: %s", type(exc).__name__)
    elif exc is not None:
        log.error("write failed: %s", exc)
