"""The one owner of the money in memory: holding a call's worst case against a user's balance and a
key's spend cap, turning the hold into a charge, and learning when the charge is committed.

Available balance = committed balance - charges queued but not yet committed - open holds. Nothing
else changes `UserState.pending/reserved/lease` or `KeyState.reserved`; `UserState.balance` and
`KeyState.spent` are also set by the account cache (`accounts/cache.py`) from the store's change
feed, the committed figures this module's holds and charges are counted against.

Two implementations of one `Budget`:

- `LocalBudget`: one process holds against the balances it has in memory; parallel calls cannot
  spend the same money because each hold is taken before the call goes upstream.
- `LeasedBudget`: for `serve --workers N` and for instances sharing PostgreSQL, where no process
  sees the others' holds. Each worker takes a lease, a slice of the user's balance recorded in the
  store (which keeps the rule that no two workers are promised the same money), and holds calls
  against it in memory exactly as one process does against the balance. Only when its lease runs
  short does a worker ask for more, enough for LEASE_CALLS calls like the one that ran short (or for
  every call waiting): one write per many calls instead of one per call, and one ask per user at a
  time, so that a burst of calls does not ask for the whole balance many times over and get refused
  by its own earlier asks. Unused leases go back when the user is idle for IDLE_SECONDS, when
  someone else changed the user's balance, when another worker was refused for want of them, and
  when the worker stops; a worker refused waits RECALL_WAIT for the others to give back before it
  answers 402. Key spend caps are held in the store, where every worker sees them.
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable

from hubproxy import errors
from hubproxy.accounts.cache import KeyState, UserState
from hubproxy.money import format_usd
from hubproxy.periods import period_start
from hubproxy.store import Store

LEASE_CALLS = 32
IDLE_SECONDS = 1.0
RECALL_WAIT = 0.25


def insufficient_quota(amount: int, available: int | None) -> errors.GatewayError:
    have = "" if available is None else f" and ${format_usd(max(available, 0))} is available"
    return errors.insufficient_quota(
        f"Insufficient balance: this call may cost up to ${format_usd(amount)}{have}. Top up to continue."
    )


def over_key_budget(key: KeyState, left: int, amount: int) -> errors.GatewayError:
    period = f" this {key.policy.budget_period}" if key.policy.budget_period else ""
    return errors.insufficient_quota(
        f"This key's spend limit of ${format_usd(key.policy.spend_limit or 0)}{period} leaves "
        f"${format_usd(max(left, 0))}; this call may cost up to ${format_usd(amount)}."
    )


class Budget(ABC):
    @abstractmethod
    async def hold(self, user: UserState, key: KeyState, amount: int, request_id: str) -> bool:
        """Hold `amount` of the user's balance and of the key's cap for one call, or refuse with 402.
        Returns whether a hold on the key's cap was taken in the store (it goes with the usage row)."""

    @staticmethod
    def charge(user: UserState, key: KeyState, held: int, cost: int) -> None:
        """The call ended: its hold becomes a charge queued for the store."""
        user.reserved -= held
        user.pending += cost
        key.reserved -= held
        key.spent += cost

    def committed(self, user: UserState, cost: int, new_balance: int | None) -> None:
        """The store committed the charge (`new_balance`), or failed to (None: the balance stands)."""
        user.pending -= cost
        if new_balance is not None:
            user.balance = new_balance

    @abstractmethod
    def release_cap(self, request_id: str) -> None:
        """Drop a store hold on a key's cap taken for a call that never started."""

    @abstractmethod
    def users_changed(self, user_ids: Iterable[int]) -> None:
        """Someone else changed these users' balances."""

    @abstractmethod
    def return_idle(self) -> None:
        """Give back what idle users' calls no longer need."""

    @abstractmethod
    def close(self) -> None:
        """The process stops serving."""


class LocalBudget(Budget):
    """Holds against the balances in this process's memory."""

    async def hold(self, user: UserState, key: KeyState, amount: int, request_id: str) -> bool:
        left = key.budget_left()
        if left is not None and left < amount:
            raise over_key_budget(key, left, amount)
        if user.available < amount or (amount == 0 and user.available < 0):
            raise insufficient_quota(amount, user.available)
        user.reserved += amount
        key.reserved += amount
        return False

    def release_cap(self, request_id: str) -> None:
        """Caps are held in memory here, with the balance."""

    def users_changed(self, user_ids: Iterable[int]) -> None:
        """The change feed already installed the new balances."""

    def return_idle(self) -> None:
        """Nothing is leased."""

    def close(self) -> None:
        """Nothing to give back."""


class LeasedBudget(Budget):
    """Holds against this worker's leases of the balances; key caps in the store."""

    def __init__(self, store: Store, holder: str | None = None) -> None:
        self.store = store
        self.holder = holder or f"pid:{os.getpid()}"
        self.held: dict[int, UserState] = {}
        self.used: dict[int, float] = {}
        self.asking: dict[int, asyncio.Future] = {}  # the ask in flight for a user
        self.waiting: dict[int, int] = {}  # calls waiting for it
        store.watch_lease_recalls(self.holder, self.give_back_all)

    async def hold(self, user: UserState, key: KeyState, amount: int, request_id: str) -> bool:
        capped = await self._hold_cap(key, amount, request_id)
        try:
            await self._hold_lease(user, key, amount)
        except BaseException:
            if capped:
                self.release_cap(request_id)
            raise
        return capped

    async def _hold_cap(self, key: KeyState, amount: int, request_id: str) -> bool:
        limit = key.policy.spend_limit
        if limit is None:
            return False
        since = period_start(key.policy.budget_period)
        left = await self.store.hold_key_budget(request_id, key.id, limit, since, amount)
        if left is not None:
            raise over_key_budget(key, left, amount)
        return True

    async def _hold_lease(self, user: UserState, key: KeyState, amount: int) -> None:
        """Out of this worker's lease, growing it first if it is short; 402 if the store has not
        enough unpromised money even after a recall."""
        if amount == 0 and user.balance < 0:
            raise insufficient_quota(amount, None)
        refused = False
        while (free := user.lease - user.pending - user.reserved) < amount:
            asking = self.asking.get(user.id)
            if asking is not None and asking.done():  # answered; its asker has yet to take it in
                await asyncio.sleep(0)
                continue
            if asking is not None:  # one ask per user at a time: a burst of calls waits for it, then looks again
                self.waiting[user.id] = self.waiting.get(user.id, 0) + 1
                try:
                    await asyncio.shield(asking)
                finally:
                    self.waiting[user.id] -= 1
                continue
            need = amount - free
            want = max(need + amount * self.waiting.get(user.id, 0), amount * LEASE_CALLS)
            asking = self.asking[user.id] = self.store.take_lease(self.holder, user.id, need, want)
            try:
                grant = await asking
            finally:
                del self.asking[user.id]
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

    def committed(self, user: UserState, cost: int, new_balance: int | None) -> None:
        super().committed(user, cost, new_balance)
        if new_balance is not None:
            user.lease -= cost  # a charge under this worker's lease used that much of it up

    def release_cap(self, request_id: str) -> None:
        self.store.release_key_budgets([request_id])

    def users_changed(self, user_ids: Iterable[int]) -> None:
        self.give_back(user_ids)

    def give_back_all(self, user_ids: Iterable[int]) -> None:
        self.give_back(user_ids, clear=True)

    def give_back(self, user_ids: Iterable[int], clear: bool = False) -> None:
        """Return what these users' leases hold beyond their calls in flight. `clear`: the ids come from
        other workers' requests, which the write answers even when there is nothing to return."""
        amounts = {}
        for user_id in user_ids:
            user = self.held.get(user_id)
            free = 0 if user is None else user.lease - user.pending - user.reserved
            if user is not None and free > 0:
                user.lease -= free
            if free > 0 or clear:
                amounts[user_id] = max(free, 0)
            if user is not None and user.lease == 0 and not user.reserved:
                del self.held[user_id]
        if amounts:
            self.store.give_back_leases(self.holder, amounts)

    def return_idle(self, now: float | None = None) -> None:
        cutoff = (now if now is not None else time.monotonic()) - IDLE_SECONDS
        idle = [uid for uid in self.held if self.used.get(uid, 0.0) <= cutoff]
        for uid in idle:
            self.used.pop(uid, None)
        self.give_back(idle)

    def close(self) -> None:
        """The worker is stopping: after its last charges (queued before this), its leases go."""
        self.store.drop_leases(self.holder)
