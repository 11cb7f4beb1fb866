"""The default adapter: any provider that speaks the OpenAI HTTP API (nearly all of them).

Request bodies go through as they came, with only `model` and `stream_options` rewritten by the
caller; this adapter only knows where to send them and how to authenticate.
"""

from __future__ import annotations

from hubproxy.config import Provider


class OpenAICompatAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._base_headers = {"Content-Type": "application/json", **provider.headers}

    def url(self, endpoint: str) -> str:
        return self.provider.base_url + endpoint

    def headers(self, api_key: str | None, stream: bool) -> dict[str, str]:
        headers = dict(self._base_headers)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        return headers
