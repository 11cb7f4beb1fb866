"""Client wire formats: one module per format, each knowing its request fields, its usage fields, its
stream events and its error shape.

A format module offers its routes as `ClientEndpoint`s (`openai_chat` serves chat, completions and
embeddings today; Anthropic Messages and OpenAI Responses are next). An endpoint reads and checks
a request, builds the body for a deployment serving the same wire API (the client's bytes, only
`model` and the usage switch rewritten), reads a whole answer's usage and adds the cost to it,
makes the `StreamWatch` the relay hands each event to, and renders errors in the format's shape.
The call handler talks only to these two interfaces. A translator between two formats (a client
on one, an upstream on another) is one more module here, offering the same interfaces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import orjson

from hubproxy.errors import invalid_request


class Usage(msgspec.Struct):
    """Tokens of one call as billed. `input` counts every prompt token, cached and cache-written ones
    included; `reasoning` is the part of `output` the model spent thinking."""

    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0


class CallFields(Protocol):
    """What the gateway reads of a request, whatever its format (a format's decoded fields)."""

    model: Any  # checked to be a non-empty string by `read`
    stream: bool | None

    @property
    def max_output(self) -> int | None: ...


class StreamWatch(Protocol):
    """Reads a stream's events for the relay: accumulates their usage, says what to send for each
    (the event, a rewritten or translated one, or nothing yet), and which one ends the stream."""

    output_events: int  # content events: the output estimate when no usage comes

    @property
    def usage(self) -> Usage | None: ...

    def worth_reading(self, events: bytes) -> bool:
        """False: these events go on as they are, unread (the fast path)."""

    def read(self, event: bytes, payload: bytes | None) -> bytes | object | None:
        """Bytes to send now, None for nothing, or FINAL: the stream's usage is final; the relay
        settles the call and then sends `closing(cost)`."""

    def closing(self, cost: int) -> bytes:
        """What leaves once the call is settled (also when the stream ended without a final event)."""

    def error_event(self, message: str) -> bytes:
        """An in-band error, the status line being sent already."""


class ClientEndpoint(Protocol):
    path: str  # the upstream path, and the usage row's `endpoint`
    api: str  # the wire API a provider must serve to get the client's bytes as they are
    makes_output: bool
    streams: bool

    def read(self, raw: bytes) -> CallFields: ...

    def unseen_tokens(self, raw: bytes, fields: Any, image_tokens: int) -> int: ...

    def build_upstream_body(
        self, raw: bytes, fields: Any, upstream_model: str, stream_usage: bool, stream: bool
    ) -> bytes: ...

    def stream_watch(self, fields: Any, prompt_tokens: int) -> StreamWatch:
        """`prompt_tokens`: the call's prompt estimate, for a format that states the prompt's size before
        the upstream has (a translated Messages stream's `message_start`)."""

    def answer_usage(self, data: bytes) -> tuple[Usage | None, Any]: ...

    def answer_with_cost(self, document: Any, cost: int) -> bytes: ...

    def error_body(self, err: Any) -> bytes: ...

    def upstream_error_message(self, data: bytes) -> tuple[str, bool]: ...


def decode_body(decoder: msgspec.json.Decoder, raw: bytes, invalid_field: Callable[[msgspec.ValidationError], Any]):
    """A request body decoded into a format's fields, or the 400 for what is wrong with it
    (`invalid_field` words a wrong field the format's way)."""
    if not raw:
        raise invalid_request("Request body is empty; send a JSON object.")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise invalid_field(exc) from None
    except msgspec.DecodeError:
        raise invalid_request("Request body is not valid JSON.") from None
    except RecursionError:
        raise invalid_request("Request body is nested too deeply.") from None


def answered_model(document: object, fallback: str) -> str:
    """The model an upstream's answer (or stream event) names, which a translated answer carries as a
    relayed one does (README: "an answer's `model` is the upstream's name"); `fallback` where it names
    none."""
    model = document.get("model") if document.__class__ is dict else None
    return model if model.__class__ is str and model else fallback


def error_parts(data: bytes) -> tuple[str, dict | None]:
    """An upstream error body's message, and the body when it is a JSON object with an `error` object
    (both OpenAI's and Anthropic's shapes have one), else None."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if parsed.__class__ is dict and parsed.get("error").__class__ is dict:
        return str(parsed["error"].get("message", "")), parsed
    return data[:300].decode("utf-8", "replace").strip(), None


FINAL = object()
"""What a stream watch's `read` returns for the event that ends a stream."""

UNREADABLE = (AttributeError, TypeError, KeyError, ValueError, IndexError)
"""What a translator raises on a shape it cannot read: one side's JSON holding what the other side's
format does not allow (a list where an object goes, …). The server turns these into the error of
whoever sent it: the caller's 400, or the upstream's 502 or in-band error event."""
