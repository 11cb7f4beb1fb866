"""The HTTP connections the server accepts: malformed requests cost one log line, slow and greedy
clients are cut off.

aiohttp's own request handler logs a malformed request (a stray CR in a header, a bad chunk, 1,000
headers) with a traceback whose message quotes the raw header line, an API key with it, and echoes
that line in its 400 answer. It also waits as long as a client likes for the rest of a request's
headers, and accepts any number of connections from one address. `GuardedConnection` is aiohttp's
handler with those three things changed; `GuardedSite` is how the server listens with it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from hubproxy.accounts.rules import parse_networks
from hubproxy.config import ServerSettings
from hubproxy.errors import invalid_request
from hubproxy.protocols import openai_chat
from hubproxy.server.http import CALL_ROUTES, ApiConnection, Lanes
from hubproxy.server.state import GatewayState

log = logging.getLogger("hubproxy.server")

THIS_MACHINE = parse_networks(["127.0.0.1", "::1"])
BAD_REQUEST_BODY = openai_chat.error_body(invalid_request("Malformed HTTP request.")).decode()


class ConnectionGuard:
    """Limits shared by every connection of one server: how long a request's headers may take to
    arrive, and how many connections one address may hold open. Exempt: this machine itself
    (127.0.0.1 and ::1: its own tools, a reverse proxy beside the gateway) and the reverse proxies
    listed in `trusted_proxies`, since every client behind one shares its address. The settings are
    read from the running configuration, so a reloaded config.toml applies to new connections."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self.open: dict[str, int] = {}

    @property
    def settings(self) -> ServerSettings:
        return self._state.config.server

    def admit(self, address: str | None) -> bool:
        """Count a new connection from `address`, or refuse it (False) when that address is at its limit."""
        if address is None:
            return True
        count = self.open.get(address, 0)
        limit = self.settings.max_connections_per_address
        if limit and count >= limit and not self._exempt(address):
            return False
        self.open[address] = count + 1
        return True

    def accept(self, transport: asyncio.BaseTransport) -> tuple[bool, str | None]:
        """A new connection's (admitted, peer address); one over its address's limit is cut at once."""
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else None
        if self.admit(address):
            return True, address
        log.warning("refused a connection from %s: it has %d open", address, self.open.get(address or ""))
        if isinstance(transport, asyncio.Transport):
            transport.abort()  # no goodbye: it is over its limit
        else:
            transport.close()
        return False, None

    def too_slow(self, address: str | None) -> None:
        """Say that a connection is closed for a request head that did not come in time."""
        log.info("closed a connection from %s: no complete request in %gs", address, self.settings.header_timeout)

    def release(self, address: str) -> None:
        count = self.open.get(address, 0)
        if count > 1:
            self.open[address] = count - 1
        elif count:
            del self.open[address]

    def _exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in (*THIS_MACHINE, *self._state.trusted_proxies))


class GuardedConnection(RequestHandler):
    """aiohttp's request handler, with three changes (see the module docstring), and a hook that
    lets the route cancel its upstream call when the client hangs up."""

    __slots__ = ("_address", "_guard", "_header_deadline", "on_lost")

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._header_deadline: asyncio.TimerHandle | None = None
        self.on_lost: Callable[[], object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admitted, address = self._guard.accept(transport)
        if not admitted:
            return
        self._address = address
        super().connection_made(transport)
        self._arm_header_deadline()

    def adopt(self, transport: asyncio.Transport, address: str | None, data: bytes) -> None:
        """Take over a connection `server.http.ApiConnection` admitted (its count in the guard comes
        along), with the bytes of the request it did not serve."""
        self._address = address
        transport.set_protocol(self)
        super().connection_made(transport)
        self._arm_header_deadline()
        if data:
            self.data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages:  # a request's headers are complete: its handler takes it from here
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
        elif self._header_deadline is None and not self._request_in_progress:
            self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        timeout = self._guard.settings.header_timeout
        if timeout > 0:
            self._header_deadline = self._loop.call_later(timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._request_in_progress or self._messages:
            return
        self._guard.too_slow(self._address)
        self.force_close()

    def _handle_request(self, request, start_time, request_handler):
        """The handler takes over (a plain function handing back aiohttp's coroutine: no extra frame)."""
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        return super()._handle_request(request, start_time, request_handler)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """One short log line without the request's text, and a generic body, for a request that could
        not be parsed; anything else (a bug of ours) is logged in full as aiohttp does."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        log.info("malformed HTTP request from %s (%s)", request.remote, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        resp = web.Response(status=status, text=BAD_REQUEST_BODY, content_type="application/json")
        resp.force_close()
        return resp


class GuardedSite(web.SockSite):
    """Serve the runner's application on an already bound socket: the plain API calls through
    `server.http.ApiConnection`, every other request through GuardedConnection."""

    def __init__(
        self,
        runner: web.AppRunner,
        sock: socket.socket,
        guard: ConnectionGuard,
        handler_args: dict,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, sock, ssl_context=tls)
        self._guard = guard
        self._handler_args = handler_args
        self._lanes: Lanes | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        runner = self._runner
        server = runner.server
        assert server is not None and isinstance(runner, web.AppRunner)
        app = runner.app
        args = self._handler_args

        def aiohttp_connection() -> GuardedConnection:
            return GuardedConnection(server, self._guard, loop=loop, **args)

        lanes = Lanes(
            app,
            app[CALL_ROUTES],
            self._guard,
            aiohttp_connection,
            args.get("access_log") is not None,
            args["keepalive_timeout"],
        )
        self._lanes = lanes
        self._server = await loop.create_server(
            lambda: ApiConnection(lanes, loop), sock=self._sock, backlog=self._backlog, ssl=self._ssl_context
        )

    async def stop(self) -> None:
        """Stop listening, then drain the calls in flight on ApiConnections (aiohttp drains its own)."""
        await super().stop()
        if self._lanes is not None:
            await self._lanes.drain(self._guard.settings.drain_seconds)
