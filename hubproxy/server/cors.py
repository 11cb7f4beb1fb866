"""Cross-origin calls from browser clients (LobeChat's web build, a team's own page): preflights are
answered, and answers to allowed origins carry the `Access-Control-*` headers browsers look for.

`[server] cors_origins` lists the origins: exact (`https://chat.example.com`), any port of a host
(`http://localhost:*`), or `*`. hubproxy keys travel in headers, never cookies, so no credentials
mode is offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from hubproxy.errors import GatewayError
from hubproxy.server.state import STATE

if TYPE_CHECKING:
    from hubproxy.server.http import CallRequest

METHODS = "GET, POST, DELETE, OPTIONS"
EXPOSED = "x-request-id, retry-after, retry-after-ms, x-should-retry"
PREFLIGHT_MAX_AGE = "600"


def allowed(request: CallRequest, origin: str) -> bool:
    matcher = request.app[STATE].cors
    return matcher is not None and matcher.fullmatch(origin) is not None


def allow_origin(request: CallRequest, headers: CIMultiDict) -> None:
    """Before an answer is sent: one to an allowed origin says so (and that it varies by origin).
    Called where responses are made rather than from aiohttp's on_response_prepare signal, which
    cost ~7k instructions per call (`python -m bench.instructions`)."""
    origin = request.headers.get("Origin")
    if origin is None or not allowed(request, origin):
        return
    headers["Access-Control-Allow-Origin"] = origin
    headers["Access-Control-Expose-Headers"] = EXPOSED
    headers.add("Vary", "Origin")


async def preflight(request: web.Request) -> web.Response:
    """OPTIONS on any path: allowed origins get the methods and exactly the headers they asked for."""
    origin = request.headers.get("Origin")
    if origin is None or "Access-Control-Request-Method" not in request.headers:
        return web.Response(status=204, headers={"Allow": METHODS})
    if not allowed(request, origin):
        raise GatewayError(
            403,
            "origin_not_allowed",
            f"Calls from {origin} are not allowed; the operator can add it to [server] cors_origins.",
            type="permission_error",
        )
    headers = {"Access-Control-Allow-Methods": METHODS, "Access-Control-Max-Age": PREFLIGHT_MAX_AGE}
    asked = request.headers.get("Access-Control-Request-Headers")
    if asked:
        headers["Access-Control-Allow-Headers"] = asked
    return web.Response(status=204, headers=headers)
