"""Requests per minute, tokens per minute and parallel calls, in sliding one-minute windows in memory.

Sliding windows, so `Retry-After` can say exactly when the next call would be admitted. Tokens are
counted when a call starts (its reservation: prompt bound + max_tokens) and corrected to the real
usage when it ends. `RateLimiter` is the pure windows (also used for login attempts);
`LocalLimiter` is the `Limiter` for one process's calls.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from hubproxy import errors
from hubproxy.accounts.rules import Limits
from hubproxy.periods import WINDOW, tokens_free_in
from hubproxy.ratelimit import Limiter


@dataclass(slots=True)
class TokenEntry:
    started: float
    tokens: int
    live: bool = True


@dataclass
class KeyWindow:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[TokenEntry] = field(default_factory=deque)
    token_sum: int = 0
    parallel: int = 0

    def expire(self, now: float) -> None:
        cutoff = now - WINDOW
        while self.requests and self.requests[0] <= cutoff:
            self.requests.popleft()
        while self.tokens and self.tokens[0].started <= cutoff:
            entry = self.tokens.popleft()
            entry.live = False
            self.token_sum -= entry.tokens


def check_call_size(policy: Limits, tokens: int) -> None:
    """A call that could use more tokens than the key may use in a whole minute can never pass: 400."""
    if policy.tpm and tokens > policy.tpm:
        raise errors.invalid_request(
            f"This call may use {tokens} tokens but the key allows {policy.tpm} per minute; "
            "lower max_tokens or the prompt.",
            param="max_tokens",
        )


def refused(policy: Limits, limit: str, wait: float) -> errors.GatewayError:
    """429 for the limit ("parallel", "rpm" or "tpm") that refuses a call, with the true wait."""
    if limit == "parallel":
        return errors.rate_limited(
            f"This key allows {policy.max_parallel} calls at a time; wait for one to finish.", wait
        )
    if limit == "rpm":
        return errors.rate_limited(f"This key allows {policy.rpm} requests per minute.", wait)
    return errors.rate_limited(f"This key allows {policy.tpm} tokens per minute.", wait)


class RateLimiter:
    def __init__(self) -> None:
        self._windows: dict[str, KeyWindow] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def prune(self, now: float | None = None) -> None:
        """Forget windows with nothing left in their minute: callers that count by something a client
        chooses (login attempts by email) would otherwise keep one per value forever."""
        now = time.monotonic() if now is None else now
        for name in list(self._windows):
            window = self._windows[name]
            window.expire(now)
            if not window.requests and not window.tokens and not window.parallel:
                del self._windows[name]

    def admit(self, key_id: str, policy: Limits, tokens: int, now: float | None = None) -> TokenEntry | None:
        """Count one call of `tokens` against the key's limits or raise 429; returns its token entry."""
        if not policy.any:
            return None
        now = time.monotonic() if now is None else now
        window = self._windows.setdefault(key_id, KeyWindow())
        window.expire(now)
        if policy.max_parallel and window.parallel >= policy.max_parallel:
            raise refused(policy, "parallel", 1.0)
        if policy.rpm and len(window.requests) >= policy.rpm:
            raise refused(policy, "rpm", window.requests[len(window.requests) - policy.rpm] + WINDOW - now)
        if policy.tpm:
            check_call_size(policy, tokens)
            excess = window.token_sum + tokens - policy.tpm
            if excess > 0:
                entries = ((entry.started, entry.tokens) for entry in window.tokens)
                raise refused(policy, "tpm", tokens_free_in(entries, excess, now))
        window.requests.append(now)
        window.parallel += 1
        entry = TokenEntry(now, tokens)
        window.tokens.append(entry)
        window.token_sum += tokens
        return entry

    def finish(self, key_id: str, entry: TokenEntry | None, used_tokens: int | None) -> None:
        """The call ended: free its parallel slot and replace its reserved tokens by the real count."""
        window = self._windows.get(key_id)
        if entry is None or window is None:
            return
        window.parallel -= 1
        if used_tokens is not None and entry.live:
            window.token_sum += used_tokens - entry.tokens
            entry.tokens = used_tokens


class LocalLimiter(Limiter):
    """One process's calls, counted in its memory."""

    def __init__(self) -> None:
        self.windows = RateLimiter()

    async def admit(self, key_id: str, limits: Limits, tokens: int, request_id: str) -> TokenEntry | None:
        return self.windows.admit(key_id, limits, tokens)

    def finish(self, key_id: str, ticket: object, used_tokens: int | None) -> None:
        self.windows.finish(key_id, ticket, used_tokens)  # type: ignore[arg-type]
