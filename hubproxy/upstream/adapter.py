"""The default adapter: any provider that speaks the OpenAI HTTP API (nearly all of them).

Request bodies go through as they came, with only `model` and `stream_options` rewritten by the
caller; this adapter only knows where to send them and how to authenticate.
"""

from __future__ import annotations

from hubproxy import __version__
from hubproxy.config import Provider
from hubproxy.upstream.http import Origin

USER_AGENT = f"hubproxy/{__version__}"


class OpenAICompatAdapter:
    def __init__(self, provider: Provider, origin: Origin) -> None:
        self.provider = provider
        self.origin = origin
        # identity: the answer is read for its usage and passed on as is, so it must not come compressed
        self._base_headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
            **provider.headers,
        }
        self._heads: dict[tuple[str, str | None, bool], bytes] = {}

    def head(self, endpoint: str, api_key: str | None, stream: bool) -> bytes:
        """The request line and headers, made once per endpoint, key and mode."""
        found = self._heads.get((endpoint, api_key, stream))
        if found is None:
            headers = dict(self._base_headers)
            if api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            headers["Accept"] = "text/event-stream" if stream else "application/json"
            if len(self._heads) >= 64:  # the key comes from the environment and may change
                self._heads.clear()
            found = self._heads[(endpoint, api_key, stream)] = self.origin.head(endpoint, headers)
        return found
