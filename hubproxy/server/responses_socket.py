"""OpenAI's Responses API over a WebSocket: `GET /v1/responses` with `Upgrade: websocket` (Codex with
`supports_websockets = true`; the OpenAI SDKs' `responses.connect()`).

Each `response.create` message is one call: the key was checked at the upgrade, and the call goes
through this server's own `POST /v1/responses` (at the address the client reached), streamed, so it
is authorised again (a key revoked since, an empty balance: the call's Responses `error` event, and
the socket stays open but for a revoked key), held, journaled, routed, settled and billed as every HTTP call is; its
events come back as text frames in order. The socket keeps the last call's input and output in
memory, so that a turn that sends only new items with `previous_response_id` (as OpenAI's WebSocket
mode allows) reaches the upstream whole; nothing is stored. One call at a time per socket; idle
sockets close after `[server] websocket_idle` seconds; a message is at most `max_body_mb`. Wire
format as documented at https://developers.openai.com/api/docs/guides/websocket-mode and
/api/reference/resources/responses/websocket-events (read 2026-12-07).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time

import aiohttp
import orjson
from aiohttp import web

from hubproxy import errors
from hubproxy.protocols.sse import event_data, last_event_end, split_events
from hubproxy.server.auth import api_key_from, authorize
from hubproxy.server.errors import websocket_refused
from hubproxy.server.state import STATE, GatewayState

log = logging.getLogger("hubproxy.server")

SOCKET_CLIENT = "X-Hubproxy-Socket-Client"  # the socket's caller, for a key's IP rules on the loopback call
SOCKET_TOKEN = "X-Hubproxy-Socket-Token"  # the admin token: only this server's own loopback calls carry it
STEPS = {"response.create"}
SOCKET_ONLY = ("type", "generate", "stream_id")  # the socket's envelope, not fields of POST /v1/responses


def upgrade_wanted(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def error_event(status: int, error: dict) -> str:
    """A Responses `error` event as the socket carries it: the HTTP status the call would have had and
    the error object an HTTP client would have got."""
    return orjson.dumps({"type": "error", "status": status, "error": error}).decode()


def refusal(err: errors.GatewayError) -> str:
    return error_event(err.status, {"type": err.type, "code": err.code, "message": err.message, "param": err.param})


class Conversation:
    """The socket's last call, in memory only: what a `previous_response_id` continues."""

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.items: list = []  # the last call's input, then its output

    def body(self, message: dict) -> bytes:
        """The HTTP body for one `response.create`: streamed, without the socket's own fields, and whole
        where it continues the last call."""
        for name in SOCKET_ONLY:
            message.pop(name, None)
        message["stream"] = True
        given = message.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or ())
        previous = message.get("previous_response_id")
        if previous is not None:
            if previous != self.response_id:
                raise errors.GatewayError(
                    400,
                    "previous_response_not_found",
                    f"Previous response with id {previous!r} not found on this socket (hubproxy keeps only the "
                    "socket's last response); send the whole input.",
                    param="previous_response_id",
                )
            del message["previous_response_id"]
            items = [*self.items, *items]
        message["input"] = items
        self.items, self.response_id = items, None
        return orjson.dumps(message)

    def warmed(self, message: dict) -> list[str]:
        """`generate: false` (Codex's prewarm): the input kept for the next call, nothing generated or
        billed; answered with a created and a completed response that have no output."""
        self.body(message)
        self.response_id = f"resp_hubproxy_{secrets.token_hex(12)}"
        response: dict[str, object] = {
            "id": self.response_id,
            "object": "response",
            "created_at": int(time.time()),
            "model": message.get("model"),
            "output": [],
            "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        }
        created = {"type": "response.created", "sequence_number": 0, "response": {**response, "status": "in_progress"}}
        completed = {
            "type": "response.completed",
            "sequence_number": 1,
            "response": {**response, "status": "completed"},
        }
        return [orjson.dumps(created).decode(), orjson.dumps(completed).decode()]

    def completed(self, response: object) -> None:
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = response["id"]
            self.items = [*self.items, *(response.get("output") or ())]


async def responses_socket(request: web.Request) -> web.StreamResponse:
    """The upgrade: refused as an HTTP error before it (401, 403, 426), then one call per message."""
    state: GatewayState = request.app[STATE]
    if not upgrade_wanted(request):
        raise errors.GatewayError(
            405, "method_not_allowed", "GET is not allowed on /v1/responses; it takes POST (or a WebSocket upgrade)."
        )
    if not state.config.server.websocket:
        raise websocket_refused(request)
    authorize(request)
    server = state.config.server
    socket = web.WebSocketResponse(max_msg_size=server.max_body_mb * 1024 * 1024, heartbeat=30)
    await socket.prepare(request)
    secret = api_key_from(request.headers) or ""
    session = SocketCalls(state, request, socket, secret)
    try:
        await session.serve(server.websocket_idle)
    finally:
        await session.close()
    return socket


class SocketCalls:
    """One socket's calls, one at a time, each a streamed `POST /v1/responses` to this server."""

    def __init__(self, state: GatewayState, request: web.Request, socket: web.WebSocketResponse, secret: str) -> None:
        self.state, self.socket = state, socket
        transport = request.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        host, port = (local[0], local[1]) if local else ("127.0.0.1", state.config.server.port)
        host = f"[{host}]" if ":" in host else host  # the address the client reached: this server listens there
        self.url = f"{'https' if request.secure else 'http'}://{host}:{port}/v1/responses"
        self.headers = {
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/json",
            SOCKET_CLIENT: state.caller_address(request) or "",
            SOCKET_TOKEN: state.admin_token,
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_read=state.config.timeouts.first_byte + 30)
        self.client = aiohttp.ClientSession(timeout=timeout)
        self.conversation = Conversation()

    async def serve(self, idle: float) -> None:
        while not self.socket.closed:
            try:
                message = await self.socket.receive(timeout=idle)
            except TimeoutError:
                await self.socket.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"idle")
                return
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return
            if message.type == aiohttp.WSMsgType.ERROR:
                return
            if message.type != aiohttp.WSMsgType.TEXT:
                await self.socket.send_str(refusal(errors.invalid_request("Send each event as a JSON text frame.")))
                continue
            if not await self.one(message.data):
                await self.socket.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"key refused")
                return

    async def one(self, text: str) -> bool:
        """One message: its call's events sent back; False when the key was refused (the socket ends)."""
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.socket.send_str(refusal(errors.invalid_request("The message is not valid JSON.")))
            return True
        if not isinstance(event, dict) or event.get("type") not in STEPS:
            kind = event.get("type") if isinstance(event, dict) else None
            await self.socket.send_str(
                refusal(errors.invalid_request(f"Unsupported event {kind!r}: hubproxy serves response.create here."))
            )
            return True
        try:
            if event.get("generate") is False:
                for frame in self.conversation.warmed(event):
                    await self.socket.send_str(frame)
                return True
            body = self.conversation.body(event)
        except errors.GatewayError as refused:
            await self.socket.send_str(refusal(refused))
            return True
        return await self.relay(body)

    async def relay(self, body: bytes) -> bool:
        try:
            async with self.client.post(self.url, data=body, headers=self.headers, ssl=False) as resp:
                if resp.status != 200:
                    answer = await resp.read()
                    await self.socket.send_str(error_event(resp.status, error_object(answer)))
                    return resp.status != 401
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    end = last_event_end(buffer)
                    if end:
                        complete, buffer = buffer[:end], buffer[end:]
                        await self.send_events(complete)
                if buffer.strip():
                    await self.send_events(buffer + b"\n\n")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("a WebSocket call to this server's own /v1/responses failed: %s", exc)
            err = errors.upstream_unavailable("hubproxy could not complete this call; retry it.")
            await self.socket.send_str(refusal(err))
        return True

    async def send_events(self, complete: bytes) -> None:
        """Each event's data as a text frame; the completed response kept for a continuation."""
        for raw in split_events(complete):
            data = event_data(raw)
            if not data:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(data)
                if isinstance(event, dict) and event.get("type") == "response.completed":
                    self.conversation.completed(event.get("response"))
            await self.socket.send_str(data.decode())

    async def close(self) -> None:
        await self.client.close()
        if not self.socket.closed:
            await self.socket.close()


def error_object(answer: bytes) -> dict:
    """The `error` object of an HTTP error answer (OpenAI's shape), or one that says what came."""
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(answer)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            return parsed["error"]
    return {"type": "api_error", "code": None, "message": answer[:300].decode("utf-8", "replace"), "param": None}
