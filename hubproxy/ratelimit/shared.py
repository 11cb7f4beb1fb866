"""Rate limits for `serve --workers N`: the same rpm / tpm / max_parallel windows as one process, seen
by every worker, because each admission of a limited key is decided in a store transaction."""

from __future__ import annotations

import time

from hubproxy.accounts.rules import Limits
from hubproxy.ratelimit import Limiter
from hubproxy.ratelimit.windows import check_call_size, refused
from hubproxy.store import Store


class SharedLimiter(Limiter):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def admit(self, key_id: str, limits: Limits, tokens: int, request_id: str) -> str:
        check_call_size(limits, tokens)
        refusal = await self.store.admit_shared(
            request_id, key_id, limits.rpm, limits.tpm, limits.max_parallel, tokens, time.time()
        )
        if refusal is not None:
            raise refused(limits, refusal.limit, refusal.wait)
        return request_id

    def finish(self, key_id: str, ticket: object, used_tokens: int | None) -> None:
        """Queued, not awaited."""
        if ticket is not None:
            self.store.finish_shared(str(ticket), key_id, used_tokens, time.time())
