"""Streamed Responses calls over a provider's own WebSocket (OpenAI's WebSocket mode), for a provider
whose config says `responses_socket = true`: one socket per call at a time, kept open between calls, as
an HTTP connection is kept alive.

A call's body goes up as a `response.create` message (the body's fields, without `stream`); the events
that come back as text frames are handed on as the server-sent events an HTTP stream would carry, so
the leg, the stream watch and billing read them unchanged. An `error` event before any other is the
call's HTTP error (its `status`, its `error` object). Wire format as documented at
https://developers.openai.com/api/docs/guides/websocket-mode (read 2026-12-07).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from hubproxy.upstream.http import ProxyError, UpstreamError
from hubproxy.upstream.proxy import Proxy

BETA = "responses_websockets=2026-02-06"
ENDS = frozenset(("response.completed", "response.failed", "response.incomplete", "error"))
STREAM_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "text/event-stream"}))
ERROR_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))


class SocketAnswer:
    """A call's answer read from a socket, with the surface of `http.Response` the call path uses."""

    def __init__(self, pool: ResponseSockets, where: tuple[str, str], socket: aiohttp.ClientWebSocketResponse) -> None:
        self.pool, self.where, self.socket = pool, where, socket
        self.status = 200
        self.headers = STREAM_HEADERS
        self.complete = False
        self._pending = b""

    async def _event(self, timeout: float) -> bytes:
        """The next event as SSE bytes (the last one marks the answer complete)."""
        try:
            frame = await self.socket.receive(timeout=timeout)
        except aiohttp.ClientError as exc:
            raise UpstreamError(str(exc) or "the socket failed") from None
        if frame.type != aiohttp.WSMsgType.TEXT:
            raise UpstreamError("the provider closed its socket mid-answer")
        data = frame.data.encode()
        try:
            kind = orjson.loads(data).get("type")
        except (orjson.JSONDecodeError, AttributeError):
            kind = None
        if kind in ENDS:
            self.complete = True
        name = kind.encode() if isinstance(kind, str) else b"message"
        return b"event: " + name + b"\ndata: " + data + b"\n\n"

    async def start(self, timeout: float) -> SocketAnswer:
        """Wait for the first event: an `error` there is the call's HTTP error."""
        first = await self._event(timeout)
        if first.startswith(b"event: error\n"):
            event = orjson.loads(first.split(b"\ndata: ", 1)[1])
            status = event.get("status")
            self.status = status if isinstance(status, int) and 400 <= status < 600 else 502
            self.headers = ERROR_HEADERS
            self._pending = orjson.dumps({"error": event.get("error") or {"message": "the provider refused the call"}})
        else:
            self._pending = first
        return self

    async def read(self, timeout: float) -> bytes:
        return b"".join([chunk async for chunk in self.chunks(timeout)])

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        while not self.complete:
            yield await self._event(timeout)

    def release(self) -> None:
        """Done: a socket whose answer was read to its end takes the next call."""
        if self.complete and not self._pending and not self.socket.closed:
            self.pool.idle.setdefault(self.where, []).append(self.socket)
        else:
            self.close()

    def close(self) -> None:
        if not self.socket.closed:
            asyncio.get_running_loop().create_task(self.socket.close())


class ResponseSockets:
    """Open sockets by (URL, key), each carrying one call at a time."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.idle: dict[tuple[str, str], list[aiohttp.ClientWebSocketResponse]] = {}

    async def send(
        self, url: str, headers: dict[str, str], payload: bytes, timeout: float, proxy: Proxy | None = None
    ) -> SocketAnswer:
        """One streamed call: its `response.create` sent, returned once its first event is in (through
        the provider's egress proxy, where it has one, as its HTTP calls go)."""
        where = (url, headers.get("Authorization", ""))
        body = orjson.loads(payload)
        body.pop("stream", None)
        message = orjson.dumps({"type": "response.create", **body}).decode()
        idle = self.idle.get(where) or []
        while idle:
            socket = idle.pop()
            if socket.closed:
                continue
            try:
                await socket.send_str(message)
            except (aiohttp.ClientError, ConnectionError):
                continue
            return await SocketAnswer(self, where, socket).start(timeout)
        if self.session is None:
            self.session = aiohttp.ClientSession()
        try:
            socket = await self.session.ws_connect(
                url,
                headers={**headers, "OpenAI-Beta": BETA},
                timeout=aiohttp.ClientWSTimeout(ws_receive=None),
                proxy=None if proxy is None else f"http://{proxy.host}:{proxy.port}",
                proxy_headers={"Proxy-Authorization": proxy.authorization} if proxy and proxy.authorization else None,
            )
            await socket.send_str(message)
        except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError):
            raise ProxyError(f"the proxy {proxy} could not open a socket to the provider") from None
        except aiohttp.WSServerHandshakeError as refused:
            raise UpstreamError(f"its WebSocket refused the upgrade (HTTP {refused.status})") from None
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            raise UpstreamError(str(exc) or "could not open its WebSocket") from None
        return await SocketAnswer(self, where, socket).start(timeout)

    async def close(self) -> None:
        for sockets in self.idle.values():
            for socket in sockets:
                await socket.close()
        self.idle.clear()
        if self.session is not None:
            await self.session.close()
