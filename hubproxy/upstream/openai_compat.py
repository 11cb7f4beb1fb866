"""The default adapter: any provider that speaks the OpenAI HTTP API (nearly all of them).

Request bodies go through as they came, with only `model` and `stream_options` rewritten by the
caller; this adapter only knows where to send them and how to authenticate.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from hubproxy import __version__
from hubproxy.config import Provider

USER_AGENT = f"hubproxy/{__version__}"


class OpenAICompatAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._base_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **provider.headers}
        self._headers: dict[tuple[str | None, bool], CIMultiDictProxy[str]] = {}
        self._urls: dict[str, URL] = {}

    def url(self, endpoint: str) -> URL:
        """Parsed once per endpoint: aiohttp would parse a string URL again on every call."""
        found = self._urls.get(endpoint)
        if found is None:
            found = self._urls[endpoint] = URL(self.provider.base_url + endpoint)
        return found

    def headers(self, api_key: str | None, stream: bool) -> CIMultiDictProxy[str]:
        """Built once per key and mode: aiohttp takes a multidict as is, a dict it converts per call."""
        found = self._headers.get((api_key, stream))
        if found is None:
            headers = CIMultiDict(self._base_headers)
            if api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            headers["Accept"] = "text/event-stream" if stream else "application/json"
            if len(self._headers) >= 16:  # the key comes from the environment and may change
                self._headers.clear()
            found = self._headers[(api_key, stream)] = CIMultiDictProxy(headers)
        return found
