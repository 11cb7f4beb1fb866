"""The `Store` on a SQL database, whichever backend: commands on their own connection, the server's
writes through one writer thread (batched, one transaction per batch), its reads on a small pool of
read connections, and the change feed from the rows' `rev` columns. A backend gives `connect()`
and its `Writer` (`sqlite/store.py`, `postgres/store.py`)."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from hubproxy.periods import period_start
from hubproxy.store import Committed, Store, T
from hubproxy.store.journal import journaled_calls
from hubproxy.store.records import (
    AccountChanges,
    CachedKey,
    CallRecord,
    Reservation,
)
from hubproxy.store.sql import Connection, accounts, leases, limits, usage
from hubproxy.store.writer import Writer

CALLS, LEASE, ADMIT, DONE, HOLD = "calls", "lease", "limit_admit", "limit_done", "budget_hold"
READERS = 2


class SQLStore(Store):
    def __init__(self, writer: Writer, conn: Any = None, holder: str | None = None) -> None:
        """`conn`: the commands' connection if already open; `holder`: this process's lease holder
        name, whose leases its charges use up."""
        self._conn = conn
        self.writer = writer
        self._user_rev = -1
        self._key_rev = -1
        self._reads: ThreadPoolExecutor | None = None
        self._readers = threading.local()
        self._read_conns: list = []
        record = usage.record_calls if holder is None else partial(usage.record_calls, lease_holder=holder)
        self.writer.bulk(CALLS, record)
        # `record_call` below, bound without a Python frame of its own: it runs on every call
        self.record_call = partial(self.writer.submit_item, CALLS)  # type: ignore[method-assign]
        self.writer.bulk(LEASE, leases.take_leases)
        self.writer.bulk(ADMIT, limits.admit_calls)
        self.writer.bulk(DONE, limits.finish_calls)
        self.writer.bulk(HOLD, limits.hold_budgets)

    def connect(self) -> Any:
        """A new connection to this database (the backend's)."""
        raise NotImplementedError

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- any account operation ----------------------------------------------------------------------
    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(self.conn, *args, **kwargs)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reads is None:
            raise RuntimeError("the store reads off the event loop once the server started it (`start`)")
        return await asyncio.get_running_loop().run_in_executor(self._reads, self._on_reader, fn, args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        context = contextvars.copy_context()  # the caller's audit actor, on the writer's thread

        def run(conn: Connection) -> T:
            result = context.run(fn, conn, *args)
            self.writer.notify_watchers(conn)
            return result

        return await self.writer.submit(run)

    # --- commands: recovery ----------------------------------------------------------------------------
    def settle_leftovers(
        self, journal: list[Path], *, holder: str | None = None, request_prefix: str | None = None
    ) -> int:
        settled = usage.settle_leftover_reservations(self.conn, holder=holder, request_prefix=request_prefix)
        settled += usage.settle_journaled(self.conn, journaled_calls(journal))
        for segment in journal:
            segment.unlink(missing_ok=True)
        return settled

    def settle_journal(self, journal: list[Path]) -> int:
        settled = usage.settle_journaled(self.conn, journaled_calls(journal))
        for segment in journal:
            segment.unlink(missing_ok=True)
        return settled

    def load_accounts(self) -> AccountChanges:
        return self._changes(self.conn)

    def _changes(self, conn) -> AccountChanges:
        """Rows changed since the last ones handed out, with what capped keys spent in their current
        budget period."""
        keys = []
        for row in accounts.keys_changed_since(conn, self._key_rev):
            key = CachedKey(*row)
            if key.spend_limit is not None:
                spent = accounts.key_spend_since(conn, key.id, period_start(key.budget_period))
                key = dataclasses.replace(key, spent=spent)
            keys.append(key)
            self._key_rev = max(self._key_rev, key.rev)
        users = accounts.users_changed_since(conn, self._user_rev)
        for user in users:
            self._user_rev = max(self._user_rev, user.rev)
        return AccountChanges(users, keys)

    # --- server: life --------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, on_accounts: Callable[[AccountChanges], None]) -> None:
        self.writer.watch(self._changes, on_accounts)
        self.writer.start(loop)
        self._reads = ThreadPoolExecutor(READERS, thread_name_prefix="hubproxy-read")

    async def stop(self) -> None:
        await self.writer.close()
        if self._reads is not None:
            self._reads.shutdown(wait=True)
            self._reads = None
        for conn in self._read_conns:
            conn.close()
        self._read_conns.clear()
        self.close()

    @property
    def available(self) -> bool:
        return not self.writer.down

    def stats(self) -> dict[str, int]:
        return {"writes": self.writer.writes, "write_batches": self.writer.batches, "write_queue": self.writer.queued}

    def _on_reader(self, fn: Callable[..., Any], args: tuple) -> Any:
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = self._readers.conn = self.connect()
            self._read_conns.append(conn)
        return fn(conn, *args)

    # --- server: the hot path ------------------------------------------------------------------------
    def record_call(self, record: CallRecord, then: Committed) -> asyncio.Future:
        return self.writer.submit_item(CALLS, record, then)

    def open_reservations(self, reservations: list[Reservation]) -> None:
        self.writer.submit(partial(usage.open_reservations, reservations=reservations))

    def touch_keys(self, last_used: dict[str, str]) -> None:
        self.writer.submit(partial(accounts.touch_keys, last_used=last_used))

    def queue_monthly_credits(self, credits: dict[str, int], month: str) -> None:
        self.writer.submit(partial(accounts.grant_monthly_credits, credits=credits, month=month))

    # --- server: workers -----------------------------------------------------------------------------
    def take_lease(self, holder: str, user_id: int, need: int, want: int) -> asyncio.Future:
        return self.writer.submit_item(LEASE, (holder, user_id, need, want))

    def give_back_leases(self, holder: str, amounts: dict[int, int]) -> None:
        self.writer.submit(partial(leases.give_back, holder=holder, amounts=amounts))

    def drop_leases(self, holder: str) -> None:
        self.writer.submit(partial(leases.drop_leases, holder=holder))

    def watch_lease_recalls(self, holder: str, apply: Callable[[list[int]], None]) -> None:
        self.writer.watch(partial(leases.wanted_back, holder=holder), apply)

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
        return self.writer.submit_item(ADMIT, (request_id, key_id, rpm, tpm, max_parallel, tokens, now))

    def finish_shared(self, request_id: str, key_id: str, used_tokens: int | None, now: float) -> None:
        self.writer.submit_item(DONE, (request_id, key_id, used_tokens, now))

    def hold_key_budget(self, request_id: str, key_id: str, limit: int, since: str, amount: int) -> asyncio.Future:
        return self.writer.submit_item(HOLD, (request_id, key_id, limit, since, amount))

    def release_key_budgets(self, request_ids: list[str]) -> None:
        self.writer.submit(partial(limits.release_budgets, request_ids=request_ids))
