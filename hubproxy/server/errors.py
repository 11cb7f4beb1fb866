"""Rendering errors: every failure leaves as an OpenAI-shaped JSON body with an x-request-id."""

from __future__ import annotations

import logging
import uuid

import orjson
from aiohttp import web

from hubproxy.errors import GatewayError

log = logging.getLogger("hubproxy.server")

REQUEST_ID = "x-request-id"


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


def error_response(err: GatewayError, request_id: str) -> web.Response:
    headers = {REQUEST_ID: request_id, **err.headers}
    if not err.retryable and err.status != 429:
        headers["x-should-retry"] = "false"
    return web.Response(
        status=err.status, body=orjson.dumps(err.body()), content_type="application/json", headers=headers
    )


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    request_id = new_request_id()
    request["request_id"] = request_id
    try:
        response = await handler(request)
    except GatewayError as err:
        return error_response(err, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.status != 413 else "Request body is too large."
        if exc.status == 404:
            message = f"Unknown route {request.method} {request.path}."
        err = GatewayError(exc.status, HTTP_CODES.get(exc.status, "invalid_request_error"), message or exc.reason)
        return error_response(err, request_id)
    except Exception:
        log.exception("internal error on %s %s (request %s)", request.method, request.path, request_id)
        err = GatewayError(500, "internal_error", "hubproxy hit an internal error.", type="api_error", retryable=True)
        return error_response(err, request_id)
    if not response.prepared:
        response.headers[REQUEST_ID] = request_id
    return response
