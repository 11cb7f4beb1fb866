"""GET /v1/models, GET /v1/models/{id}, GET /v1/key (what a key may see of itself) and GET /health."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import time
from pathlib import Path

import orjson
from aiohttp import web

from hubproxy import __version__, errors
from hubproxy.accounts.rules import model_allowed
from hubproxy.money import format_usd
from hubproxy.routing.router import Route
from hubproxy.server.auth import api_key_from, authorize
from hubproxy.server.state import STATE
from hubproxy.store.sql import alerts, usage

CREATED = 1_700_000_000


def model_object(route: Route) -> dict:
    return {"id": route.model.name, "object": "model", "created": CREATED, "owned_by": route.provider.name}


def served_to(request: web.Request) -> list[Route]:
    """The models the calling key may use (priced and allowed), for the OpenAI and Gemini lists."""
    key, _ = authorize(request)
    return [r for r in request.app[STATE].router.routes() if r.model.priced and model_allowed(key.policy, r.model)]


def route_for(request: web.Request, model: str) -> Route:
    """One model the calling key may use, or 404 / 403."""
    key, _ = authorize(request)
    route = request.app[STATE].router.resolve(model)[0]
    if not model_allowed(key.policy, route.model):
        raise errors.model_not_allowed(route.model.name)
    return route


async def list_models(request: web.Request) -> web.Response:
    """Only the models this key may use."""
    return web.json_response({"object": "list", "data": [model_object(r) for r in served_to(request)]})


async def get_model(request: web.Request) -> web.Response:
    return web.json_response(model_object(route_for(request, request.match_info["model"])))


def usd(pico: int) -> orjson.Fragment:
    return orjson.Fragment(format_usd(pico, min_places=2).encode())


async def key_status(request: web.Request) -> web.Response:
    """The calling key's own figures, for a tool's status line: its user's balance (what calls may
    still hold), its spend today (UTC, from the daily totals: one indexed read), and its spend cap and
    what is left of it this period (null: no cap)."""
    key, user = authorize(request)
    state = request.app[STATE]
    today = await state.store.read(usage.key_cost_on, key.id, time.strftime("%Y-%m-%d", time.gmtime()))
    left = key.budget_left()
    limit = key.policy.spend_limit
    body = {
        "object": "key",
        "name": key.name,
        "balance": usd(user.available + user.reserved),
        "spend_today": usd(today),
        "spend_limit": None if limit is None else usd(limit),
        "spend_left": None if left is None else usd(max(left, 0)),
        "budget_period": key.policy.budget_period if limit is not None else None,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    """Anyone: liveness only. A hubproxy key: the model count and each deployment's state, latency
    and error rate. The admin token (`hubproxy providers status` sends it): everything, with each
    deployment's last error, which may name upstream hosts."""
    state = request.app[STATE]
    token = api_key_from(request.headers)
    if not token:
        return web.json_response({"status": "ok"})
    admin = bool(state.admin_token) and hmac.compare_digest(token, state.admin_token)
    if not admin:
        authorize(request)
    deployments = state.health.snapshot()
    if not admin:
        for info in deployments.values():
            info.pop("last_error")
        return web.json_response(
            {"status": "ok", "version": __version__, "models": len(state.router.routes()), "deployments": deployments}
        )
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "models": len(state.router.routes()),
            "plans": len(state.config.plans),
            "users": len(state.accounts.users),
            **state.store.stats(),
            **({"redis_calls": state.calls.limiter.calls} if hasattr(state.calls.limiter, "calls") else {}),
            "open_calls": len(state.calls.meters),
            "deployments": deployments,
        }
    )


BREAKER_STATES = ("closed", "open", "half-open")


def other_workers_metrics(folder: Path) -> list[bytes]:
    """The other workers' latest counts (a worker that died keeps its last ones: counters only grow)."""
    own = f"{os.getpid()}.json"
    found = []
    for path in folder.glob("*.json"):
        if path.name != own:
            with contextlib.suppress(OSError):
                found.append(path.read_bytes())
    return found


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics` (Prometheus' text format): to the machine itself (not through a proxy), or to
    anyone with `[server] metrics_token` as a bearer token; 403 otherwise."""
    state = request.app[STATE]
    token = state.config.server.metrics_token
    local = request.remote in ("127.0.0.1", "::1") and not (
        "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
    )
    given = api_key_from(request.headers)
    if not local and not (token and given and hmac.compare_digest(given, token)):
        raise errors.GatewayError(
            403, "forbidden", "/metrics answers the machine itself, or a request with [server] metrics_token."
        )
    meters = list(state.calls.meters.values())
    stats = state.store.stats()
    deployments = state.health.snapshot()
    gauges: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        ("hubproxy_calls_in_flight", "gauge", "Calls admitted and not yet settled.", [({}, len(meters))]),
        (
            "hubproxy_streams_in_flight",
            "gauge",
            "Streamed calls admitted and not yet settled.",
            [({}, sum(1 for m in meters if m.reservation.stream))],
        ),
        (
            "hubproxy_deployment_breaker",
            "gauge",
            "1 for each deployment's breaker state (closed: serving; open: skipped; half-open: on trial).",
            [
                ({"deployment": key, "state": name}, int(info["state"] == name))
                for key, info in deployments.items()
                for name in BREAKER_STATES
            ],
        ),
        (
            "hubproxy_deployment_error_rate",
            "gauge",
            "Share of each deployment's recent calls that failed.",
            [({"deployment": key}, info["error_rate"]) for key, info in deployments.items()],
        ),
        (
            "hubproxy_write_queue_depth",
            "gauge",
            "Settlement write lists waiting for the store's writer.",
            [({}, stats.get("write_queue", 0))],
        ),
        ("hubproxy_writes_total", "counter", "Writes the store committed.", [({}, stats.get("writes", 0))]),
        (
            "hubproxy_alerts_total",
            "counter",
            "Budget alerts sent, by kind (balance, key_cap) and receiver (log, webhook, email): every worker's.",
            [({"kind": k, "receiver": r}, n) for k, r, n in await state.store.read(alerts.counts)],
        ),
    ]
    metrics = state.calls.metrics
    if state.metrics_shared:
        others = await asyncio.get_running_loop().run_in_executor(None, other_workers_metrics, state.paths.metrics)
        metrics = metrics.merged(others)
    body = metrics.render(gauges)
    content_type = "text/plain; version=0.0.4; charset=utf-8"
    return web.Response(body=body.encode(), headers={"Content-Type": content_type, "Cache-Control": "no-store"})
