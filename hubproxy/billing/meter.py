"""One call's money: hold the worst case up front, settle to the real cost exactly once.

The hold is taken in memory at once (so parallel calls cannot spend the same balance), journaled
before the call goes upstream (so a kill -9 a millisecond later loses no call), and persisted as a
reservation row by a sweep once the call has been open for `PERSIST_AFTER` seconds: LLM calls that
take seconds are on disk while they run, while a call that finishes sooner costs no reservation
write at all. The settlement is awaited before the last bytes go to the client, so an answer the
client received is durably billed even if the server is killed right after.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from hubproxy import errors
from hubproxy.accounts.rules import effective_limits
from hubproxy.billing.budget import Budget
from hubproxy.billing.pricing import cost_of, estimate_prompt_tokens, hold_cost, prompt_bound, usage_cost
from hubproxy.config import BillingSettings, Plan
from hubproxy.feed import CallFeed
from hubproxy.metrics import CallMetrics
from hubproxy.protocols import Call, Usage
from hubproxy.ratelimit import Limiter
from hubproxy.routing.router import Route
from hubproxy.store import Store
from hubproxy.store.journal import CallJournal
from hubproxy.store.records import CallRecord, Reservation

PERSIST_AFTER = 0.1


def minute_of_day() -> int:
    """Minutes since midnight UTC: which of a model's `hours` prices is in force."""
    now = time.gmtime()
    return now.tm_hour * 60 + now.tm_min


class OpenCalls:
    """Calls in flight in this process, what they are held against, and the sweep that persists them."""

    def __init__(self, store: Store, budget: Budget, limiter: Limiter) -> None:
        self.store = store
        self.budget = budget
        self.limiter = limiter
        self.journal: CallJournal | None = None  # set once the server runs (the lifecycle opens it)
        self.meters: dict[str, CallMeter] = {}
        self.metrics = CallMetrics()
        self.feed = CallFeed()

    def persist_due(self, now: float | None = None) -> int:
        """Queue the reservations of calls open longer than PERSIST_AFTER; returns how many."""
        cutoff = (now if now is not None else time.monotonic()) - PERSIST_AFTER
        due = [m for m in self.meters.values() if not m.persisted and m.started <= cutoff]
        if due:
            for meter in due:
                meter.persisted = True
            self.store.open_reservations([m.reservation for m in due])
        return len(due)


class CallMeter:
    __slots__ = (
        "_calls",
        "_ticket",
        "attempts",
        "cap_held",
        "cost",
        "first_byte",
        "key",
        "persisted",
        "plan",
        "priced",
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
        billing: BillingSettings,
        call: Call,
        route: Route,
        *,
        unseen: int,
        max_output: int,
        searches: int = 0,
        plan: Plan | None = None,
    ) -> None:
        """`max_output`: the output tokens the call may make, every choice's (0: embeddings).
        `unseen`: prompt tokens the body's size does not show (images by URL, a tool preamble).
        `searches`: the most web searches its server tools may make (billed per search)."""
        model = route.model
        # billed at the prices in force when the call starts, held at the dearest it could be billed at
        self.priced = model.in_force(minute_of_day()) if model.hours else model
        body_bytes = len(call.raw)
        bound = prompt_bound(body_bytes, unseen)
        estimate = estimate_prompt_tokens(body_bytes, billing.bytes_per_token)
        self.plan = plan
        self.tokens = bound + max_output
        self._ticket: object = None
        assert call.key is not None and call.user is not None  # a metered call is an authorized one
        self._calls, self.user, self.key, self.route = calls, call.user, call.key, route
        self.reservation = Reservation(
            id=call.request_id,
            user_id=call.user.id,
            key_id=call.key.id,
            model=model.name,
            provider=route.provider.name,
            upstream_model=route.upstream_model,
            endpoint=call.endpoint.path,
            stream=call.stream,
            amount=self.price(hold_cost(model.dearest, bound, max_output, searches)),
            prompt_tokens=estimate,
            prompt_cost=self.price(cost_of(self.priced, estimate, 0)),
            price_id=model.price_id,
        )
        self.started = time.monotonic()
        self.first_byte = 0.0  # when a stream's first event arrived (0: not a stream, or none came)
        self.attempts: list[tuple[str, object]] = []  # (deployment, its answer); written only if > 1
        self.persisted = False
        self.cap_held = False
        self.settled: asyncio.Future | None = None
        self.segment = 0
        self.cost = 0

    async def reserve(self) -> None:
        """Count the call against the key's rate limits (or raise 429), then hold its worst-case cost
        (or raise 402), and journal it."""
        calls, key = self._calls, self.key
        if not calls.store.available:
            raise errors.upstream_unavailable(
                "hubproxy's database is unreachable, so this call could not be billed: try again shortly.", 503
            )
        limits = effective_limits(key.policy, self.plan)
        if limits.any:
            self._ticket = await calls.limiter.admit(key.id, limits, self.tokens, self.reservation.id)
        try:
            self.cap_held = await calls.budget.hold(self.user, key, self.reservation.amount, self.reservation.id)
        except BaseException:
            if self._ticket is not None:
                calls.limiter.finish(key.id, self._ticket, 0)
            raise
        calls.meters[self.reservation.id] = self
        if calls.journal is not None:
            self.segment = calls.journal.opened(self.reservation)

    def settle(self, usage: Usage | None, *, output_estimate: int = 0, status: str, http_status: int) -> asyncio.Future:
        """Replace the hold by the real charge (`usage`, or None: the prompt estimate and
        `output_estimate`, marked estimated); idempotent, returns the commit future."""
        if self.settled is not None:
            return self.settled
        r = self.reservation
        calls = self._calls
        calls.meters.pop(r.id, None)
        estimated = usage is None
        if usage is None:
            usage = Usage(r.prompt_tokens, output_estimate)
        elif usage.reasoning or usage.uncounted:
            usage = output_billed(usage, self.route.provider.reasoning)
        self.cost = cost = self.price(usage_cost(self.priced, usage))
        seconds = time.monotonic() - self.started
        tried = ",".join(f"{where}:{outcome}" for where, outcome in self.attempts) if len(self.attempts) > 1 else ""
        record = CallRecord(
            reservation=r,
            usage=usage,
            cost=cost,
            estimated=estimated,
            status=status,
            http_status=http_status,
            latency_ms=int(seconds * 1000),
            persisted=self.persisted,
            attempts=tried,
            budget_held=self.cap_held,
            over_reservation=cost - r.amount if cost > r.amount else 0,
        )
        prompt, output = usage.input, usage.output
        calls.metrics.record(
            self.route.model.name,
            r.provider,
            status,
            self.user.email,
            (prompt, output, usage.cached, usage.cache_write, usage.cache_write_1h, usage.reasoning),
            cost,
            seconds,
            self.first_byte - self.started if self.first_byte else None,
        )
        if calls.feed.active:
            calls.feed.publish(
                {
                    "request_id": r.id,
                    "time": time.time(),
                    "user": self.user.email,
                    "key_id": r.key_id,
                    "model": self.route.model.name,
                    "provider": r.provider,
                    "status": status,
                    "http_status": http_status,
                    "prompt_tokens": prompt,
                    "completion_tokens": output,
                    "cost": cost,
                    "latency_ms": record.latency_ms,
                }
            )
        calls.budget.charge(self.user, self.key, r.amount, cost)
        if self._ticket is not None:
            calls.limiter.finish(self.key.id, self._ticket, prompt + output)
        self.settled = calls.store.record_call(record, self._committed)
        return self.settled

    def release(self, status: str, http_status: int) -> asyncio.Future:
        """The call produced nothing billable (upstream error before any output)."""
        return self.settle(Usage(0, 0), status=status, http_status=http_status)

    def use(self, route: Route) -> None:
        """The deployment this call is now trying (failover may move it before any answer)."""
        self.route = route
        self.reservation.provider = route.provider.name
        self.reservation.upstream_model = route.upstream_model

    def price(self, cost: int) -> int:
        """What the user pays for `cost`: their plan's multiplier, if any."""
        return cost if self.plan is None else self.plan.price(cost)

    def _committed(self, new_balance: int | None, error: BaseException | None) -> None:
        self._calls.budget.committed(self.user, self.cost, None if error is not None else new_balance)
        journal = self._calls.journal
        if error is None and self.segment and journal is not None:
            journal.closed(self.segment)


def output_billed(usage: Usage, rule: str) -> Usage:
    """The usage with every output token the provider bills in `output`, reasoning once.

    `added` (xAI): reasoning is reported beside the completion tokens, so it is added to them. Either
    rule: tokens a chat usage's `total_tokens` counts beyond prompt and completion are output the
    provider bills (thoughts left out of `completion_tokens`, as some OpenAI-compatible APIs do for
    Gemini), so the output is at least completion + those; reasoning is never more than the output.
    """
    hidden = max(usage.reasoning, usage.uncounted) if rule == "added" else usage.uncounted
    if not hidden and usage.reasoning <= usage.output:  # most reasoning calls: nothing to change
        return usage
    output = usage.output + hidden
    return msgspec.structs.replace(usage, output=output, reasoning=min(max(usage.reasoning, hidden), output))
