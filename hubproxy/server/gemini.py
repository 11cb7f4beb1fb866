"""Google's Gemini API routes: `POST /v1beta/models/{model}:{method}` (generateContent,
streamGenerateContent, countTokens) and `GET /v1beta/models[/{model}]`, in Google's error shape.

The model and the method are in the path (Google's own resource names, https://ai.google.dev/api,
read 2026-12-07); a call is the same call every other route makes (`calls.proxy_call`), with an
endpoint made for the model and method. Gemini CLI and Google's SDKs send the key in `x-goog-api-key`
or `?key=` (`server.auth`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from hubproxy import errors
from hubproxy.protocols import gemini
from hubproxy.routing.router import Route
from hubproxy.server.auth import authorize
from hubproxy.server.calls import counted, proxy_call
from hubproxy.server.catalog import route_for, served_to
from hubproxy.server.errors import errors_rendered_by
from hubproxy.server.http import CALL_ROUTES
from hubproxy.server.request_body import read_request
from hubproxy.server.state import STATE, GatewayState

if TYPE_CHECKING:
    from hubproxy.server.http import CallAnswer, CallRequest

METHODS = ("generateContent", "streamGenerateContent", "countTokens")


def model_and_method(request: CallRequest) -> tuple[str, str]:
    target = request.match_info["target"]
    model, _, method = target.rpartition(":")
    if not model or method not in METHODS:
        raise errors.GatewayError(
            404,
            "not_found",
            f"Unknown method {target!r}: hubproxy serves models/{{model}}:{', :'.join(METHODS)} here.",
        )
    return model, method


async def model_call(request: CallRequest) -> CallAnswer:
    model, method = model_and_method(request)
    if method == "countTokens":
        return await count_tokens(request, model)
    stream = method == "streamGenerateContent"
    if stream and request.query.get("alt") != "sse":
        raise errors.invalid_request("streamGenerateContent is served as server-sent events here: add ?alt=sse.")
    return await proxy_call(gemini.Endpoint(model, stream), request)


async def count_tokens(request: CallRequest, model: str) -> web.Response:
    """`:countTokens`: asked of the model's deployment where it serves Gemini's API, else counted here
    (`calls.counted`). Nothing is billed."""
    state: GatewayState = request.app[STATE]
    key, _ = authorize(request)
    raw = await read_request(request, state.config.server)

    def asked(route: Route) -> tuple[str, bytes, bytes]:
        return f"/v1beta/models/{route.upstream_model}:countTokens", raw, b""

    return await counted(state, key, model, len(raw), gemini.API, asked, "totalTokens")


def model_resource(route: Route) -> dict:
    """A model as Google lists one (https://ai.google.dev/api/models#Model, read 2026-12-07)."""
    model = route.model
    resource: dict[str, object] = {
        "name": f"models/{model.name}",
        "baseModelId": model.name,
        "version": "hubproxy",
        "displayName": model.name,
        "description": f"{model.name}, served by hubproxy through {route.provider.name}",
        "supportedGenerationMethods": list(METHODS),
    }
    if model.max_output_tokens:
        resource["outputTokenLimit"] = model.max_output_tokens
    return resource


async def list_models(request: web.Request) -> web.Response:
    """Only the models this key may use."""
    return web.json_response({"models": [model_resource(r) for r in served_to(request)]})


async def get_model(request: web.Request) -> web.Response:
    return web.json_response(model_resource(route_for(request, request.match_info["target"])))


def add_gemini_routes(app: web.Application) -> None:
    google_errors = errors_rendered_by(gemini.error_body)
    calls = google_errors(model_call)
    app.router.add_post("/v1beta/models/{target:.+}", calls)
    generating = (":generateContent", ":streamGenerateContent")  # countTokens: aiohttp's to serve
    app[CALL_ROUTES].prefixed.append(("/v1beta/models/", generating, "target", calls))
    app.router.add_get("/v1beta/models", google_errors(list_models))
    app.router.add_get("/v1beta/models/{target:.+}", google_errors(get_model))
