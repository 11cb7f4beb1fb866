"""Rate limits for `serve --workers N`: the same rpm / tpm / max_parallel windows as one process, seen
by every worker, because each admission of a limited key is decided in a database transaction
(store/limits.py). Calls of keys without limits never wait for it."""

from __future__ import annotations

import time

from hubproxy.limits import check_call_size, refused
from hubproxy.policy import Limits
from hubproxy.store.db import Writer
from hubproxy.store.limits import admit_calls, finish_calls

ADMIT = "limit_admit"
DONE = "limit_done"


class SharedLimiter:
    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        writer.bulk(ADMIT, admit_calls)
        writer.bulk(DONE, finish_calls)

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
