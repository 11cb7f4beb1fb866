"""Failover: try a model's deployments in order until one gives an answer worth passing on.

Connection failures, timeouts, 429, 5xx and refusals of hubproxy's own upstream key move on to the
next deployment, after a short backoff; nothing has reached the client yet, so it never sees a
switch. The last deployment's answer, whatever it is, is the one returned. The breaker (`health`)
learns from every try.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hubproxy import errors
from hubproxy.config import RoutingSettings
from hubproxy.routing.health import HealthBoard
from hubproxy.routing.router import Route
from hubproxy.secrets import provider_api_key
from hubproxy.upstream.adapter import PROXY_FAILED
from hubproxy.upstream.http import Response, UpstreamError
from hubproxy.upstream.pool import Upstreams

if TYPE_CHECKING:
    from hubproxy.protocols import Leg, Outbound

FAILOVER_STATUSES = frozenset({401, 402, 403, 408, 429, 500, 502, 503, 504})
NOT_THE_CALLERS_DOING = frozenset({401, 402, 403, 407, 429})  # hubproxy's own upstream key refused or limited


class NoAnswer(Exception):
    """No deployment could be asked: the error for the client, and the outcome for the usage row."""

    def __init__(self, error: errors.GatewayError, outcome: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome = outcome


class Failover:
    """The tries of one call, with what every call shares: the upstreams, the breaker, the settings
    and the stored provider keys (the last two replaced when config.toml changes)."""

    def __init__(
        self, upstreams: Upstreams, health: HealthBoard, settings: RoutingSettings, secrets: dict[str, str]
    ) -> None:
        self.upstreams = upstreams
        self.health = health
        self.settings = settings
        self.secrets = secrets

    async def first_answer(
        self,
        candidates: list[Route],
        request_for: Callable[[Route], Outbound | None],
        stream: bool,
        caller: int,
        on_try: Callable[[Route], None],
        tried: list[tuple[str, object]],
    ) -> tuple[Response, Route, str | None, Leg]:
        """The first answer worth passing on, its deployment, the key it was sent with and the leg that
        reads it; the answer's provider slot (`max_concurrent`) stays taken until the caller releases
        it. `request_for(route)` gives the request for a deployment, or None when the client's format
        cannot reach it. Each try is appended to `tried`; `on_try(route)` runs before each.
        Raises `NoAnswer` when no deployment answered."""
        settings, upstreams, health = self.settings, self.upstreams, self.health
        tries = candidates[: settings.max_attempts]
        for number, route in enumerate(tries, start=1):
            last = number == len(tries)
            try:
                request = request_for(route)
            except errors.GatewayError as refused:  # the request cannot take this way (a translator said why)
                raise NoAnswer(refused, "refused") from None
            if request is None:
                tried.append((route.key, "other_wire_api"))
                if last:
                    raise NoAnswer(
                        errors.invalid_request(
                            f"{route.model.name!r} is served only over a wire API this route cannot reach yet.",
                            param="model",
                        ),
                        "wire_api_mismatch",
                    )
                continue
            if not upstreams.try_acquire(route.provider):
                tried.append((route.key, "busy"))
                if last:
                    raise NoAnswer(
                        errors.upstream_unavailable(
                            f"Every deployment of {route.model.name!r} is at its max_concurrent limit; "
                            "try again shortly.",
                            status=503,
                        ),
                        "upstream_busy",
                    )
                continue
            api_key = provider_api_key(route.provider, self.secrets)
            on_try(route)
            started = time.monotonic()
            adapter = upstreams.adapter(route.provider)
            timeout = upstreams.first_byte(route.provider)
            try:
                try:
                    resp = await adapter.send(
                        request.path, request.body, api_key, stream, timeout, request.api, request.headers
                    )
                except (TimeoutError, UpstreamError) as exc:
                    raise adapter.unreachable(exc, timeout) from None
            except errors.GatewayError as exc:
                upstreams.release(route.provider)
                if exc.code != PROXY_FAILED:  # a proxy that is down says nothing of the provider
                    health.failure(route.key, exc.message)
                tried.append((route.key, "unreachable"))
                if last:
                    raise NoAnswer(exc, "upstream_unreachable") from None
                await asyncio.sleep(settings.backoff_ms * 2 ** (number - 1) / 1000)
                continue
            except BaseException:
                upstreams.release(route.provider)
                raise
            tried.append((route.key, resp.status))
            if resp.status not in FAILOVER_STATUSES:
                health.success(route.key, (time.monotonic() - started) * 1000)
                return resp, route, api_key, request.leg
            blamed = None if resp.status in NOT_THE_CALLERS_DOING else caller
            health.failure(route.key, f"HTTP {resp.status}", blamed)
            if last:
                return resp, route, api_key, request.leg
            resp.close()
            upstreams.release(route.provider)
            await asyncio.sleep(settings.backoff_ms * 2 ** (number - 1) / 1000)
        raise AssertionError("unreachable: the loop returns or raises on its last try")
