"""One call's money: reserve the worst case up front, settle to the real cost exactly once.

The reservation is held in memory at once (so parallel calls cannot spend the same balance) and
persisted by a sweep once the call has been open for `PERSIST_AFTER` seconds: LLM calls that take
seconds are on disk while they run, and a killed server's are settled on the next start, while a
call that finishes sooner costs no reservation write at all. The settlement is awaited before the
last bytes go to the client, so an answer the client received is durably billed even if the server
is killed right after.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from hubproxy.accounts.keys import Gate, KeyState, UserState
from hubproxy.accounts.rules import effective_limits
from hubproxy.billing.leases import Leases
from hubproxy.billing.pricing import CallRecord, Reservation, cost_of, estimate_prompt_tokens, reservation_amount
from hubproxy.config import BillingSettings, Plan
from hubproxy.ratelimit.shared import SharedLimiter
from hubproxy.ratelimit.windows import RateLimiter, TokenEntry
from hubproxy.routing.router import Route
from hubproxy.store.journal import CallJournal
from hubproxy.store.sqlite.db import Writer
from hubproxy.store.sqlite.usage import open_reservations, record_calls

PERSIST_AFTER = 0.1
CALLS = "calls"


class OpenCalls:
    """Calls in flight in this process, and the sweep that persists their reservations.

    `leases` and a SharedLimiter are for several worker processes on one database: memory alone
    cannot see the other workers' calls, so each worker reserves against its lease of the balance
    and counts limited keys' calls in the database instead.
    """

    def __init__(
        self, writer: Writer, leases: Leases | None = None, limiter: RateLimiter | SharedLimiter | None = None
    ) -> None:
        self.writer = writer
        self.journal: CallJournal | None = None  # set once the server runs (the lifecycle opens it)
        self.leases = leases
        self.limiter = limiter or RateLimiter()
        self.meters: dict[str, CallMeter] = {}
        writer.bulk(CALLS, record_calls if leases is None else partial(record_calls, lease_holder=leases.holder))

    def persist_due(self, now: float | None = None) -> int:
        """Queue the reservations of calls open longer than PERSIST_AFTER; returns how many."""
        cutoff = (now if now is not None else time.monotonic()) - PERSIST_AFTER
        due = [m for m in self.meters.values() if not m.persisted and m.started <= cutoff]
        if due:
            for meter in due:
                meter.persisted = True
            reservations = [m.reservation for m in due]
            self.writer.submit(lambda conn: open_reservations(conn, reservations))
        return len(due)


class CallMeter:
    __slots__ = (
        "_calls",
        "_gate",
        "_limit_entry",
        "attempts",
        "budget_held",
        "cost",
        "key",
        "persisted",
        "plan",
        "reservation",
        "route",
        "segment",
        "settled",
        "started",
        "tokens",
        "user",
    )

    def __init__(
        self,
        calls: OpenCalls,
        gate: Gate,
        billing: BillingSettings,
        request_id: str,
        key: KeyState,
        user: UserState,
        route: Route,
        endpoint: str,
        stream: bool,
        body_bytes: int,
        max_tokens: int | None,
        plan: Plan | None = None,
    ) -> None:
        model = route.model
        prompt = estimate_prompt_tokens(body_bytes, billing.bytes_per_token)
        output = 0 if endpoint == "/embeddings" else (max_tokens or billing.default_max_tokens)
        self.plan = plan
        amount = self.price(reservation_amount(model, prompt, output))
        self.tokens = prompt + output
        self._limit_entry: TokenEntry | str | None = None
        self._calls, self._gate, self.user, self.key, self.route = calls, gate, user, key, route
        self.reservation = Reservation(
            id=request_id,
            user_id=user.id,
            key_id=key.id,
            model=model.name,
            provider=route.provider.name,
            upstream_model=route.upstream_model,
            endpoint=endpoint,
            stream=stream,
            amount=amount,
            prompt_tokens=prompt,
            prompt_cost=self.price(cost_of(model, prompt, 0)),
        )
        self.started = time.monotonic()
        self.attempts: list[tuple[str, object]] = []  # (deployment, its answer); written only if > 1
        self.persisted = False
        self.budget_held = False
        self.settled: asyncio.Future | None = None
        self.segment = 0
        self.cost = 0

    async def reserve(self) -> None:
        """Count the call against the key's rate limits (or raise 429), then hold its worst-case
        cost (or raise 402): from the balance in memory, or from this worker's lease of it."""
        limits = effective_limits(self.key.policy, self.plan)
        limiter = self._calls.limiter
        if isinstance(limiter, SharedLimiter):
            if limits.any:
                self._limit_entry = await limiter.admit(self.key.id, limits, self.tokens, self.reservation.id)
        else:
            self._limit_entry = limiter.admit(self.key.id, limits, self.tokens)
        try:
            await self._reserve_money()
        except BaseException:
            self._calls.limiter.finish(self.key.id, self._limit_entry, 0)
            raise
        self._calls.meters[self.reservation.id] = self
        journal = self._calls.journal
        if journal is not None:
            self.segment = journal.opened(self.reservation)

    async def _reserve_money(self) -> None:
        amount, leases, limiter = self.reservation.amount, self._calls.leases, self._calls.limiter
        if leases is None or not isinstance(limiter, SharedLimiter):
            self._gate.reserve(self.user, self.key, amount)
            return
        self.budget_held = await limiter.hold_budget(self.key, amount, self.reservation.id)
        try:
            await leases.reserve(self.user, self.key, amount)
        except BaseException:
            if self.budget_held:
                limiter.release_budget(self.reservation.id)
            raise

    def settle(
        self,
        prompt_tokens: int | None,
        completion_tokens: int,
        *,
        estimated: bool,
        status: str,
        http_status: int,
        cached_tokens: int = 0,
    ) -> asyncio.Future:
        """Replace the reservation by the real charge; idempotent, returns the commit future."""
        if self.settled is not None:
            return self.settled
        r = self.reservation
        self._calls.meters.pop(r.id, None)
        prompt = r.prompt_tokens if prompt_tokens is None else prompt_tokens
        self.cost = self.price(cost_of(self.route.model, prompt, completion_tokens, cached_tokens))
        latency_ms = int((time.monotonic() - self.started) * 1000)
        record = CallRecord(
            r,
            prompt,
            completion_tokens,
            self.cost,
            estimated,
            status,
            http_status,
            latency_ms,
            self.persisted,
            ",".join(f"{where}:{outcome}" for where, outcome in self.attempts) if len(self.attempts) > 1 else "",
            cached_tokens,
            self.budget_held,
        )
        Gate.charge_queued(self.user, self.key, r.amount, self.cost)
        self._calls.limiter.finish(self.key.id, self._limit_entry, prompt + completion_tokens)
        self.settled = self._calls.writer.submit_item(CALLS, record, self._committed)
        return self.settled

    def use(self, route: Route) -> None:
        """The deployment this call is now trying (failover may move it before any answer)."""
        self.route = route
        self.reservation.provider = route.provider.name
        self.reservation.upstream_model = route.upstream_model

    def price(self, cost: int) -> int:
        """What the user pays for `cost`: their plan's multiplier, if any."""
        return cost if self.plan is None else self.plan.price(cost)

    def release(self, status: str, http_status: int) -> asyncio.Future:
        """The call produced nothing billable (upstream error before any output)."""
        return self.settle(0, 0, estimated=False, status=status, http_status=http_status)

    def _committed(self, new_balance: int | None, error: BaseException | None) -> None:
        if error is not None:
            Gate.charge_committed(self.user, self.cost, self.user.balance)
            return
        Gate.charge_committed(self.user, self.cost, new_balance)
        if self._calls.leases is not None:
            self._calls.leases.charged(self.user, self.cost)
        if self.segment:
            self._calls.journal.closed(self.segment)
