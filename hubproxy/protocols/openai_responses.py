"""OpenAI's Responses wire format: `POST /v1/responses` (Codex, newer SDK code, Cursor for some models).

The request fields the gateway reads or checks, where usage is (`usage` of a whole response, the
`response.completed` event of a stream: `input_tokens` with `input_tokens_details.cached_tokens`,
`output_tokens` with `output_tokens_details.reasoning_tokens`), and the error shape, which is
OpenAI's. A deployment serving `responses` gets the client's bytes with only `model` rewritten; one
that serves only `chat` is reached through `protocols/responses_chat.py`. Wire format as documented
at https://platform.openai.com/docs/api-reference/responses (read 2026-12-02).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
import orjson
from msgspec import UnsetType

from hubproxy.errors import invalid_request
from hubproxy.protocols import FINAL, Call, End, Outbound, Usage, decode_body
from hubproxy.protocols import openai_chat as chat
from hubproxy.protocols.sse import event_object

if TYPE_CHECKING:
    from hubproxy.routing.router import Route

API = "responses"
# the smallest `max_output_tokens` Responses takes (the Open Responses spec, 2026-04-24, and OpenAI's
# API reference say so): a smaller client limit goes up as this, and the hold covers it
MIN_OUTPUT_TOKENS = 16
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
TOOL_PREAMBLE = 512


class Tool(msgspec.Struct):
    """A tool as declared; all but `type` and `name` only echoed back in a translated `response`."""

    type: str
    name: str | None = None
    description: object = None
    parameters: object = None
    strict: object = None
    format: object = None


class ResponsesFields(msgspec.Struct):
    """The top-level fields the gateway reads or checks; `input` is skipped unbuilt."""

    model: Any = None  # any JSON as sent; `read` checks it is a non-empty string
    input: msgspec.Raw | UnsetType = msgspec.UNSET
    instructions: str | None = None
    stream: bool | None = None
    max_output_tokens: PositiveInt | UnsetType | None = msgspec.UNSET  # None: sent as null
    tools: list[Tool] | None = None
    tool_choice: str | dict | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    # echoed back by a translated `response` (Open Responses requires them there), checked when echoed
    reasoning: object = None
    text: object = None
    metadata: object = None
    parallel_tool_calls: object = None
    presence_penalty: object = None
    frequency_penalty: object = None
    top_logprobs: object = None
    max_tool_calls: object = None
    user: object = None
    safety_identifier: object = None
    prompt_cache_key: object = None

    choices: ClassVar[int] = 1
    # OpenAI's web_search tool is billed per call too, but has no per-call bound: see README, "not billed"
    web_searches: ClassVar[int] = 0

    @property
    def max_output(self) -> int | None:
        return chat.largest_limit(self.max_output_tokens)


DECODER = msgspec.json.Decoder(ResponsesFields)
TEXT_PARTS = frozenset(("input_text", "output_text", "refusal", "reasoning_text", "summary_text", "text"))


class InputPart(msgspec.Struct):
    """A content part of an input item: its type, and its text checked to be a string."""

    type: str | UnsetType = msgspec.UNSET
    text: str | UnsetType = msgspec.UNSET


class InputItem(msgspec.Struct):
    """An input item, as far as media go: a message's `content` parts, and a tool output's `output`
    (text, parts, or one object such as a computer call's screenshot)."""

    type: str | UnsetType = msgspec.UNSET
    role: Literal["user", "assistant", "system", "developer"] | UnsetType = msgspec.UNSET
    content: str | list[InputPart] | None = None
    output: msgspec.Raw | UnsetType = msgspec.UNSET


INPUT_DECODER = msgspec.json.Decoder(str | list[InputItem])
PARTS_DECODER = msgspec.json.Decoder(list[InputPart])


def media_in_input(raw_input: msgspec.Raw) -> int:
    """Parts of `input` that are not text (images, files, audio, screenshots), from the parsed JSON so
    that no encoding hides one; a part whose text is not a string is the caller's 400."""
    try:
        items = INPUT_DECODER.decode(raw_input)
        if isinstance(items, str):
            return 0
        count = 0
        for item in items:
            for parts in (item.content, item.output):
                if parts.__class__ is msgspec.Raw:
                    start = bytes(parts)[:1]
                    parts = PARTS_DECODER.decode(parts) if start == b"[" else None
                    count += start == b"{"
                if parts.__class__ is list:
                    for part in parts:
                        if part.type not in TEXT_PARTS:
                            count += 1
                        elif part.text is msgspec.UNSET and part.type in ("input_text", "output_text"):
                            raise invalid_request(f"Invalid 'input': an {part.type} part needs its 'text'.")
        return count
    except msgspec.ValidationError as exc:
        raise chat.invalid_inside(exc, "input") from None


def read_usage(usage: object) -> Usage | None:
    """Responses usage: `input_tokens` counts cached ones; `output_tokens` counts reasoning."""
    if usage.__class__ is not dict:
        return None
    prompt, output = usage.get("input_tokens"), usage.get("output_tokens")
    if prompt.__class__ is not int or output.__class__ is not int or prompt < 0 or output < 0:
        return None
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if details.__class__ is dict else 0
    details = usage.get("output_tokens_details")
    reasoning = details.get("reasoning_tokens") if details.__class__ is dict else 0
    cached = cached if cached.__class__ is int and cached >= 0 else 0
    reasoning = reasoning if reasoning.__class__ is int and reasoning >= 0 else 0
    return Usage(prompt, output, min(cached, prompt), 0, min(reasoning, output))


def summary_text(item: dict) -> str:
    """A reasoning item's summary as one text (its parts' texts; anything else in it is skipped)."""
    summary = item.get("summary")
    if not isinstance(summary, list):
        return ""
    return "".join(str(p.get("text", "")) for p in summary if isinstance(p, dict))


def answer_usage(data: bytes) -> tuple[Usage | None, object]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None
    return read_usage(document.get("usage") if document.__class__ is dict else None), document


class StreamWatch:
    """Usage over a native Responses stream: the `response.completed` event carries it and ends the
    stream, so the call is settled before that event leaves."""

    __slots__ = ("final", "output_events", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_events = 0
        self.final = b""

    @staticmethod
    def worth_reading(events: bytes) -> bool:
        return b"response.completed" in events or b"response.incomplete" in events or b"response.failed" in events

    def read(self, event: bytes, payload: bytes | None) -> bytes | End | None:
        if payload is None or b'"usage"' not in payload:
            self.output_events += 1
            return event
        data = event_object(payload)
        if data is not None and data.get("type") in (
            "response.completed",
            "response.incomplete",
            "response.failed",
        ):
            response = data.get("response")
            self.usage = read_usage(response.get("usage") if response.__class__ is dict else None)
            self.final = event
            return FINAL
        return event

    def closing(self, cost: int) -> bytes:
        return self.final

    def error_event(self, message: str) -> bytes:
        return stream_error(message, self.output_events)  # every event before the last counts there


def stream_error(message: str, sequence: int) -> bytes:
    """An `error` event inside a stream whose 200 status line is already sent: the fields at the top as
    OpenAI's SDKs read them, and under `error` as the Open Responses `ErrorStreamingEvent` has them."""
    error = {"type": "server_error", "code": "upstream_unavailable", "message": message, "param": None}
    body = {**error, "type": "error", "sequence_number": sequence, "error": error}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


def with_model(raw: bytes, fields: ResponsesFields, upstream_model: str) -> bytes:
    if upstream_model == fields.model:
        return raw
    whole = orjson.loads(raw)
    whole["model"] = upstream_model
    return orjson.dumps(whole)


@dataclass(frozen=True, eq=False)
class Endpoint:
    """`/responses`: the `ClientEndpoint` of this format (see `protocols/__init__.py`)."""

    name: str = "responses"
    path: str = "/responses"
    api: str = API
    makes_output: bool = True
    streams: bool = True

    def read(self, raw: bytes) -> ResponsesFields:
        fields = decode_body(DECODER, raw, chat.invalid_field)
        if fields.model.__class__ is not str or not fields.model:
            raise invalid_request("'model' is required and must be a string.", param="model")
        if fields.input is msgspec.UNSET:
            raise invalid_request("'input' is required: a string or an array of items.", param="input")
        chat.text_or_list(fields.input, "input")
        return fields

    def unseen_tokens(self, fields: ResponsesFields, image_tokens: int) -> int:
        """`image_tokens` for each part of `input` that is not text, and a tools preamble, as for chat."""
        unseen = media_in_input(fields.input) * image_tokens if fields.input is not msgspec.UNSET else 0
        return unseen + TOOL_PREAMBLE if fields.tools else unseen

    def with_output_limit(
        self, raw: bytes, fields: ResponsesFields, limit: int, field: str = "max_output_tokens"
    ) -> tuple[bytes, ResponsesFields]:
        """The request with `max_output_tokens` set where the client left it out (whatever a chat
        provider calls it: Responses has one name)."""
        raw = chat.with_field(raw, "max_output_tokens", limit, fields.max_output_tokens is None)
        return raw, msgspec.structs.replace(fields, max_output_tokens=limit)

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        return Outbound(self, API, self.path, with_model(call.raw, call.fields, route.upstream_model), b"")

    def stream_watch(self, fields: ResponsesFields, prompt_tokens: int) -> StreamWatch:
        return StreamWatch()

    def answer_body(self, data: bytes, document: object, cost: int | None, fields: ResponsesFields) -> bytes:
        """Relayed untouched."""
        return data

    answer_usage = staticmethod(answer_usage)
    error_body = staticmethod(chat.error_body)
    upstream_error_message = staticmethod(chat.upstream_error_message)


RESPONSES = Endpoint()
