"""How each deployment is doing: a circuit breaker, recent latency and error rate.

A deployment that fails `breaker_failures` times in a row is skipped for `breaker_cooldown`
seconds; then one call is let through, and its success closes the breaker again. An error answer
may be the caller's own doing (a request the upstream chokes on with a 500), so failures that came
as answers open the breaker only when they came from at least two users: one key holder cannot take
a model offline for everyone. A failure no request can cause (no connection, no answer in time)
counts whoever made the call. Upstream answers
that mean hubproxy's own upstream key is wrong or out of money (401/402/403) are kept as the last
error, so `/health` and `providers status` can show them loudly.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from hubproxy.config import RoutingSettings

RECENT = 50


@dataclass
class DeploymentHealth:
    failures_in_a_row: int = 0
    open_until: float = 0.0
    latency_ms: float | None = None
    outcomes: deque = field(default_factory=lambda: deque(maxlen=RECENT))
    last_error: str | None = None
    blamed: set = field(default_factory=set)  # users whose calls make up the current run of failures

    def state(self, now: float) -> str:
        if self.open_until > now:
            return "open"
        return "half-open" if self.open_until else "closed"


class HealthBoard:
    def __init__(self, settings: RoutingSettings) -> None:
        self.settings = settings
        self._by_key: dict[str, DeploymentHealth] = {}

    def of(self, key: str) -> DeploymentHealth:
        health = self._by_key.get(key)
        if health is None:
            health = self._by_key[key] = DeploymentHealth()
        return health

    def available(self, key: str, now: float | None = None) -> bool:
        health = self._by_key.get(key)
        return health is None or health.open_until <= (time.monotonic() if now is None else now)

    def success(self, key: str, latency_ms: float) -> None:
        health = self.of(key)
        health.failures_in_a_row = 0
        health.open_until = 0.0
        health.blamed.clear()
        health.outcomes.append(True)
        health.latency_ms = latency_ms if health.latency_ms is None else 0.8 * health.latency_ms + 0.2 * latency_ms

    def failure(self, key: str, reason: str, caller: int | None = None, now: float | None = None) -> None:
        """`caller`: the user whose request got an error answer, or None when the upstream gave no
        answer at all (nothing in the request can cause that)."""
        health = self.of(key)
        health.failures_in_a_row += 1
        health.outcomes.append(False)
        health.last_error = reason
        health.blamed.add(caller)
        if health.failures_in_a_row >= self.settings.breaker_failures and (
            None in health.blamed or len(health.blamed) > 1
        ):
            health.open_until = (time.monotonic() if now is None else now) + self.settings.breaker_cooldown

    def snapshot(self) -> dict[str, dict]:
        now = time.monotonic()
        report = {}
        for key, health in self._by_key.items():
            total = len(health.outcomes)
            report[key] = {
                "state": health.state(now),
                "latency_ms": None if health.latency_ms is None else round(health.latency_ms, 1),
                "error_rate": round(health.outcomes.count(False) / total, 3) if total else 0.0,
                "last_error": health.last_error,
            }
        return report
