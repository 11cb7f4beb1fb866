"""GET /v1/models, GET /v1/models/{id} and GET /health."""

from __future__ import annotations

from aiohttp import web

from hubproxy import __version__
from hubproxy.routing import Route
from hubproxy.server.proxy import api_key_from
from hubproxy.server.state import STATE

CREATED = 1_700_000_000


def model_object(route: Route) -> dict:
    return {"id": route.model.name, "object": "model", "created": CREATED, "owned_by": route.provider.name}


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.gate.authenticate(api_key_from(request.headers))
    return web.json_response({"object": "list", "data": [model_object(r) for r in state.router.routes()]})


async def get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.gate.authenticate(api_key_from(request.headers))
    return web.json_response(model_object(state.router.resolve(request.match_info["model"])))


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "models": len(state.router.routes()),
            "users": len(state.gate.users),
            "writes": state.writer.writes,
            "write_batches": state.writer.batches,
            "open_calls": len(state.calls.meters),
        }
    )
