"""Rate limits per key: requests per minute, tokens per minute, calls at a time.

One `Limiter` interface, three implementations with the same signature: `LocalLimiter` (windows in
this process's memory, `windows.py`), `SharedLimiter` (windows in the store, seen by every worker
of one `serve`, `shared.py`) and `RedisLimiter` (windows in Redis, seen by every instance on every
host, `redis_windows.py`). Both refuse with the errors `windows.refused` makes. Keys without limits
never reach a limiter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from hubproxy.accounts.rules import Limits


class Limiter(ABC):
    @abstractmethod
    async def admit(self, key_id: str, limits: Limits, tokens: int, request_id: str) -> object:
        """Count one call of up to `tokens` against the key's limits, or raise 429 (400 if it can never
        fit); returns the ticket `finish` takes."""

    @abstractmethod
    def finish(self, key_id: str, ticket: object, used_tokens: int | None) -> None:
        """The call ended: free its slot and count its real tokens instead of the reserved ones."""

    async def close(self) -> None:
        """Let go of connections (Redis's), once the server stops."""
        return None
