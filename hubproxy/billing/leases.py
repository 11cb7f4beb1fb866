"""A worker's share of each user's balance, for `serve --workers N`.

One process reserves calls against balances it holds in memory. Several processes cannot: none
sees the others' reservations. Each worker therefore takes a lease, a slice of the user's balance
recorded in SQLite (store/leases.py keeps the rule that no two workers are promised the same money),
and reserves against it in memory exactly as one process does against the balance. Only when its
lease runs short does a worker ask the database for more, enough for LEASE_CALLS calls like the one
that ran short: one write per many calls instead of one per call.

Unused leases go back when the user is idle for IDLE_SECONDS, when someone else changes the
user's balance (a top-up or deduction from the CLI), when another worker was refused for want of
them, and when the worker stops. A worker refused by the database waits RECALL_WAIT for the others
to give back before it answers 402.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from functools import partial

from hubproxy.accounts.keys import KeyState, UserState, insufficient_quota
from hubproxy.store.sqlite.db import Writer
from hubproxy.store.sqlite.leases import drop_leases, give_back, take_leases, wanted_back

LEASE = "lease"
LEASE_CALLS = 32
IDLE_SECONDS = 1.0
RECALL_WAIT = 0.25


class Leases:
    def __init__(self, writer: Writer, holder: str | None = None) -> None:
        self.writer = writer
        self.holder = holder or f"pid:{os.getpid()}"
        self.held: dict[int, UserState] = {}
        self.used: dict[int, float] = {}
        writer.bulk(LEASE, take_leases)
        writer.watch(partial(wanted_back, holder=self.holder), partial(self.give_back, clear=True))

    async def reserve(self, user: UserState, key: KeyState, amount: int) -> None:
        """Hold `amount` for one call out of this worker's lease, growing the lease first if it is
        short; 402 if the database has not enough unpromised money even after a recall. (The key's
        spend cap is the shared limiter's to check: this worker alone cannot see it.)"""
        if amount == 0 and user.balance < 0:
            raise insufficient_quota(amount, None)
        refused = False
        while (free := user.lease - user.pending - user.reserved) < amount:
            need = amount - free
            grant = await self.writer.submit_item(LEASE, (self.holder, user.id, need, max(need, amount * LEASE_CALLS)))
            if grant:
                user.lease += grant
                self.held[user.id] = user
                continue
            if refused:
                raise insufficient_quota(amount, None)
            refused = True
            await asyncio.sleep(RECALL_WAIT)
        user.reserved += amount
        key.reserved += amount
        self.used[user.id] = time.monotonic()

    def charged(self, user: UserState, cost: int) -> None:
        """A charge under this worker's lease was committed: it used that much of the lease up."""
        user.lease -= cost

    def give_back(self, user_ids: Iterable[int], clear: bool = False) -> None:
        """Return what these users' leases hold beyond their calls in flight. `clear`: the ids come from
        other workers' requests, which the write answers even when there is nothing to return."""
        amounts = {}
        for user_id in user_ids:
            user = self.held.get(user_id)
            free = 0 if user is None else user.lease - user.pending - user.reserved
            if free > 0:
                user.lease -= free
            if free > 0 or clear:
                amounts[user_id] = max(free, 0)
            if user is not None and user.lease == 0 and not user.reserved:
                del self.held[user_id]
        if amounts:
            self.writer.submit(partial(give_back, holder=self.holder, amounts=amounts))

    def return_idle(self, now: float | None = None) -> None:
        cutoff = (now if now is not None else time.monotonic()) - IDLE_SECONDS
        idle = [uid for uid in self.held if self.used.get(uid, 0.0) <= cutoff]
        for uid in idle:
            self.used.pop(uid, None)
        self.give_back(idle)

    def close(self) -> None:
        """The worker is stopping: after its last charges (queued before this), its leases go."""
        self.writer.submit(partial(drop_leases, holder=self.holder))
