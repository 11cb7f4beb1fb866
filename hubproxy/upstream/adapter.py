"""The upstream adapter: which wire APIs a provider serves, and how a request reaches it.

One adapter serves every provider over HTTP: OpenAI's chat and Responses APIs, Anthropic's Messages
API and Google's Gemini API, each at its own origin (`serves` says which a provider has). Request
bodies go through as the leg built them; this adapter knows where to send them, how to authenticate
(a bearer key, `x-api-key` for Messages, `x-goog-api-key` for Gemini), and how to turn a transport
failure into the gateway's error. A provider that needs different code (a signed request, another
transport) would be one more adapter with the same methods, registered in `upstream/pool.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import cast

import orjson

from hubproxy import __version__, errors
from hubproxy.config import Provider
from hubproxy.upstream.http import Client, Origin, ProxyError, Response, UpstreamError
from hubproxy.upstream.proxy import proxy_for
from hubproxy.upstream.sockets import ResponseSockets

USER_AGENT = f"hubproxy/{__version__}"


CONTENT_LENGTH = b"Content-Length: "
PROXY_FAILED = "proxy_unreachable"  # the code of an error the egress proxy caused
ANTHROPIC_VERSION = b"anthropic-version: 2023-06-01\r\n"


class OpenAICompatAdapter:
    """A provider on the OpenAI HTTP API (`chat`, authenticated with a bearer key) and, where its
    config says so, Anthropic's Messages API (`messages`, at `messages_base_url` or `base_url`, with
    `x-api-key`)."""

    def __init__(self, provider: Provider, client: Client, sockets: ResponseSockets | None = None) -> None:
        self.provider = provider
        self.client = client
        # streamed Responses calls over the provider's own WebSocket, where its config says so
        self.sockets = sockets if provider.responses_socket else None
        self.socket_url = provider.base_url.rstrip("/") + "/responses"
        self.socket_proxy = proxy_for(provider.base_url, provider.proxy)  # the egress proxy holds for sockets too
        self.serves = frozenset(provider.apis)

        def origin(base_url: str) -> Origin:
            return client.origin(base_url, proxy_for(base_url, provider.proxy))

        self.origin: Origin = origin(provider.base_url)
        self.origins = {
            "chat": self.origin,
            "responses": self.origin,
            "messages": origin(provider.messages_base_url or provider.base_url),
            "gemini": origin(provider.gemini_base_url or provider.base_url),
        }
        # identity: the answer is read for its usage and passed on as is, so it must not come compressed
        self._base_headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
            **provider.headers,
        }
        self._heads: dict[tuple[str, str | None, bool, str], bytes] = {}

    def head(self, path: str, api_key: str | None, stream: bool, method: str = "POST", api: str = "chat") -> bytes:
        """The request line and headers, made once per path, key and mode."""
        found = self._heads.get((path, api_key, stream, api))
        if found is None:
            headers = dict(self._base_headers)
            if api_key and api == "messages":
                headers["x-api-key"] = api_key
            elif api_key and api == "gemini":
                headers["x-goog-api-key"] = api_key
            elif api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            headers["Accept"] = "text/event-stream" if stream else "application/json"
            if len(self._heads) >= 64:  # the key comes from the environment and may change
                self._heads.clear()
            found = self._heads[(path, api_key, stream, api)] = self.origins[api].head(path, headers, method)
        return found

    def send(
        self,
        path: str,
        payload: bytes,
        api_key: str | None,
        stream: bool,
        timeout: float,
        api: str = "chat",
        extra: bytes = b"",
    ) -> Awaitable[Response]:
        """Send one call over `api` (`extra`: header lines of the client's to pass on): awaiting the
        result gives the answer once its status and headers are in (a plain function, not a coroutine:
        one frame less on every resume of a call). Awaiting it raises TimeoutError or UpstreamError,
        which `unreachable` turns into the gateway's 502."""
        if self.provider.api_key_env and not api_key:
            raise errors.upstream_unavailable(
                f"Provider {self.provider.name!r} has no API key: the environment variable "
                f"{self.provider.api_key_env} is not set where hubproxy runs.",
                status=503,
            )
        if self.sockets is not None and stream and api == "responses":
            headers = {"User-Agent": USER_AGENT, **self.provider.headers}
            if api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            # a SocketAnswer: the surface of Response the call path reads
            sent = self.sockets.send(self.socket_url, headers, payload, timeout, self.socket_proxy)
            return cast("Awaitable[Response]", sent)
        head = self.head(path, api_key, stream, "POST", api)
        if extra:
            head = head[: -len(CONTENT_LENGTH)] + extra + CONTENT_LENGTH
        return self.client.post(self.origins[api], head, payload, timeout)

    def unreachable(self, exc: Exception, timeout: float) -> errors.GatewayError:
        name = self.provider.name
        if isinstance(exc, TimeoutError):
            return errors.upstream_unavailable(f"Provider {name!r} did not answer within {timeout:g}s.")
        if isinstance(exc, ProxyError):  # the breaker must not blame the provider (routing/failover.py)
            failure = errors.upstream_unavailable(f"Could not reach provider {name!r}: {exc}.")
            failure.code = PROXY_FAILED
            return failure
        return errors.upstream_unavailable(f"Could not reach provider {name!r} ({exc}).")

    async def read_whole(self, resp: Response, timeout: float) -> bytes:
        """The whole body; each wait for more bytes is bounded by `timeout`."""
        name = self.provider.name
        try:
            return await resp.read(timeout)
        except TimeoutError:
            raise errors.upstream_unavailable(f"Provider {name!r} stopped sending mid-answer.") from None
        except UpstreamError as exc:
            raise errors.upstream_unavailable(f"Provider {name!r} broke off its answer ({exc}).") from None

    async def list_models(self, api_key: str | None, timeout: float) -> tuple[int, object]:
        """GET /models with the provider's own headers and key: (status, the parsed body or None). A
        provider that serves only Messages is asked Anthropic's way: `GET /v1/models` with `x-api-key`
        and `anthropic-version` (https://docs.anthropic.com/en/api/models-list, read 2026-12-07); one
        that serves only Gemini's API, Google's way: `GET /v1beta/models` with `x-goog-api-key`, its
        `models` listed as OpenAI's `data` (https://ai.google.dev/api/models, read 2026-12-07)."""
        if self.serves == {"messages"}:
            head = self.head("/v1/models", api_key, False, "GET", "messages")
            head = head[: -len(CONTENT_LENGTH)] + ANTHROPIC_VERSION + CONTENT_LENGTH
            origin = self.origins["messages"]
        elif self.serves == {"gemini"}:
            head, origin = self.head("/v1beta/models", api_key, False, "GET", "gemini"), self.origins["gemini"]
        else:
            head, origin = self.head("/models", api_key, False, "GET"), self.origin
        try:
            resp = await self.client.post(origin, head, b"", timeout)
            data = await resp.read(timeout)
        except (TimeoutError, UpstreamError) as exc:
            reason = str(exc) or "no answer in time"
            raise errors.upstream_unavailable(f"could not reach {self.provider.base_url}: {reason}") from None
        resp.release()
        try:
            listed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return resp.status, None
        if self.serves == {"gemini"} and isinstance(listed, dict) and isinstance(listed.get("models"), list):
            names = [m.get("name") for m in listed["models"] if isinstance(m, dict)]
            listed = {"data": [{"id": n.removeprefix("models/")} for n in names if isinstance(n, str)]}
        return resp.status, listed
