"""Server-sent events relay: each upstream event goes to the client as soon as it arrives.

Bytes are forwarded as received. Only events that mention usage (or `[DONE]`) are looked at: the
usage event is parsed to bill the call, gets `cost` added when the client asked for usage, and is
dropped when the client did not ask (hubproxy asked upstream for it on its own behalf). The
settlement is committed before the usage event or `[DONE]` is forwarded.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from hubproxy.billing.meter import CallMeter
from hubproxy.billing.pricing import read_usage
from hubproxy.money import format_usd
from hubproxy.server.cors import allow_origin
from hubproxy.server.errors import REQUEST_ID
from hubproxy.upstream.http import Response, UpstreamError

log = logging.getLogger("hubproxy.server")

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientGone(Exception):
    """The client hung up; stop reading upstream."""


def last_event_end(buffer: bytes) -> int:
    """Index just past the last complete event in `buffer`, or 0 if there is none yet."""
    lf = buffer.rfind(b"\n\n")
    crlf = buffer.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def split_events(data: bytes) -> list[bytes]:
    """Complete events, each with its trailing blank line."""
    events, start = [], 0
    while start < len(data):
        lf = data.find(b"\n\n", start)
        crlf = data.find(b"\r\n\r\n", start)
        candidates = [i + 2 for i in (lf,) if i >= 0] + [i + 4 for i in (crlf,) if i >= 0]
        end = min(candidates) if candidates else len(data)
        events.append(data[start:end])
        start = end
    return events


def event_data(event: bytes) -> bytes | None:
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class StreamRelay:
    def __init__(self, out: web.StreamResponse, meter: CallMeter, client_wants_usage: bool) -> None:
        self.out = out
        self.meter = meter
        self.client_wants_usage = client_wants_usage
        self.events = 0

    async def send(self, data: bytes) -> None:
        try:
            await self.out.write(data)
        except (ConnectionResetError, ConnectionError, RuntimeError) as exc:
            raise ClientGone from exc

    async def forward(self, complete: bytes) -> None:
        if b'"usage"' not in complete and b"[DONE]" not in complete:
            self.events += complete.count(b"data:")
            await self.send(complete)
            return
        for event in split_events(complete):
            out = await self.inspect(event)
            if out:
                await self.send(out)

    async def inspect(self, event: bytes) -> bytes | None:
        payload = event_data(event)
        if payload is None:
            return event
        if payload == b"[DONE]":
            await self.settle_estimated("ok")
            return event
        if b'"usage"' not in payload:
            self.events += 1
            return event
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        usage = chunk.get("usage") if isinstance(chunk, dict) else None
        tokens = read_usage(usage)
        if tokens is None:
            self.events += 1
            return event
        await self.meter.settle(
            tokens[0], tokens[1], estimated=False, status="ok", http_status=200, cached_tokens=tokens[2]
        )
        if self.client_wants_usage:
            usage["cost"] = orjson.Fragment(format_usd(self.meter.cost, min_places=1).encode())
            return b"data: " + orjson.dumps(chunk) + b"\n\n"
        return event if chunk.get("choices") else None

    async def settle_estimated(self, status: str, http_status: int = 200) -> None:
        """No usage from upstream: one event ≈ one token of output (marked estimated)."""
        if self.meter.settled is None:
            await self.meter.settle(None, self.events, estimated=True, status=status, http_status=http_status)

    async def fail(self, message: str) -> None:
        """Upstream broke mid-stream: tell the client in-band (the status line is already sent)."""
        await self.settle_estimated("upstream_broken", 502)
        body = {"error": {"message": message, "type": "api_error", "code": "upstream_unavailable", "param": None}}
        await self.send(b"data: " + orjson.dumps(body) + b"\n\n")


async def relay_stream(
    request: web.Request,
    resp: Response,
    meter: CallMeter,
    client_wants_usage: bool,
    idle: float,
) -> web.StreamResponse:
    out = web.StreamResponse(status=200, headers={**SSE_HEADERS, REQUEST_ID: request["request_id"]})
    allow_origin(request, out.headers)
    await out.prepare(request)
    relay = StreamRelay(out, meter, client_wants_usage)
    provider = meter.route.provider.name
    buffer = b""
    try:
        try:
            async for chunk in resp.chunks(idle):
                buffer += chunk
                end = last_event_end(buffer)
                if end:
                    complete, buffer = buffer[:end], buffer[end:]
                    await relay.forward(complete)
            if buffer.strip():
                await relay.forward(buffer + b"\n\n")
            await relay.settle_estimated("ok")
        except TimeoutError:
            resp.close()
            await relay.fail(f"Provider {provider!r} sent nothing for {idle:g}s; the stream was cut.")
        except UpstreamError as exc:
            resp.close()
            await relay.fail(f"Provider {provider!r} broke off the stream ({exc}).")
        await out.write_eof()
    except ClientGone:
        resp.close()
        log.info("client hung up on %s; billed what was produced", request["request_id"])
        await relay.settle_estimated("client_closed", 499)
    return out
