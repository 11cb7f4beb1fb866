"""The `Store` on a SQL database, whichever backend: commands on their own connection, the server's
writes through one writer thread (batched, one transaction per batch), its reads on a small pool of
read connections, and the change feed from the rows' `rev` columns. A backend gives `connect()`
and its `Writer` (`sqlite/store.py`, `postgres/store.py`)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from hubproxy.accounts.rules import period_start
from hubproxy.store import Committed, Store
from hubproxy.store.journal import journaled_calls
from hubproxy.store.records import (
    AccountChanges,
    CachedKey,
    CallRecord,
    KeyRow,
    Reservation,
    UsageFilter,
    UsagePage,
    UserRow,
)
from hubproxy.store.sql import accounts, dashboard, leases, limits, usage
from hubproxy.store.sqlite.db import Writer

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

    # --- commands ------------------------------------------------------------------------------------
    def add_user(self, email: str, balance: int = 0, plan: str | None = None) -> UserRow:
        return accounts.add_user(self.conn, email, balance, plan)

    def get_user(self, email: str) -> UserRow:
        return accounts.get_user(self.conn, email)

    def list_users(self) -> list[UserRow]:
        return accounts.list_users(self.conn)

    def topup(self, email: str, amount: int, kind: str = "topup", note: str | None = None) -> UserRow:
        return accounts.topup(self.conn, email, amount, kind=kind, note=note)

    def set_user_status(self, email: str, status: str) -> UserRow:
        return accounts.set_user_status(self.conn, email, status)

    def set_user_plan(self, email: str, plan: str | None) -> UserRow:
        return accounts.set_user_plan(self.conn, email, plan)

    def set_password(self, email: str, password_hash: str) -> UserRow:
        return accounts.set_password(self.conn, email, password_hash)

    def grant_monthly_credits(self, credits: dict[str, int], month: str) -> int:
        return accounts.grant_monthly_credits(self.conn, credits, month)

    def create_key(self, email: str, name: str, rules: dict | None = None) -> tuple[KeyRow, str]:
        return accounts.create_key(self.conn, email, name, rules)

    def update_key(self, key_id: str, rules: dict) -> KeyRow:
        return accounts.update_key(self.conn, key_id, rules)

    def list_keys(self, email: str | None = None) -> list[KeyRow]:
        return accounts.list_keys(self.conn, email)

    def revoke_key(self, key_id: str) -> KeyRow:
        return accounts.revoke_key(self.conn, key_id)

    def usage_report(self, by: str, since: str | None = None, user: str | None = None) -> list[dict]:
        return usage.usage_report(self.conn, by, since=since, user=user)

    def ledger_mismatches(self) -> list[tuple[str, int, int]]:
        return accounts.ledger_mismatches(self.conn)

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

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(conn, *args)` on a read connection, off the event loop."""
        assert self._reads is not None, "store not started"
        return await asyncio.get_running_loop().run_in_executor(self._reads, self._on_reader, fn, args)

    def _on_reader(self, fn: Callable[..., Any], args: tuple) -> Any:
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = self._readers.conn = self.connect()
            self._read_conns.append(conn)
        return fn(conn, *args)

    async def _change_accounts(self, fn: Callable[..., Any], *args: Any) -> Any:
        """An account write on the writer; the change feed shows it before the caller resumes."""

        def run(conn):
            result = fn(conn, *args)
            self.writer.notify_watchers(conn)
            return result

        return await self.writer.submit(run)

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

    # --- server: the account API ---------------------------------------------------------------------
    async def register_user(self, email: str, password_hash: str, grant: int) -> tuple[UserRow, str]:
        return await self._change_accounts(accounts.register_user, email, password_hash, grant)

    async def password_hash_of(self, email: str) -> tuple[int, str | None] | None:
        return await self._read(accounts.password_hash_of, email)

    async def keys_of(self, user_id: int) -> list[KeyRow]:
        return await self._read(accounts.list_keys_of, user_id)

    async def create_user_key(self, email: str, name: str, rules: dict | None = None) -> tuple[KeyRow, str]:
        return await self._change_accounts(accounts.create_key, email, name, rules)

    async def revoke_user_key(self, user_id: int | None, key_id: str) -> KeyRow:
        return await self._change_accounts(accounts.revoke_key_of, user_id, key_id)

    async def end_login_tokens(self, user_id: int) -> UserRow:
        return await self._change_accounts(accounts.end_login_tokens, user_id)

    async def change_password(self, email: str, password_hash: str) -> UserRow:
        return await self._change_accounts(accounts.set_password, email, password_hash)

    async def create_user(self, email: str, balance: int) -> UserRow:
        return await self._change_accounts(accounts.add_user, email, balance)

    async def recent_usage(self, user_id: int, limit: int) -> list[dict]:
        return await self._read(usage.recent_usage, user_id, limit)

    async def total_cost_since(self, user_id: int, day: str) -> int:
        return await self._read(usage.total_cost_since, user_id, day)

    # --- server: the dashboard -------------------------------------------------------------------------
    async def overview(self, user_id: int | None, now: datetime) -> dict:
        return await self._read(dashboard.overview, user_id, now)

    async def usage_page(self, where: UsageFilter, limit: int) -> UsagePage:
        return await self._read(dashboard.usage_page, where, limit)

    async def usage_models(self, user_id: int | None) -> list[str]:
        return await self._read(dashboard.usage_models, user_id)

    async def ledger_page(self, user_id: int | None, before: int | None, limit: int, charges: bool) -> list[dict]:
        return await self._read(dashboard.ledger_page, user_id, before, limit, charges)

    async def key_spend(self, user_id: int | None) -> dict[str, tuple[int, int]]:
        return await self._read(dashboard.key_spend, user_id)

    async def all_keys(self) -> list[KeyRow]:
        return await self._read(accounts.list_keys)

    async def update_user_key(self, user_id: int | None, key_id: str, rules: dict) -> KeyRow:
        return await self._change_accounts(accounts.update_key_of, user_id, key_id, rules)

    async def change_balance(self, email: str, amount: int, kind: str, note: str | None) -> UserRow:
        return await self._change_accounts(accounts.topup, email, amount, kind, note)

    async def change_user_status(self, email: str, status: str) -> UserRow:
        return await self._change_accounts(accounts.set_user_status, email, status)

    async def change_user_plan(self, email: str, plan: str | None) -> UserRow:
        return await self._change_accounts(accounts.set_user_plan, email, plan)
