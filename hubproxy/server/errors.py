"""Rendering errors: every failure leaves in the route's protocol error shape (OpenAI's on every route
today, rendered by `protocols.openai_chat`) with an x-request-id.

Handlers are wrapped by `openai_errors` rather than by a middleware: aiohttp middlewares cost a
wrapper call on every request, and every route here is ours anyway (a catch-all route answers the
rest).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hubproxy.errors import GatewayError
from hubproxy.protocols import anthropic_messages, openai_chat
from hubproxy.server.cors import allow_origin
from hubproxy.server.http import Answer

if TYPE_CHECKING:
    from hubproxy.server.http import CallAnswer, CallRequest

log = logging.getLogger("hubproxy.server")

REQUEST_ID = "x-request-id"


def request_prefix(pid: int) -> str:
    """How the request ids of the process `pid` start: the parent of `serve --workers` finds a dead
    worker's open calls by it."""
    return f"req_{pid:x}x"


PROCESS_PREFIX = request_prefix(os.getpid()) + secrets.token_hex(4)
REQUEST_COUNTER_DIGITS = 10
_counter = itertools.count(1)

Handler = Callable[[Any], Awaitable[Any]]  # a route's: given aiohttp's request, or server.http's


def new_request_id() -> str:
    """Unique without a syscall per request: the process id, a random tag and a counter."""
    return f"{PROCESS_PREFIX}{next(_counter):010x}"  # REQUEST_COUNTER_DIGITS


Render = Callable[[GatewayError], bytes]


def error_response(err: GatewayError, request_id: str, render: Render = openai_chat.error_body) -> Answer:
    headers = {REQUEST_ID: request_id, **err.headers}
    if not err.retryable and err.status != 429:
        headers["x-should-retry"] = "false"
    response = Answer(render(err), err.status, headers)
    response.close = err.status in UNREAD_BODY  # the rest of the body is not wanted: do not wait for it
    return response


UNREAD_BODY = frozenset({408, 413})
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def errors_rendered_by(render: Render) -> Callable[[Handler], Handler]:
    """A wrapper that gives each request an id and turns anything raised into an error response in
    the shape `render` makes (the route's protocol's)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: CallRequest) -> CallAnswer:
            request_id = new_request_id()
            request["request_id"] = request_id
            try:
                response = await handler(request)
            except GatewayError as refused:
                response = error_response(refused, request_id, render)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                message = "Request body is too large." if exc.status == 413 else (exc.text or exc.reason)
                err = GatewayError(exc.status, HTTP_CODES.get(exc.status, "invalid_request_error"), message)
                response = error_response(err, request_id, render)
            except Exception:
                log.exception("internal error on %s %s (request %s)", request.method, request.path, request_id)
                err = GatewayError(
                    500, "internal_error", "hubproxy hit an internal error.", type="api_error", retryable=True
                )
                response = error_response(err, request_id, render)
            if not response.prepared:
                headers = response.headers
                headers[REQUEST_ID] = request_id
                allow_origin(request, headers)
                if response.__class__ is Answer and isinstance(request, web.Request):
                    return response.for_aiohttp()
            return response

        return wrapped

    return wrap


openai_errors = errors_rendered_by(openai_chat.error_body)
anthropic_errors = errors_rendered_by(anthropic_messages.error_body)


CATCH_ALL = "catch-all"  # the names of the routes that take every path, which `allowed_methods` skips
PREFLIGHT = "preflight"
UNKNOWN_PAGE = "unknown-page"  # the dashboard's, for a browser's GET
EVERY_PATH = frozenset((CATCH_ALL, PREFLIGHT, UNKNOWN_PAGE))


async def unknown_route(request: web.Request) -> web.StreamResponse:
    """A 405 naming the methods a known path takes (`Allow`), else a 404, logged so that what a client
    expects and hubproxy lacks shows up; in Anthropic's shape for a Messages path (Claude Code given a
    base URL with `/v1` asks for `/v1/v1/messages`), else OpenAI's."""
    messages_path = request.path.rstrip("/").endswith(("/messages", "/messages/count_tokens"))
    return await (no_route_for_anthropic if messages_path else no_route_for_openai)(request)


def websocket_refused(request: web.Request) -> GatewayError:
    """426 for a WebSocket upgrade hubproxy does not serve: what makes Codex use HTTP at once (a 404 or
    405 costs it retries first)."""
    return GatewayError(
        426,
        "upgrade_required",
        f"hubproxy does not serve {request.path} over a WebSocket here; use HTTP.",
        headers={"Upgrade": "HTTP/1.1"},
    )


async def no_route(request: web.Request) -> web.Response:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        raise websocket_refused(request)
    allowed = await allowed_methods(request)
    log.info("no route for %s %s", request.method, request.path[:200])
    meant = await meant_path(request)
    if meant is not None:
        root = f"{request.scheme}://{request.host}"
        raise GatewayError(
            404,
            "not_found",
            f"Unknown route {request.method} {request.path}: the API is at {meant}. Give OpenAI clients the base URL "
            f"{root}/v1 and Anthropic clients {root} (without /v1).",
        )
    if allowed:
        raise GatewayError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}; it takes {', '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )
    raise GatewayError(404, "not_found", f"Unknown route {request.method} {request.path}.")


no_route_for_openai = openai_errors(no_route)
no_route_for_anthropic = anthropic_errors(no_route)


async def meant_path(request: web.Request) -> str | None:
    """The route a path missing `/v1` (or with it twice) was meant for, where there is one: the mark of
    a base URL given without `/v1`, or with it to a client that adds its own."""
    path = request.path
    if path.startswith("/v1/v1/"):
        meant = path[3:]
    elif not path.startswith("/v1/") and path.lstrip("/").split("/", 1)[0] in API_ROOTS:
        meant = "/v1" + path
    else:
        return None
    clone = request.clone(rel_url=meant)
    for resource in request.app.router.resources():
        if resource.name in EVERY_PATH:
            continue
        match, _ = await resource.resolve(clone)
        if match is not None:
            return meant
    return None


API_ROOTS = frozenset(("chat", "completions", "embeddings", "messages", "responses", "models"))


async def allowed_methods(request: web.Request) -> list[str]:
    """The methods the app's routes take on this request's path (none: no route has the path)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name in EVERY_PATH:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    return sorted(allowed | {"OPTIONS"}) if allowed else []
