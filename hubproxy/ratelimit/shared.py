"""Rate limits and spend caps for `serve --workers N`: the same rpm / tpm / max_parallel windows and
the same per-key spend caps as one process, seen by every worker, because each admission of a key
that has them is decided in a database transaction (store/limits.py). Calls of keys without them
never wait for it."""

from __future__ import annotations

import time
from functools import partial

from hubproxy.accounts.keys import KeyState, over_key_budget
from hubproxy.accounts.rules import Limits, period_start
from hubproxy.ratelimit.windows import check_call_size, refused
from hubproxy.store.sqlite.db import Writer
from hubproxy.store.sqlite.limits import admit_calls, finish_calls, hold_budgets, release_budgets

ADMIT = "limit_admit"
DONE = "limit_done"
HOLD = "budget_hold"


class SharedLimiter:
    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        writer.bulk(ADMIT, admit_calls)
        writer.bulk(DONE, finish_calls)
        writer.bulk(HOLD, hold_budgets)

    async def admit(self, key_id: str, policy: Limits, tokens: int, request_id: str) -> str:
        """Count the call against the key's limits in every worker's sight, or raise 429 (400 if it can
        never fit); returns what `finish` needs."""
        check_call_size(policy, tokens)
        refusal = await self.writer.submit_item(
            ADMIT, (request_id, key_id, policy.rpm, policy.tpm, policy.max_parallel, tokens, time.time())
        )
        if refusal is not None:
            raise refused(policy, *refusal)
        return request_id

    def finish(self, key_id: str, request_id: str | None, used_tokens: int | None) -> None:
        """The call ended: free its parallel slot and count its real tokens (queued, not awaited)."""
        if request_id is not None:
            self.writer.submit_item(DONE, (request_id, key_id, used_tokens, time.time()))

    async def hold_budget(self, key: KeyState, amount: int, request_id: str) -> bool:
        """Hold the call's worst case against the key's spend cap (402 if it does not fit); False when
        the key has no cap. The hold goes with the call's usage row (or `release_budget`)."""
        limit = key.policy.spend_limit
        if limit is None:
            return False
        since = period_start(key.policy.budget_period)
        left = await self.writer.submit_item(HOLD, (request_id, key.id, limit, since, amount))
        if left is not None:
            raise over_key_budget(key, left, amount)
        return True

    def release_budget(self, request_id: str) -> None:
        self.writer.submit(partial(release_budgets, request_ids=[request_id]))
