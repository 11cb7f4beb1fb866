"""Two translations through the chat pivot, for a client and an upstream that both speak something
other than chat (a Responses client on a Messages-only model, say).

The client's translator turns its request into chat and a chat answer back into its format; the
upstream's leg turns chat into the upstream's format and its answer back into chat. `Through` runs
the request through both, and the answer (whole, or event by event: `Chained`) back through both, so
each format needs translators to and from chat only, never one per pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from hubproxy.protocols import FINAL, Call, End, Leg, Outbound, StreamWatch, ToChat, Usage
from hubproxy.protocols import openai_chat as chat
from hubproxy.protocols.sse import event_data, split_events

if TYPE_CHECKING:
    from hubproxy.routing.router import Route

ASKS_USAGE = {"include_usage": True}


def chat_fields(fields: Any) -> chat.ChatFields:
    """What the upstream's leg reads of the chat request between the two translations: the model, the
    usage switch, and the client's output limit."""
    return chat.ChatFields(model=fields.model, stream_options=ASKS_USAGE, max_tokens=fields.max_output, messages=[])


class Chained:
    """The upstream leg's stream watch (upstream events → chat chunks) feeding the client translator's
    (chat chunks → client events). Usage is the upstream's; the call is settled when the upstream's
    stream ends, before anything of the end leaves."""

    def __init__(self, inner: StreamWatch, outer: StreamWatch) -> None:
        self.inner, self.outer = inner, outer

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage

    @property
    def output_events(self) -> int:
        return self.inner.output_events

    @output_events.setter
    def output_events(self, value: int) -> None:
        self.inner.output_events = value

    @staticmethod
    def worth_reading(events: bytes) -> bool:
        return True

    def _through_outer(self, chunks: bytes) -> bytes:
        out = b""
        for event in split_events(chunks):
            produced = self.outer.read(event, event_data(event))
            if produced is not FINAL and produced:
                out += produced
        return out

    def read(self, event: bytes, payload: bytes | None) -> bytes | End | None:
        produced = self.inner.read(event, payload)
        if produced is FINAL:
            return FINAL
        return self._through_outer(produced) if produced else None

    def closing(self, cost: int) -> bytes:
        return self._through_outer(self.inner.closing(cost)) + self.outer.closing(cost)

    def error_event(self, message: str) -> bytes:
        return self.outer.error_event(message)


class Through:
    """A leg made of the client's translator to chat and the upstream's leg from chat."""

    def __init__(self, client_leg: ToChat, upstream_leg: Leg) -> None:
        self.client_leg, self.upstream_leg = client_leg, upstream_leg
        self.api = upstream_leg.api

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        as_chat = self.client_leg.as_chat(call, route.upstream_model, True)
        request = self.upstream_leg.upstream_request(call.with_body(as_chat, chat.CHAT.read(as_chat)), route)
        return msgspec.structs.replace(request, leg=self)

    def stream_watch(self, fields: Any, prompt_tokens: int) -> Chained:
        inner = self.upstream_leg.stream_watch(chat_fields(fields), prompt_tokens)
        return Chained(inner, self.client_leg.stream_watch(fields, prompt_tokens))

    def answer_usage(self, data: bytes) -> tuple[Usage | None, Any]:
        return self.upstream_leg.answer_usage(data)

    def answer_body(self, data: bytes, document: Any, cost: int | None, fields: Any) -> bytes:
        as_chat = self.upstream_leg.answer_body(data, document, cost, chat_fields(fields))
        try:
            chat_document = orjson.loads(as_chat)
        except orjson.JSONDecodeError:
            return as_chat
        return self.client_leg.answer_body(as_chat, chat_document, cost, fields)

    def upstream_error_message(self, data: bytes) -> tuple[str, bool]:
        return self.upstream_leg.upstream_error_message(data)[0], False
