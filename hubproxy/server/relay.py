"""Server-sent events relay: each upstream event goes to the client as soon as it arrives.

Bytes are forwarded as received; the relay knows SSE framing, not any wire format. Events the
protocol's stream watch says may matter for billing are handed to it; the one carrying the final
usage waits for the stream's end, when the settlement is committed before it and the final event
leave.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from multidict import CIMultiDict

from hubproxy.billing.meter import CallMeter
from hubproxy.protocols import FINAL, StreamWatch, Untranslatable
from hubproxy.protocols.sse import event_data, last_event_end, split_events
from hubproxy.server.cors import allow_origin
from hubproxy.server.errors import REQUEST_ID
from hubproxy.server.http import CallRequest, Stream
from hubproxy.upstream.http import Response, UpstreamError

log = logging.getLogger("hubproxy.server")

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientGone(Exception):
    """The client hung up; stop reading upstream."""


class StreamRelay:
    """Forwards events as they come; hands the ones that may matter for billing to the protocol's
    stream watch, and settles the call before the event that ends the stream leaves."""

    def __init__(self, out: web.StreamResponse | Stream, meter: CallMeter, watch: StreamWatch) -> None:
        self.out = out
        self.meter = meter
        self.watch = watch

    async def send(self, data: bytes) -> None:
        try:
            await self.out.write(data)
        except (ConnectionResetError, ConnectionError, RuntimeError) as exc:
            raise ClientGone from exc

    async def end(self) -> None:
        """The chunked stream's terminator; a client that left after the last event (it had all of
        it) is gone like any other."""
        try:
            await self.out.write_eof()
        except (ConnectionResetError, ConnectionError, RuntimeError) as exc:
            raise ClientGone from exc

    async def forward(self, complete: bytes) -> None:
        watch = self.watch
        if not watch.worth_reading(complete):
            watch.output_events += complete.count(b"data:")
            await self.send(complete)
            return
        for event in split_events(complete):
            try:
                out = watch.read(event, event_data(event))
            except Untranslatable as exc:  # an event a translator cannot read carries nothing it can pass on
                log.warning(
                    "dropped a stream event of %s that cannot be translated: %s", self.meter.reservation.id, exc
                )
                continue
            if out is FINAL:
                await self.finish()
            elif out:
                await self.send(out)

    async def finish(self, status: str = "ok", http_status: int = 200) -> None:
        """The stream's usage is final: settle, then send what the watch kept for this moment."""
        if self.meter.settled is not None:
            return
        await self.settle(status, http_status)
        try:
            out = self.watch.closing(self.meter.cost)
        except Untranslatable as exc:
            log.warning("the end of stream %s cannot be translated: %s", self.meter.reservation.id, exc)
            out = self.watch.error_event("The provider's stream held events hubproxy cannot translate to this API.")
        if out:
            await self.send(out)

    async def settle(self, status: str, http_status: int = 200) -> None:
        """With the usage the stream reported, else estimated: one event ≈ one token of output."""
        if self.meter.settled is None:
            watch = self.watch
            await self.meter.settle(
                watch.usage, output_estimate=watch.output_events, status=status, http_status=http_status
            )

    async def fail(self, message: str) -> None:
        """Upstream broke mid-stream: tell the client in-band (the status line is already sent)."""
        await self.settle("upstream_broken", 502)
        await self.send(self.watch.error_event(message))


async def open_stream(request: CallRequest) -> web.StreamResponse | Stream:
    """The SSE answer's head sent: by `server.http` for the calls it read, else by aiohttp."""
    headers = CIMultiDict({**SSE_HEADERS, REQUEST_ID: request["request_id"]})
    allow_origin(request, headers)
    if isinstance(request, web.Request):
        out = web.StreamResponse(status=200, headers=headers)
        await out.prepare(request)
        return out
    return await request.protocol.open_stream(headers)


async def relay_stream(
    request: CallRequest,
    resp: Response,
    meter: CallMeter,
    watch: StreamWatch,
    idle: float,
) -> web.StreamResponse | Stream:
    out = await open_stream(request)
    relay = StreamRelay(out, meter, watch)
    provider = meter.route.provider.name
    buffer = b""
    try:
        try:
            async for chunk in resp.chunks(idle):
                if not meter.first_byte:
                    meter.first_byte = time.monotonic()
                buffer += chunk
                end = last_event_end(buffer)
                if end:
                    complete, buffer = buffer[:end], buffer[end:]
                    await relay.forward(complete)
            if buffer.strip():
                await relay.forward(buffer + b"\n\n")
            await relay.finish()
        except TimeoutError:
            resp.close()
            await relay.fail(f"Provider {provider!r} sent nothing for {idle:g}s; the stream was cut.")
        except UpstreamError as exc:
            resp.close()
            await relay.fail(f"Provider {provider!r} broke off the stream ({exc}).")
        await relay.end()
    except ClientGone:
        resp.close()
        log.info("client hung up on %s; billed what was produced", request["request_id"])
        await relay.settle("client_closed", 499)
    except Exception:
        # a bug (a translator's, say): logged as one, the call billed as far as it went, the client told
        log.exception("internal error relaying stream %s", request["request_id"])
        resp.close()
        try:
            await relay.fail("hubproxy hit an internal error; the stream was cut.")
            await relay.end()
        except ClientGone:
            await relay.settle("client_closed", 499)
    return out
