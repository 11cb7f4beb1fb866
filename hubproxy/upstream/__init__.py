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
        self.set_timeouts(timeouts)

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Non-streamed calls: each wait for bytes (headers included) is bounded by `first_byte`.
        Streams: the caller bounds the wait for headers and the gaps between chunks itself."""
        self.call_timeout = aiohttp.ClientTimeout(sock_connect=timeouts.connect, sock_read=timeouts.first_byte)
        self.stream_timeout = aiohttp.ClientTimeout(sock_connect=timeouts.connect)

    def session(self, provider: Provider) -> aiohttp.ClientSession:
        session = self._sessions.get(provider.name)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
            self._sessions[provider.name] = session
        return session

    @staticmethod
    def adapter(provider: Provider) -> OpenAICompatAdapter:
        return ADAPTERS[provider.api_style](provider)

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
