"""Every provider's adapter, over one HTTP client, with the timeouts and `max_concurrent` slots."""

from __future__ import annotations

from hubproxy import errors
from hubproxy.config import ConfigError, Provider, Timeouts
from hubproxy.upstream.adapter import OpenAICompatAdapter
from hubproxy.upstream.http import Client
from hubproxy.upstream.sockets import ResponseSockets

ADAPTERS = {"openai": OpenAICompatAdapter}


class Upstreams:
    def __init__(self, timeouts: Timeouts) -> None:
        self.client = Client(timeouts.connect)
        self.sockets = ResponseSockets()
        self._in_flight: dict[str, int] = {}
        self._adapters: dict[str, OpenAICompatAdapter] = {}
        self.set_timeouts(timeouts)

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Every wait for the answer's status and headers, and each wait for more of a non-streamed body,
        is bounded by `first_byte` (or the provider's own `timeout`); streams bound waits between chunks
        by `idle`. Adapters are made again for the new config's providers."""
        self.timeouts = timeouts
        self.client.connect_timeout = timeouts.connect
        self._adapters.clear()

    def first_byte(self, provider: Provider) -> float:
        return provider.timeout or self.timeouts.first_byte

    def try_acquire(self, provider: Provider) -> bool:
        """Take one of the provider's `max_concurrent` slots; False when all are in use."""
        count = self._in_flight.get(provider.name, 0)
        if provider.max_concurrent is not None and count >= provider.max_concurrent:
            return False
        self._in_flight[provider.name] = count + 1
        return True

    def release(self, provider: Provider) -> None:
        self._in_flight[provider.name] -= 1

    def adapter(self, provider: Provider) -> OpenAICompatAdapter:
        adapter = self._adapters.get(provider.name)
        if adapter is None or adapter.provider is not provider:
            try:
                adapter = self._adapters[provider.name] = adapter_for(provider, self.client, self.sockets)
            except ConfigError as exc:  # its proxy variable changed to something that is not a proxy URL
                raise errors.upstream_unavailable(f"Provider {provider.name!r}: {exc}", status=503) from None
        return adapter

    def close(self) -> None:
        self.client.close()

    async def close_sockets(self) -> None:
        await self.sockets.close()


def adapter_for(provider: Provider, client: Client, sockets: ResponseSockets | None = None) -> OpenAICompatAdapter:
    return ADAPTERS[provider.api_style](provider, client, sockets)
