"""The API calls' HTTP/1.1 connections: a plain call is read and answered here, anything else is
handed to aiohttp.

aiohttp's server cost ~198k instructions per request before a handler ran (`python -m
bench.instructions`, an empty handler: 198k; a bare asyncio protocol: 30k), a third of a proxied
call. An API call needs little of it: a POST of a JSON body with a Content-Length to one of a few
paths, answered whole or as a chunked stream. `ApiConnection` reads such a request itself and hands
it to the same route handler aiohttp would call, with an `Incoming` that has the few attributes of
aiohttp's request the call path reads. A request that is anything else — another method or path, a
body sent chunked or after `Expect: 100-continue`, an upgrade, HTTP/1.0, a head that is malformed,
too large or merely unusual (a folded line, two lengths) — is handed over with every byte of it, and
aiohttp (`server.connections.GuardedConnection`) serves that connection from then on: its checks
and its error answers stay the only ones, and a parser written here never has to be lenient.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from itertools import repeat
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from hubproxy.errors import GatewayError
from hubproxy.server.request_body import timed_out
from hubproxy.server.state import STATE

if TYPE_CHECKING:
    from hubproxy.server.connections import ConnectionGuard, GuardedConnection

log = logging.getLogger("hubproxy.server")
access = logging.getLogger("aiohttp.access")

MAX_HEAD = 8190  # a longer head goes to aiohttp, which answers it as it sees fit (431 or 400)
MAX_HEADERS = 100


def byte_classes(allowed: bytes, kept: bytes = b"") -> bytes:
    """A bytes.translate table: `allowed` bytes become "a", `kept` ones stay, any other becomes NUL."""
    table = bytearray(256)
    for byte in allowed:
        table[byte] = ord("a")
    for byte in kept:
        table[byte] = byte
    return bytes(table)


# what a head may hold (aiohttp refuses controls other than tab, CR and LF), and a header name (a
# token, RFC 9110): one pass of bytes.translate marks anything else NUL
HEAD_CLASSES = byte_classes(bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t", kept=b"\r\n")
TOKEN_CLASSES = byte_classes(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}

BUSY_BUFFER = 1 << 16  # bytes a client may send ahead while its call runs before reading pauses

Handler = Callable[[Any], Awaitable[Any]]


class CallRoutes:
    """The routes `ApiConnection` serves itself: exact paths, and paths under a prefix ending in one of
    some suffixes (Gemini's `/v1beta/models/{target}` with `:generateContent`), whose rest is a match
    parameter as aiohttp's `{target}` would be."""

    def __init__(self) -> None:
        self.exact: dict[str, Handler] = {}
        self.prefixed: list[tuple[str, tuple[str, ...], str, Handler]] = []

    def find(self, path: str) -> tuple[Handler, dict[str, str]] | None:
        handler = self.exact.get(path)
        if handler is not None:
            return handler, {}
        for prefix, suffixes, param, handler in self.prefixed:
            if path.startswith(prefix) and path.endswith(suffixes) and len(path) > len(prefix):
                return handler, {param: path[len(prefix) :]}
        return None


CALL_ROUTES = web.AppKey("call_routes", CallRoutes)


class Incoming:
    """A request read by `ApiConnection`: what the call path reads of aiohttp's `web.Request`."""

    __slots__ = (
        "_query",
        "_state",
        "app",
        "body",
        "handler",
        "headers",
        "match_info",
        "method",
        "path",
        "protocol",
        "query_string",
    )

    def __init__(
        self,
        protocol: ApiConnection,
        path: str,
        query_string: str,
        headers: CIMultiDictProxy[str],
        found: tuple[Handler, dict[str, str]],
    ) -> None:
        self.protocol = protocol
        self.handler, self.match_info = found
        self.app = protocol.lanes.app_keys
        self.method = "POST"
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body: bytes | GatewayError = b""
        self._state: dict[str, Any] = {}
        self._query: MultiDictProxy[str] | None = None

    def __getitem__(self, name: str) -> Any:
        return self._state[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._state[name] = value

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))
        return self._query

    @property
    def remote(self) -> str | None:
        return self.protocol.address

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.protocol.transport

    @property
    def scheme(self) -> str:
        return "https" if self.protocol.transport.get_extra_info("sslcontext") else "http"

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    def read_body(self) -> bytes:
        """The body, read before the handler ran; or the error that stopped it (408)."""
        if isinstance(self.body, GatewayError):
            raise self.body
        return self.body


class Lanes:
    """What every `ApiConnection` of one listening socket shares: the app and its routes, the guard,
    how to hand a connection to aiohttp, the connections open (for a drain at shutdown)."""

    def __init__(
        self,
        app: web.Application,
        routes: CallRoutes,
        guard: ConnectionGuard,
        hand_over: Callable[[], GuardedConnection],
        access_log: bool,
        keepalive: float,
    ) -> None:
        self.state = app[STATE]
        # what the call path reads of the app (`request.app[STATE]`), as a dict: aiohttp's
        # Application looks a key up in Python, several times a call
        self.app_keys: dict[Any, Any] = {STATE: self.state}
        self.routes = routes
        self.guard = guard
        self.hand_over = hand_over
        self.access_log = access_log
        self.keepalive = keepalive
        self.open: set[ApiConnection] = set()
        self._date = b""
        self._date_at = 0

    def date(self) -> bytes:
        """The Date header, made once a second."""
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = formatdate(now, usegmt=True).encode()
        return self._date

    async def drain(self, timeout: float) -> None:
        """Close idle connections, let calls in flight finish for up to `timeout` seconds, then cut them."""
        for conn in list(self.open):
            conn.close_when_idle()
        busy = [conn.task for conn in self.open if conn.task is not None]
        if busy:
            _, late = await asyncio.wait(busy, timeout=timeout or None)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for conn in list(self.open):
            conn.transport.close()


class ApiConnection(asyncio.Protocol):
    """One client connection, while its requests are plain API calls (see the module docstring)."""

    __slots__ = (
        "_buffer",
        "_closing",
        "_drained",
        "_have",
        "_head_deadline",
        "_idle",
        "_idle_since",
        "_incoming",
        "_need",
        "_parts",
        "_paused",
        "_waiter",
        "address",
        "lanes",
        "loop",
        "on_lost",
        "task",
        "transport",
    )

    def __init__(self, lanes: Lanes, loop: asyncio.AbstractEventLoop) -> None:
        self.lanes = lanes
        self.loop = loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.address: str | None = None
        self.on_lost: Callable[[], object] | None = None
        self.task: asyncio.Task | None = None
        self._buffer = b""
        self._parts: list[bytes] = []  # a body arriving in pieces (joined once, not copied per piece)
        self._have = 0
        self._incoming: Incoming | None = None
        self._need = 0  # the length of a body still arriving
        self._waiter: asyncio.Future | None = None
        self._head_deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None  # closes a kept-alive connection left idle (`_idle_check`)
        self._idle_since = 0.0
        self._paused = False
        self._drained: asyncio.Future | None = None
        self._closing = False

    # the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admitted, address = self.lanes.guard.accept(transport)
        if not admitted:
            return
        self.transport = transport  # type: ignore[assignment]
        self.address = address
        self.lanes.open.add(self)
        self._arm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self.lanes.open.discard(self)
        if self.address is not None:
            self.lanes.guard.release(self.address)
            self.address = None
        self._wake(self._waiter, ConnectionResetError("the client closed the connection"))
        self._wake(self._drained, ConnectionResetError("the client closed the connection"))
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake(self._drained, None)

    def data_received(self, data: bytes) -> None:
        if self._need:
            self._parts.append(data)
            self._have += len(data)
            if self._have >= self._need:
                self._wake(self._waiter, None)
            return
        self._buffer += data
        if self.task is None:
            self._next_request()
        elif len(self._buffer) > BUSY_BUFFER:
            self.transport.pause_reading()  # resumed once its call is answered

    def close_when_idle(self) -> None:
        """A shutdown: close now if no call runs, else once its answer is sent."""
        self._closing = True
        if self.task is None:
            self.transport.close()

    # reading

    def _next_request(self) -> None:
        """Read the head in the buffer, if it is all there: start its call, or hand the connection over."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._hand_over()
            elif buffer and self._head_deadline is None:
                self._arm_head_deadline()
            return
        parsed = self._plain_call(buffer[:end]) if end <= MAX_HEAD else None
        settings = self.lanes.state.config.server
        if parsed is None or parsed[1] > settings.max_body_mb * 1024 * 1024:
            self._hand_over()  # a body too large too: aiohttp refuses it and reads what the client still sends
            return
        incoming, length = parsed
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        self._incoming = incoming
        start = end + 4
        if len(buffer) - start >= length:
            incoming.body = buffer[start : start + length]
            self._buffer = buffer[start + length :]
            self._dispatch()
        else:
            self._parts, self._have, self._buffer = [buffer[start:]], len(buffer) - start, b""
            self._need = length
            self._waiter = self.loop.create_future()
            self.task = self.loop.create_task(self._await_body(settings.body_timeout))

    def _plain_call(self, head: bytes) -> tuple[Incoming, int] | None:
        """The request, if its head is a plain API call this connection serves; else None (another
        method or version, a control character, a lone CR or LF, a folded line, a header name that is
        not a token: aiohttp's to judge)."""
        if not head.startswith(b"POST /"):
            return None
        marked = head.translate(HEAD_CLASSES).replace(b"\r\n", b"")
        if 0 in marked or 13 in marked or 10 in marked:  # NUL, CR, LF: a byte value is found without the
            # TypeError (formatted, then dropped) that `bytes in bytes` raises and catches first
            return None
        lines = head.decode("latin-1").split("\r\n")
        request_line = lines[0]
        target = request_line[5:-9]  # between "POST " and " HTTP/1.1"
        if not request_line.endswith(" HTTP/1.1") or not target.isascii() or " " in target or "\t" in target:
            return None
        raw_path, _, query = target.partition("?")
        found = self.lanes.routes.find(raw_path) if "%" not in raw_path and len(lines) <= MAX_HEADERS else None
        if found is None:
            return None
        pairs = [
            (name, value.strip(" \t")) for name, colon, value in map(str.partition, lines[1:], repeat(":")) if colon
        ]
        names = "".join([name for name, _ in pairs]).encode("latin-1")
        if len(pairs) != len(lines) - 1 or 0 in names.translate(TOKEN_CLASSES):
            return None
        headers = CIMultiDict(pairs)
        if "" in headers:
            return None
        lengths = headers.getall("Content-Length", ())
        if len(lengths) != 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
            return None
        if "Transfer-Encoding" in headers or "Expect" in headers or "Upgrade" in headers:
            return None  # bodies and protocols aiohttp handles
        if "close" in headers.get("Connection", "").lower():
            self._closing = True
        return Incoming(self, raw_path, query, CIMultiDictProxy(headers), found), int(lengths[0])

    async def _await_body(self, timeout: float) -> None:
        incoming = self._incoming
        assert incoming is not None and self._waiter is not None
        try:
            async with asyncio.timeout(timeout or None):
                await self._waiter
        except TimeoutError:
            incoming.body = timed_out(self.lanes.state.config.server)
            self._closing = True
        except ConnectionResetError:
            self.task = None
            return  # gone before its body came: nobody to answer
        else:
            whole = b"".join(self._parts)
            incoming.body, self._buffer = whole[: self._need], whole[self._need :]
        finally:
            self._need, self._have, self._parts, self._waiter = 0, 0, [], None
        await self._answer(incoming)

    def _dispatch(self) -> None:
        incoming = self._incoming
        assert incoming is not None
        self.task = self.loop.create_task(self._answer(incoming))

    # answering

    async def _answer(self, incoming: Incoming) -> None:
        started = time.monotonic()
        try:
            response = await incoming.handler(incoming)
            if isinstance(response, Stream):
                status, length = 200, response.body_length
            else:
                status, length = response.status, self._send(response)
        except Exception:
            log.exception("internal error answering %s %s", incoming.method, incoming.path)
            self.transport.close()
            return
        finally:
            self.on_lost = None
            self.task = None
            self._incoming = None
        if self.lanes.access_log:
            log_access(incoming, status, length, time.monotonic() - started)
        if self._closing or self.transport.is_closing():
            self.transport.close()
            return
        self.transport.resume_reading()
        if self._buffer:
            self._next_request()
        else:
            self._idle_since = self.loop.time()
            if self._idle is None:  # one timer per connection, not one per call (`_idle_check`)
                self._idle = self.loop.call_later(self.lanes.keepalive, self._idle_check)

    def _send(self, answer: Answer) -> int:
        """A whole answer; returns the body's length."""
        if answer.__class__ is not Answer:  # every answer of the call routes is one, for this connection
            raise TypeError(f"a call route answered with a {type(answer).__name__}")
        if answer.close:
            self._closing = True
        body = answer.body
        framing = b"Content-Length: %d\r\n" % len(body)
        if self._closing:
            framing += b"Connection: close\r\n"
        if not self.transport.is_closing():
            self.transport.write(self._head(answer.status, answer.headers, framing) + body)
        return len(body)

    def _head(self, status: int, headers: CIMultiDict[str], framing: bytes) -> bytes:
        """An answer's status line and headers, then `framing` (how its body is delimited) and Date."""
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))]
        for name, value in headers.items():
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        parts.append(b"%sDate: %s\r\n\r\n" % (framing, self.lanes.date()))
        return b"".join(parts)

    async def open_stream(self, headers: CIMultiDict[str]) -> Stream:
        """Send the head of a 200 answer whose body follows in chunks (`Stream`)."""
        await self._write(self._head(200, headers, b"Transfer-Encoding: chunked\r\n"))
        return Stream(self)

    async def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)
        if self._paused:
            self._drained = self.loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    # handing over, timers

    def _hand_over(self) -> None:
        """aiohttp serves this connection from now on, from the first byte of the request in hand."""
        self._disarm()
        self.lanes.open.discard(self)
        handler = self.lanes.hand_over()
        address, self.address = self.address, None  # the guard's count goes with it
        data, self._buffer = self._buffer, b""
        handler.adopt(self.transport, address, data)

    def _idle_check(self) -> None:
        """Close the connection if no call came for `keepalive` seconds since the last answer; a call
        in hand or a head arriving puts the check off."""
        keepalive = self.lanes.keepalive
        waited = self.loop.time() - self._idle_since
        if self.task is None and not self._buffer and waited >= keepalive:
            self._idle = None
            self.transport.close()
            return
        later = keepalive - waited if self.task is None and not self._buffer else keepalive
        self._idle = self.loop.call_later(max(later, 0.001), self._idle_check)

    def _arm_head_deadline(self) -> None:
        timeout = self.lanes.guard.settings.header_timeout
        if timeout > 0:
            self._head_deadline = self.loop.call_later(timeout, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.task is None:
            self.lanes.guard.too_slow(self.address)
            self.transport.close()

    def _disarm(self) -> None:
        for timer in (self._head_deadline, self._idle):
            if timer is not None:
                timer.cancel()
        self._head_deadline = self._idle = None

    @staticmethod
    def _wake(waiter: asyncio.Future | None, error: BaseException | None) -> None:
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


class Answer:
    """A whole JSON answer of a call route (its status, headers and body). A connection of this module
    writes it as it is; for one aiohttp serves, the error wrapper makes it a `web.Response`
    (`for_aiohttp`), which costs ~10k instructions to make."""

    __slots__ = ("body", "close", "headers", "status")
    prepared = False

    def __init__(self, body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.body = body
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers) if headers else CIMultiDict()
        self.headers["Content-Type"] = "application/json"
        self.close = False  # the connection is closed after it (the rest of the body is not wanted)

    def for_aiohttp(self) -> web.Response:
        response = web.Response(body=self.body, status=self.status, headers=self.headers)
        if self.close:
            response.force_close()
        return response


class Stream:
    """A streamed answer's body, in HTTP/1.1 chunks; what `relay` writes events to."""

    __slots__ = ("_conn", "body_length", "prepared", "status")

    def __init__(self, conn: ApiConnection) -> None:
        self._conn = conn
        self.body_length = 0
        self.prepared = True
        self.status = 200

    async def write(self, data: bytes) -> None:
        if data:
            self.body_length += len(data)
            await self._conn._write(b"%x\r\n%s\r\n" % (len(data), data))

    async def write_eof(self) -> None:
        await self._conn._write(b"0\r\n\r\n")


CallRequest = web.Request | Incoming  # what a call route's handler is given
CallAnswer = Answer | Stream | web.StreamResponse  # … and answers with (`Stream`: a relay's, already sent)


ACCESS_LINE = '%s "%s %s" %s %s %.6fs'  # address, method, path without its query, status, bytes, seconds


def log_access(incoming: Incoming, status: int, length: int, seconds: float) -> None:
    """The line aiohttp's access log (`server.run.AccessLog`) writes."""
    access.info(ACCESS_LINE, incoming.remote, incoming.method, incoming.path, status, length, seconds)
