"""One call's money: reserve the worst case up front, settle to the real cost exactly once.

The reservation is queued to the writer without waiting (a crash before it lands also means the
client never got an answer). The settlement is awaited before the last bytes go to the client, so a
call whose answer reached the client is durably billed even if the server is killed right after.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from hubproxy.billing import CallRecord, Reservation, cost_of, estimate_prompt_tokens, reservation_amount
from hubproxy.config import BillingSettings
from hubproxy.gate import Gate, KeyState, UserState
from hubproxy.routing import Route
from hubproxy.store.db import Writer
from hubproxy.store.usage import open_reservation, record_call


class CallMeter:
    __slots__ = ("_gate", "_started", "_writer", "cost", "reservation", "route", "settled", "user")

    def __init__(
        self,
        gate: Gate,
        writer: Writer,
        billing: BillingSettings,
        request_id: str,
        key: KeyState,
        user: UserState,
        route: Route,
        endpoint: str,
        stream: bool,
        body_bytes: int,
        max_tokens: int | None,
    ) -> None:
        self._gate, self._writer, self.user, self.route = gate, writer, user, route
        model = route.model
        prompt = estimate_prompt_tokens(body_bytes, billing.bytes_per_token)
        output = 0 if endpoint == "/embeddings" else (max_tokens or billing.default_max_tokens)
        amount = reservation_amount(model, prompt, output)
        gate.reserve(user, amount)
        self.reservation = Reservation(
            id=request_id,
            user_id=user.id,
            key_id=key.id,
            model=model.name,
            provider=route.provider.name,
            upstream_model=model.upstream_model,
            endpoint=endpoint,
            stream=stream,
            amount=amount,
            prompt_tokens=prompt,
            prompt_cost=cost_of(model, prompt, 0),
        )
        self._started = time.monotonic()
        self.settled: asyncio.Future | None = None
        self.cost = 0
        writer.submit(partial(open_reservation, r=self.reservation))

    def settle(
        self,
        prompt_tokens: int | None,
        completion_tokens: int,
        *,
        estimated: bool,
        status: str,
        http_status: int,
    ) -> asyncio.Future:
        """Replace the reservation by the real charge; idempotent, returns the commit future."""
        if self.settled is not None:
            return self.settled
        r = self.reservation
        prompt = r.prompt_tokens if prompt_tokens is None else prompt_tokens
        self.cost = cost_of(self.route.model, prompt, completion_tokens)
        record = CallRecord(
            r,
            prompt,
            completion_tokens,
            self.cost,
            estimated,
            status,
            http_status,
            int((time.monotonic() - self._started) * 1000),
        )
        Gate.charge_queued(self.user, r.amount, self.cost)
        fut = self._writer.submit(partial(record_call, rec=record))
        fut.add_done_callback(self._committed)
        self.settled = fut
        return fut

    def release(self, status: str, http_status: int) -> asyncio.Future:
        """The call produced nothing billable (upstream error before any output)."""
        return self.settle(0, 0, estimated=False, status=status, http_status=http_status)

    def _committed(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            Gate.charge_committed(self.user, self.cost, self.user.balance)
            return
        Gate.charge_committed(self.user, self.cost, fut.result())
