"""The upstream HTTP/1.1 client: one POST of bytes the gateway already holds, over kept-alive connections.

aiohttp's client serves every need (cookies, redirects, proxies, tracing, forms, decompression) and on
a gateway's path it cost more per call than the rest of hubproxy together. An upstream call needs
none of that: the request line and headers are bytes made once per provider and key, the body is the
client's bytes, and the answer is read by httptools (llhttp, the parser uvicorn uses), either whole
or piece by piece as it arrives for a stream.

Each wait for bytes is bounded by a timeout given by the caller. A kept-alive connection that the
server closed while it sat idle is only found out when it is used: a call sent on a reused connection
that broke before any byte of the answer came is sent once more on a new connection. (A POST may not be
retried blindly, but a server that read a call drops the connection without a byte of answer only when
it dies mid-call; the OpenAI SDKs would retry the resulting 502 just the same.)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from hubproxy.upstream.proxy import Proxy

DNS_TTL_SECONDS = 300.0  # a provider's addresses are looked up again after this long
KEEP_IDLE_SECONDS = 30.0  # a pooled connection unused longer than this is closed rather than reused
PAUSE_AT = 1 << 18  # bytes of a stream buffered and not yet relayed before reading from upstream pauses


class UpstreamError(Exception):
    """The upstream could not be reached, or broke off its answer; the message says which way."""


class ProxyError(UpstreamError):
    """The egress proxy could not be reached or refused the tunnel: not the provider's fault."""


class Origin:
    """Where one provider lives: its connection parameters and the request heads made for it."""

    def __init__(self, base_url: str, tls: ssl.SSLContext, proxy: Proxy | None = None) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.raw_host or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.tls = tls if url.scheme == "https" else None
        self.path = url.raw_path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if url.is_default_port() else f"{host}:{self.port}"
        # through an egress proxy: connections go to it; https through a CONNECT tunnel, plain http as
        # requests in absolute form carrying the proxy's credentials
        self.proxy = proxy
        self.dial = (proxy.host, proxy.port) if proxy else (self.host, self.port)
        self.target = f"http://{self.host_header}{self.path}" if proxy and not self.tls else self.path
        self.idle: list[Connection] = []
        self._addresses: list[tuple[str, int]] = []
        self._fresh_until = 0.0
        self._lookup: asyncio.Task | None = None

    async def addresses(self, loop: asyncio.AbstractEventLoop) -> list[tuple[str, int]]:
        """The host's addresses, looked up once per DNS_TTL_SECONDS: a burst of new connections (many
        streams opening at once) shares one lookup instead of queueing one each on the thread pool."""
        if self._addresses and loop.time() < self._fresh_until:
            return self._addresses
        if self._lookup is None or self._lookup.done():
            self._lookup = loop.create_task(self._resolve(loop))
        return await asyncio.shield(self._lookup)

    async def _resolve(self, loop: asyncio.AbstractEventLoop) -> list[tuple[str, int]]:
        found = await loop.getaddrinfo(*self.dial, type=socket.SOCK_STREAM)
        self._addresses = list(dict.fromkeys((str(info[4][0]), int(info[4][1])) for info in found))
        self._fresh_until = loop.time() + DNS_TTL_SECONDS
        return self._addresses

    def head(self, endpoint: str, headers: dict[str, str], method: str = "POST") -> bytes:
        """The request line and headers up to the body's length, which each call appends."""
        lines = [f"{method} {self.target}{endpoint} HTTP/1.1", f"Host: {self.host_header}"]
        if self.proxy is not None and self.tls is None and self.proxy.authorization:
            lines.append(f"Proxy-Authorization: {self.proxy.authorization}")
        for name, value in headers.items():
            if any(c in name or c in value for c in "\r\n"):  # it would end the header early: refuse, never send
                raise UpstreamError(f"its {name} header has a line break in it; check the key or header configured")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class Response:
    """An upstream answer: status and headers at once, the body whole (`read`) or as it comes (`chunks`)."""

    __slots__ = ("_body", "_buffered", "_conn", "_error", "_headers", "_raw_headers", "_waiter", "complete", "status")

    def __init__(self, conn: Connection) -> None:
        self.status = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: CIMultiDictProxy[str] | None = None
        self._body: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future | None = None
        self._error: BaseException | None = None
        self.complete = False
        self._conn = conn

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(
                CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw_headers)
            )
        return self._headers

    async def read(self, timeout: float) -> bytes:
        """The whole body; each wait for more bytes is bounded by `timeout` seconds."""
        while not self.complete:
            await self._wait(timeout)
        body = self._body
        return body[0] if len(body) == 1 else b"".join(body)

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        """The body as it arrives: everything buffered since the last step, each wait bounded by `timeout`."""
        conn = self._conn
        while True:
            if self._body:
                body, self._body, self._buffered = self._body, [], 0
                if conn.paused:
                    conn.resume()
                yield body[0] if len(body) == 1 else b"".join(body)
            elif self.complete:
                return
            else:
                await self._wait(timeout)

    def release(self) -> None:
        """Done with this answer: its connection goes back to the pool if the answer was read to its end."""
        conn = self._conn
        if conn.response is self:
            conn.finish(reuse=self.complete and self._error is None)

    def close(self) -> None:
        """Done, and the rest of the answer is not wanted: the connection is closed."""
        conn = self._conn
        if conn.response is self:
            conn.finish(reuse=False)

    async def _wait(self, timeout: float) -> None:
        if self._error is not None:
            raise self._error
        conn = self._conn
        waiter = self._waiter = conn.loop.create_future()
        conn.watch(waiter, timeout)
        try:
            await waiter
        finally:
            self._waiter = conn.waiting = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = error
            self._wake()


class Connection(asyncio.Protocol):
    """One kept-alive connection; it carries one request at a time."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.paused = False
        self.reused = False
        self.answered = False
        self.keep_alive = False
        self.interim = False
        self.idle_since = 0.0
        self.tunnel: asyncio.Future[int] | None = None  # a CONNECT's answer awaited
        self._tunnel_reply = b""
        self.waiting: asyncio.Future | None = None  # what a wait for bytes awaits, until `deadline`
        self.deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def watch(self, waiter: asyncio.Future, timeout: float) -> None:
        """Fail `waiter` with TimeoutError unless it is done within `timeout` seconds. One timer per
        connection puts itself off while waits keep ending in time, instead of a timer made and
        cancelled per wait (per call, and per chunk of a stream)."""
        self.waiting, self.deadline = waiter, self.loop.time() + timeout
        if self._timer is None or self._timer_at > self.deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = self.deadline
            self._timer = self.loop.call_at(self.deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        waiter = self.waiting
        if waiter is None or waiter.done():
            return  # nothing waits: the next wait arms the timer again
        if self.loop.time() >= self.deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._timer_at = self.deadline
            self._timer = self.loop.call_at(self.deadline, self._check_deadline)

    def send(self, head: bytes, payload: bytes) -> Response:
        assert self.transport is not None
        response = self.response = Response(self)
        self.answered = False
        self.transport.writelines((head, b"%d\r\n\r\n" % len(payload), payload))
        return response

    def finish(self, reuse: bool) -> None:
        self.response = None
        if reuse and self.keep_alive and not self.closed:
            if self.paused:
                self.resume()
            self.reused = True
            self.idle_since = now = self.loop.time()
            idle = self.origin.idle
            while idle and now - idle[0].idle_since >= KEEP_IDLE_SECONDS:  # the oldest: unused since a peak
                idle.pop(0).close()
            idle.append(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def open_tunnel(self, origin: Origin) -> asyncio.Future[int]:
        """Ask the proxy for a tunnel to the origin; the future gives the proxy's status code."""
        assert self.transport is not None and origin.proxy is not None
        self.tunnel = self.loop.create_future()
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        target = f"{host}:{origin.port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if origin.proxy.authorization:
            lines.append(f"Proxy-Authorization: {origin.proxy.authorization}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return self.tunnel

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None and not self.tunnel.done():
            self._tunnel_reply += data
            if b"\r\n\r\n" in self._tunnel_reply:
                status = self._tunnel_reply.split(b" ", 2)[1] if self._tunnel_reply.startswith(b"HTTP/") else b"0"
                self.tunnel.set_result(int(status) if status.isdigit() else 0)
            return
        if self.response is None:  # bytes nobody asked for: the connection cannot be trusted again
            self.close()
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.response._fail(UpstreamError(f"malformed HTTP answer ({exc})"))
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.tunnel is not None and not self.tunnel.done():
            self.tunnel.set_result(0)
        response = self.response
        if response is None or response.complete:
            return
        if response.status and self._reads_to_close(response):
            response.complete = True  # no length given: the body was everything up to the close
            response._wake()
        elif not self.answered and self.reused:
            response._fail(StaleConnection())
        else:
            response._fail(UpstreamError("the connection closed mid-answer" if response.status else "disconnected"))

    @staticmethod
    def _reads_to_close(response: Response) -> bool:
        names = {name.lower() for name, _ in response._raw_headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response._raw_headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self.interim = True
            response._raw_headers.clear()
            return
        response.status = status
        self.keep_alive = self.parser.should_keep_alive()  # read here: llhttp forgets it once the message ends
        response._wake()

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response._body.append(body)
        response._buffered += len(body)
        if response._buffered > PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        if self.interim:
            self.interim = False
            return
        response.complete = True
        response._wake()


class StaleConnection(UpstreamError):
    """A reused connection broke before any answer came: the server had closed it while it was idle."""


class Client:
    """Kept-alive connections per origin, for the server's life."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.tls = ssl.create_default_context()
        self._origins: dict[tuple[str, Proxy | None], Origin] = {}

    def origin(self, base_url: str, proxy: Proxy | None = None) -> Origin:
        """One per base URL and proxy, kept across config reloads so that its idle connections stay in use."""
        origin = self._origins.get((base_url, proxy))
        if origin is None:
            origin = self._origins[(base_url, proxy)] = Origin(base_url, self.tls, proxy)
        return origin

    async def post(self, origin: Origin, head: bytes, payload: bytes, timeout: float) -> Response:
        """Send the request; return once the status and headers are in (waiting at most `timeout`)."""
        for _ in range(2):
            conn = await self._connection(origin)
            response = conn.send(head, payload)
            try:
                while not response.status:
                    await response._wait(timeout)
            except StaleConnection:
                continue
            except BaseException:
                response.close()
                raise
            return response
        raise UpstreamError("disconnected")

    async def _connection(self, origin: Origin) -> Connection:
        idle = origin.idle
        now = None
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            now = now or conn.loop.time()
            if now - conn.idle_since < KEEP_IDLE_SECONDS:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        if origin.proxy is not None:
            return await self._through_proxy(origin, loop)
        try:
            async with asyncio.timeout(self.connect_timeout):
                addresses = await origin.addresses(loop)
                for number, (host, port) in enumerate(addresses, start=1):
                    try:
                        _, conn = await loop.create_connection(
                            lambda: Connection(origin, loop),
                            host,
                            port,
                            ssl=origin.tls,
                            server_hostname=origin.host if origin.tls else None,
                        )
                        return conn
                    except OSError:
                        if number == len(addresses):
                            raise
        except TimeoutError:
            raise UpstreamError(f"no connection within {self.connect_timeout:g}s") from None
        except OSError as exc:  # ssl.SSLError and socket.gaierror included
            raise UpstreamError(f"could not connect: {exc.strerror or exc}") from None
        raise UpstreamError(f"could not connect: no address found for {origin.host}")

    async def _through_proxy(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> Connection:
        """A connection to the origin through its proxy: a CONNECT tunnel and TLS inside it for https,
        the proxy itself for plain http. Failures name the proxy by its address only."""
        proxy = origin.proxy
        try:
            async with asyncio.timeout(self.connect_timeout):
                host, port = (await origin.addresses(loop))[0]
                transport, conn = await loop.create_connection(lambda: Connection(origin, loop), host, port)
                if origin.tls is None:
                    return conn
                status = await conn.open_tunnel(origin)
                if status != 200:
                    conn.close()
                    # 407 as HTTP says; tinyproxy answers a CONNECT with wrong credentials 401
                    reason = "refused its credentials" if status in (401, 407) else f"answered HTTP {status}"
                    raise ProxyError(f"the proxy {proxy} {reason} to a tunnel to {origin.host_header}")
                conn.tunnel = None
                conn.transport = await loop.start_tls(transport, conn, origin.tls, server_hostname=origin.host)
                return conn
        except TimeoutError:
            raise ProxyError(f"the proxy {proxy} gave no connection within {self.connect_timeout:g}s") from None
        except ssl.SSLError as exc:
            raise UpstreamError(f"could not connect: {exc.strerror or exc}") from None
        except OSError as exc:
            raise ProxyError(f"could not reach the proxy {proxy} ({exc.strerror or exc})") from None

    def close(self) -> None:
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()
