"""Reading a request's body: what is too large is refused before it is read, what is too slow or
malformed is refused with a 4xx, never a 500."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from hubproxy import errors
from hubproxy.config import ServerSettings

if TYPE_CHECKING:
    from hubproxy.server.http import CallRequest


def too_large(settings: ServerSettings) -> errors.GatewayError:
    return errors.GatewayError(
        413,
        "request_too_large",
        f"Request body is too large: this server accepts up to {settings.max_body_mb} MB.",
    )


def timed_out(settings: ServerSettings) -> errors.GatewayError:
    return errors.GatewayError(
        408, "request_timeout", f"The request body did not arrive within {settings.body_timeout:g}s."
    )


async def read_request(request: CallRequest, settings: ServerSettings) -> bytes:
    """The whole body. A declared length over the limit is refused at once (413), without waiting for
    bytes that may never come; a body still arriving after `body_timeout` seconds gets 408. A body
    in a transfer coding other than chunked (`gzip, chunked`) would be read still coded: 501. A call
    `server.http` read has its body (or the 413 or 408 that stopped it) in hand already."""
    if not isinstance(request, web.Request):
        return request.read_body()
    coding = request.headers.get("Transfer-Encoding")
    if coding is not None and coding.strip().lower() != "chunked":
        raise errors.GatewayError(
            501,
            "not_implemented",
            f"Transfer-Encoding {coding[:100]!r} is not supported: send the body as it is, or only chunked.",
        )
    try:
        if not request.content.is_eof():  # most bodies came with the headers: nothing to wait for
            declared = request.content_length
            if declared is not None and declared > settings.max_body_mb * 1024 * 1024:
                raise too_large(settings)
            if settings.body_timeout:
                async with asyncio.timeout(settings.body_timeout):
                    return await request.read()
        return await request.read()
    except TimeoutError:
        raise timed_out(settings) from None
    except web.HTTPRequestEntityTooLarge:
        raise too_large(settings) from None
    except (RequestPayloadError, HttpProcessingError):
        raise errors.invalid_request("The request body is malformed (a broken chunk or a short body).") from None
