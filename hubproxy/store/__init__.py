"""The store: users, keys, the ledger, usage, open reservations, leases and shared limit counters.

`Store` is the whole contract between hubproxy and its database: typed methods taking and returning
the dataclasses of `store.records`, never a connection, SQL, a closure or a bare tuple. SQLite
(`store/sqlite/`) is the embedded implementation; a second backend (PostgreSQL) implements this
class and nothing outside `store/` changes.

The hot path's operations (calls settled, reservations, leases, shared limits, the change feed) are
methods of their own. Every other account operation is one function in `store/sql/` (`accounts`,
`usage`, `dashboard`), run through three generic methods, as datasette's `execute_write_fn` runs
its writes:

- `run(fn, …)`: a **command** (the CLI's, and the server's own before it serves): at once, on the
  commands' connection; it may block, so never on the event loop.
- `await read(fn, …)`: on a small pool of read connections, off the event loop.
- `await write(fn, …)`: queued to the store's writer and committed in its batch; the change feed
  shows it before the caller resumes. `start` must have been called.

So a new account operation is one SQL function and its call site.

Invariants every implementation keeps: each balance change is a ledger row in the same transaction
(`users.balance == sum(ledger)`); a call's usage row, its charge and the removal of its open
reservation commit together; no two lease holders are promised the same money.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from hubproxy.store.records import (
    AccountChanges,
    CallRecord,
    DatabaseError,
    LimitRefusal,
    Reservation,
)

Committed = Callable[[int | None, BaseException | None], None]
T = TypeVar("T")


def store_errors() -> tuple[type[BaseException], ...]:
    """The backends' own errors that can still reach a command (a disk full mid-write), which the CLI
    shows as one line: PostgreSQL's only once its driver was imported (no PostgreSQL call can have
    raised one before), so that a command on SQLite never pays for importing it."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


class Store(ABC):
    # --- any account operation: a `store/sql/` function, run where it belongs --------------------------
    @abstractmethod
    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A command: `fn(conn, *args, **kwargs)` at once, on the commands' connection, in its own
        transaction where `fn` makes one (`store.sql.transaction`). Blocks: never on the event loop."""

    @abstractmethod
    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` on a read connection, off the event loop (the dashboard, the account API)."""

    @abstractmethod
    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` on the writer, in its batch's transaction; the change feed shows what it
        changed (keys, users) before the caller resumes. The server's account writes."""

    # --- commands: recovery ------------------------------------------------------------------------
    @abstractmethod
    def settle_leftovers(
        self, journal: list[Path], *, holder: str | None = None, request_prefix: str | None = None
    ) -> int:
        """Bill what a killed server left open: its open reservations and the journal segments' calls
        that have no usage row, at their prompt estimate (`interrupted`, `estimated`); drop its leases
        and limit counters. With `holder`/`request_prefix`, only one dead worker's. Returns how many."""

    @abstractmethod
    def settle_journal(self, journal: list[Path]) -> int:
        """Bill the journal segments' calls that have no usage row (their process was killed) and
        delete the segments, touching nothing else: what one instance of several does at start."""

    @abstractmethod
    def load_accounts(self) -> AccountChanges:
        """Every user and key, for the server's memory; the change feed goes on from here."""

    @abstractmethod
    def close(self) -> None:
        """Release what the commands opened."""

    # --- server: life and the change feed ----------------------------------------------------------
    @abstractmethod
    def start(self, loop: asyncio.AbstractEventLoop, on_accounts: Callable[[AccountChanges], None]) -> None:
        """Start the writer; `on_accounts(changes)` runs on the loop whenever another process (the
        CLI, another worker) or an account write changed users or keys, in commit order."""

    @abstractmethod
    async def stop(self) -> None:
        """Commit everything queued, then stop."""

    @property
    def available(self) -> bool:
        """Whether the database can be reached now (a server refuses new calls with 503 while not)."""
        return True

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters for the admin's /health: writes committed, and in how many batches."""

    # --- server: the hot path ------------------------------------------------------------------------
    @abstractmethod
    def record_call(self, record: CallRecord, then: Committed) -> asyncio.Future:
        """Queue a finished call: usage row, charge, reservation closed. `then(new_balance, error)` runs
        on the loop when it commits (or fails), even if nobody awaits the future any more."""

    @abstractmethod
    def open_reservations(self, reservations: list[Reservation]) -> None:
        """Queue in-flight calls to be on disk while they run (settled on the next start if killed)."""

    @abstractmethod
    def touch_keys(self, last_used: dict[str, str]) -> None:
        """Queue keys' last-use times."""

    @abstractmethod
    def queue_monthly_credits(self, credits: dict[str, int], month: str) -> None: ...

    # --- server: several workers on one store --------------------------------------------------------
    @abstractmethod
    def take_lease(self, holder: str, user_id: int, need: int, want: int) -> asyncio.Future:
        """Grant between `need` and `want` of the user's unpromised money to `holder`; resolves to the
        grant, 0 when not even `need` is free (the other holders are then asked to give back)."""

    @abstractmethod
    def give_back_leases(self, holder: str, amounts: dict[int, int]) -> None: ...

    @abstractmethod
    def drop_leases(self, holder: str) -> None: ...

    @abstractmethod
    def watch_lease_recalls(self, holder: str, apply: Callable[[list[int]], None]) -> None:
        """`apply(user_ids)` when other holders want back what `holder` leased of these users."""

    @abstractmethod
    def admit_shared(
        self,
        request_id: str,
        key_id: str,
        rpm: int | None,
        tpm: int | None,
        max_parallel: int | None,
        tokens: int,
        now: float,
    ) -> asyncio.Future:
        """Count a call against a key's limits in every worker's sight: resolves to None (admitted)
        or the `LimitRefusal`."""

    @abstractmethod
    def finish_shared(self, request_id: str, key_id: str, used_tokens: int | None, now: float) -> None: ...

    @abstractmethod
    def hold_key_budget(self, request_id: str, key_id: str, limit: int, since: str, amount: int) -> asyncio.Future:
        """Hold `amount` against a key's spend cap: resolves to None (held) or what the cap leaves."""

    @abstractmethod
    def release_key_budgets(self, request_ids: list[str]) -> None: ...


def open_store(
    database: Path | str,
    *,
    create: bool = False,
    shared: bool = False,
    holder: str | None = None,
    request_prefix: str | None = None,
) -> Store:
    """The store at `database`: a SQLite file, or a `postgresql://` URL. `shared`: other server
    processes use it too (`serve --workers`; always so on PostgreSQL); `holder`: this process's
    name as a holder of balance leases; on PostgreSQL with `request_prefix` (how its request ids
    start), a server instance that beats and is reaped by the others if it dies."""
    if is_postgres(database):
        try:
            from hubproxy.store.postgres.store import PostgresStore
        except ModuleNotFoundError as missing:
            raise MissingExtra("PostgreSQL", "postgres", missing) from None
        return PostgresStore(str(database), create=create, holder=holder, request_prefix=request_prefix)
    from hubproxy.store.sqlite.store import SQLiteStore

    return SQLiteStore(Path(database), create=create, shared=shared, holder=holder)


class MissingExtra(DatabaseError):
    """A backend's driver is not installed: the one line says which extra brings it."""

    def __init__(self, what: str, extra: str, missing: ModuleNotFoundError) -> None:
        super().__init__(
            f"{what} needs the {missing.name} package, which this install lacks: pip install 'hubproxy[{extra}]'"
        )


def is_postgres(database: Path | str) -> bool:
    return isinstance(database, str) and database.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """A URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


__all__ = [
    "Committed",
    "LimitRefusal",
    "MissingExtra",
    "Store",
    "is_postgres",
    "open_store",
    "redacted",
    "store_errors",
]
