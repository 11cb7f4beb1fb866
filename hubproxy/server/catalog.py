"""GET /v1/models, GET /v1/models/{id} and GET /health."""

from __future__ import annotations

from aiohttp import web

from hubproxy import __version__, errors
from hubproxy.policy import model_allowed
from hubproxy.routing import Route
from hubproxy.server.auth import authorize
from hubproxy.server.state import STATE

CREATED = 1_700_000_000


def model_object(route: Route) -> dict:
    return {"id": route.model.name, "object": "model", "created": CREATED, "owned_by": route.provider.name}


async def list_models(request: web.Request) -> web.Response:
    """Only the models this key may use."""
    key, _ = authorize(request)
    routes = [r for r in request.app[STATE].router.routes() if r.model.priced and model_allowed(key.policy, r.model)]
    return web.json_response({"object": "list", "data": [model_object(r) for r in routes]})


async def get_model(request: web.Request) -> web.Response:
    key, _ = authorize(request)
    route = request.app[STATE].router.resolve(request.match_info["model"])[0]
    if not model_allowed(key.policy, route.model):
        raise errors.model_not_allowed(route.model.name)
    return web.json_response(model_object(route))


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "models": len(state.router.routes()),
            "plans": len(state.config.plans),
            "users": len(state.gate.users),
            "writes": state.writer.writes,
            "write_batches": state.writer.batches,
            "open_calls": len(state.calls.meters),
            "deployments": state.health.snapshot(),
        }
    )
