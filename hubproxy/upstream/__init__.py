"""Upstream providers: one adapter interface, one pooled HTTP session per provider."""

from __future__ import annotations

import aiohttp

from hubproxy.config import Provider, Timeouts
from hubproxy.upstream.openai_compat import OpenAICompatAdapter

ADAPTERS = {"openai": OpenAICompatAdapter}


class Upstreams:
    """Owns one `aiohttp.ClientSession` per provider, reused for the server's life."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._in_flight: dict[str, int] = {}
        self.set_timeouts(timeouts)

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Non-streamed calls: each wait for bytes (headers included) is bounded by `first_byte` (or the
        provider's own `timeout`). Streams: the caller bounds the wait for headers and between chunks."""
        self.timeouts = timeouts
        self.stream_timeout = aiohttp.ClientTimeout(sock_connect=timeouts.connect)
        self._call_timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def first_byte(self, provider: Provider) -> float:
        return provider.timeout or self.timeouts.first_byte

    def call_timeout(self, provider: Provider) -> aiohttp.ClientTimeout:
        seconds = self.first_byte(provider)
        timeout = self._call_timeouts.get(seconds)
        if timeout is None:
            timeout = self._call_timeouts[seconds] = aiohttp.ClientTimeout(
                sock_connect=self.timeouts.connect, sock_read=seconds
            )
        return timeout

    def try_acquire(self, provider: Provider) -> bool:
        """Take one of the provider's `max_concurrent` slots; False when all are in use."""
        count = self._in_flight.get(provider.name, 0)
        if provider.max_concurrent is not None and count >= provider.max_concurrent:
            return False
        self._in_flight[provider.name] = count + 1
        return True

    def release(self, provider: Provider) -> None:
        self._in_flight[provider.name] -= 1

    def session(self, provider: Provider) -> aiohttp.ClientSession:
        session = self._sessions.get(provider.name)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
            self._sessions[provider.name] = session
        return session

    @staticmethod
    def adapter(provider: Provider) -> OpenAICompatAdapter:
        return ADAPTERS[provider.api_style](provider)

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
