"""Anthropic's Messages wire format: `POST /v1/messages` (Claude Code, the Anthropic SDKs, Cline).

Everything hubproxy knows about the format is here: the request fields it reads or checks, where
usage is in an answer and over a stream's events (`message_start` carries input and cache tokens,
`message_delta` the output and any corrected input), and the error shape. A deployment that serves
`messages` gets the client's bytes with only `model` rewritten; one that serves only `chat` is
reached through `protocols/messages_chat.py`. Wire format as documented at
https://docs.anthropic.com/en/api/messages and /en/api/messages-streaming (read 2026-12-02).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
import orjson
from msgspec import UnsetType

from hubproxy.errors import GatewayError, invalid_request
from hubproxy.protocols import FINAL, Call, End, Outbound, Usage, decode_body, error_parts
from hubproxy.protocols.sse import event_object

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hubproxy.routing.router import Route

API = "messages"
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
TOOL_PREAMBLE = 512

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


# blocks billed by their text, all of which is in the body (a server tool's call and its search
# results too); any other (image, document, a fetched page, a file by id) is billed by what it shows,
# counted as `[billing] image_tokens` each
TEXT_BLOCKS = frozenset(
    (
        "text",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "search_result",
        "mcp_tool_use",
        "mcp_tool_result",
    )
)


class Block(msgspec.Struct):
    """A content block: its type, its text checked to be a string (an upstream answers a number there
    with a 500), and a tool result's content (text or blocks: screenshots come back this way)."""

    type: str
    text: str | UnsetType = msgspec.UNSET
    content: msgspec.Raw | UnsetType = msgspec.UNSET


class Message(msgspec.Struct):
    role: Literal["user", "assistant", "system"]  # Claude Code 2.1 puts system reminders in the messages
    content: str | list[Block]


class Tool(msgspec.Struct):
    """A tool: a function (`name`, `input_schema`) or a server tool the provider runs and may bill per
    use (`type` "web_search_…", at most `max_uses` times in a call)."""

    name: str
    type: str | None = None
    max_uses: PositiveInt | None = None


class MessagesFields(msgspec.Struct):
    """The top-level fields the gateway reads or checks; the rest of the body is skipped unbuilt."""

    model: Any = None  # any JSON as sent; `read` checks it is a non-empty string
    max_tokens: PositiveInt | UnsetType = msgspec.UNSET
    messages: list[Message] | UnsetType = msgspec.UNSET
    system: str | list[Block] | None = None
    stream: bool | None = None
    tools: list[Tool] | None = None
    tool_choice: dict | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict | None = None
    thinking: dict | None = None

    choices: ClassVar[int] = 1

    @property
    def max_output(self) -> int | None:
        return None if self.max_tokens is msgspec.UNSET else self.max_tokens

    @property
    def web_searches(self) -> int | None:
        """The most web searches the call's server tools may make, each billed by the provider (Anthropic:
        $10 per 1,000, https://platform.claude.com/docs/en/agents-and-tools/tool-use/web-search-tool,
        read 2026-12-07); None when a web search tool sets no `max_uses` (no bound)."""
        total = 0
        for tool in self.tools or ():
            if tool.type is not None and tool.type.startswith("web_search"):
                if tool.max_uses is None:
                    return None
                total += tool.max_uses
        return total


DECODER = msgspec.json.Decoder(MessagesFields)
BLOCKS_DECODER = msgspec.json.Decoder(list[Block])


def media_blocks(blocks: list[Block]) -> int:
    """Blocks that are not text, a tool result's own blocks included, read from the parsed body so that
    no encoding of the JSON hides one."""
    count = 0
    for block in blocks:
        if block.type not in TEXT_BLOCKS:
            count += 1
        elif block.content.__class__ is msgspec.Raw and bytes(block.content)[:1] == b"[":
            try:
                count += media_blocks(BLOCKS_DECODER.decode(block.content))
            except msgspec.ValidationError as exc:
                raise invalid_request(f"messages: a tool_result's content is malformed ({exc}).") from None
    return count


AT_FIELD = re.compile(r"^(.*) - at `\$\.([A-Za-z_]+)(.*)`$")


def invalid_field(exc: msgspec.ValidationError) -> GatewayError:
    """A 400 naming the field, in Anthropic's own style ("max_tokens: Input should be …")."""
    found = AT_FIELD.match(str(exc))
    if found is None:
        return invalid_request("Request body must be a JSON object.")
    problem, field, where = found.groups()
    return invalid_request(f"{field}{where}: {problem}.", param=field)


def _count(value: object) -> int:
    return value if value.__class__ is int and value >= 0 else 0


def read_usage(usage: object) -> Usage | None:
    """Anthropic's usage: `input_tokens` excludes cache reads and writes, so the prompt is the sum; of
    the writes, `cache_creation.ephemeral_1h_input_tokens` were written for an hour, billed apart
    (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching, "1-hour cache duration",
    read 2026-12-07); `server_tool_use.web_search_requests` counts the searches billed per use."""
    if usage.__class__ is not dict:
        return None
    output = usage.get("output_tokens")
    if output.__class__ is not int or output < 0:
        return None
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    by_ttl = usage.get("cache_creation")
    hour = min(_count(by_ttl.get("ephemeral_1h_input_tokens")), written) if by_ttl.__class__ is dict else 0
    tools = usage.get("server_tool_use")
    searches = _count(tools.get("web_search_requests")) if tools.__class__ is dict else 0
    prompt = _count(usage.get("input_tokens")) + read + written
    return Usage(prompt, output, read, written, cache_write_1h=hour, web_searches=searches)


def answer_usage(data: bytes) -> tuple[Usage | None, object]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None
    return read_usage(document.get("usage") if document.__class__ is dict else None), document


NESTED_USAGE = ("cache_creation", "server_tool_use")  # usage objects a stream's events carry whole


class StreamUsage:
    """Usage over a Messages stream's events: `message_start` carries the input and cache tokens (and
    an output count of 1 or so, before any output), each `message_delta` the output so far and any
    corrected input. Only a `message_delta` makes the usage final: a stream cut before one has no
    usage, and is billed from an estimate of what was relayed, marked estimated."""

    __slots__ = ("delta_seen", "tokens")

    def __init__(self) -> None:
        self.tokens: dict[str, int | dict] = {}
        self.delta_seen = False

    def add(self, usage: object, from_delta: bool) -> None:
        if usage.__class__ is dict:
            for name, value in usage.items():
                if value.__class__ is int or (name in NESTED_USAGE and value.__class__ is dict):
                    self.tokens[name] = value
            self.delta_seen = self.delta_seen or from_delta

    @property
    def usage(self) -> Usage | None:
        return read_usage(self.tokens) if self.delta_seen else None


class StreamWatch:
    """Usage over a native Messages stream (`StreamUsage`); `message_stop` ends the stream, so the call
    is settled before it leaves."""

    __slots__ = ("counted", "final", "output_events")

    def __init__(self) -> None:
        self.counted = StreamUsage()
        self.output_events = 0
        self.final = b""

    @property
    def usage(self) -> Usage | None:
        return self.counted.usage

    @staticmethod
    def worth_reading(events: bytes) -> bool:
        return b'"usage"' in events or b"message_stop" in events

    def read(self, event: bytes, payload: bytes | None) -> bytes | End | None:
        if payload is None or (b'"usage"' not in payload and b"message_stop" not in payload):
            self.output_events += 1
            return event
        data = event_object(payload)
        if data is None:
            return event
        kind = data.get("type")
        if kind == "message_stop":
            self.final = event
            return FINAL
        if kind == "message_start":
            message = data.get("message")
            self.counted.add(message.get("usage") if message.__class__ is dict else None, False)
        else:
            self.counted.add(data.get("usage"), kind == "message_delta")
        return event

    def closing(self, cost: int) -> bytes:
        return self.final

    @staticmethod
    def error_event(message: str) -> bytes:
        return stream_error(message)


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(err: GatewayError) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type(err.status), "message": err.message}})


def stream_error(message: str, status: int = 502) -> bytes:
    """An `error` event inside a stream whose 200 status line is already sent."""
    body = {"type": "error", "error": {"type": error_type(status), "message": message}}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


def upstream_error_message(data: bytes) -> tuple[str, bool]:
    """The message of an upstream's error body, and whether it is already in Anthropic's shape."""
    message, document = error_parts(data)
    return message, document is not None and document.get("type") == "error"


DEFAULT_VERSION = "2023-06-01"


def forwarded_headers(headers: Mapping[str, str]) -> bytes:
    """The client's `anthropic-version` (or the one Anthropic documents as current) and `anthropic-beta`,
    as header lines for the upstream request (the HTTP parser already refused line breaks in them)."""
    version = headers.get("anthropic-version") or DEFAULT_VERSION
    lines = f"anthropic-version: {version}\r\n"
    beta = headers.get("anthropic-beta")
    if beta:
        lines += f"anthropic-beta: {beta}\r\n"
    return lines.encode("latin-1", "replace")


def with_model(raw: bytes, fields: MessagesFields | CountFields, upstream_model: str) -> bytes:
    """The client's bytes, with `model` rewritten only when the deployment calls it otherwise."""
    if upstream_model == fields.model:
        return raw
    whole = orjson.loads(raw)
    whole["model"] = upstream_model
    return orjson.dumps(whole)


class CountFields(msgspec.Struct):
    model: Any = None  # any JSON as sent; `read` checks it is a non-empty string
    messages: list[Message] | UnsetType = msgspec.UNSET
    system: str | list[Block] | None = None
    tools: list[Tool] | None = None


COUNT_DECODER = msgspec.json.Decoder(CountFields)


def read_for_counting(raw: bytes) -> CountFields:
    """A `count_tokens` body: as a message's, without `max_tokens`."""
    fields = decode_body(COUNT_DECODER, raw, invalid_field)
    if fields.model.__class__ is not str or not fields.model:
        raise invalid_request("model: Field required (a non-empty string).", param="model")
    if not fields.messages:
        raise invalid_request("messages: Field required (a non-empty array).", param="messages")
    return fields


@dataclass(frozen=True, eq=False)
class Endpoint:
    """`/messages`: the `ClientEndpoint` of this format (see `protocols/__init__.py`)."""

    name: str = "messages"
    path: str = "/messages"
    api: str = API
    makes_output: bool = True
    streams: bool = True

    def read(self, raw: bytes) -> MessagesFields:
        fields = decode_body(DECODER, raw, invalid_field)
        if fields.model.__class__ is not str or not fields.model:
            raise invalid_request("model: Field required (a non-empty string).", param="model")
        if fields.max_tokens is msgspec.UNSET:
            raise invalid_request("max_tokens: Field required.", param="max_tokens")
        if not fields.messages:
            raise invalid_request("messages: Field required (a non-empty array).", param="messages")
        for n, message in enumerate(fields.messages):
            for k, block in enumerate(message.content if message.content.__class__ is list else ()):
                if block.type == "text" and block.text is msgspec.UNSET:
                    raise invalid_request(f"messages.{n}.content.{k}.text: Field required.", param="messages")
        return fields

    def unseen_tokens(self, fields: MessagesFields, image_tokens: int) -> int:
        """Each block that is not text (an image or document, whose source may be a URL) and a tools
        preamble, as for chat."""
        media = sum(media_blocks(m.content) for m in fields.messages or () if m.content.__class__ is list)
        unseen = media * image_tokens
        return unseen + TOOL_PREAMBLE if fields.tools else unseen

    def with_output_limit(
        self, raw: bytes, fields: MessagesFields, limit: int, field: str = "max_tokens"
    ) -> tuple[bytes, MessagesFields]:
        """Messages requires `max_tokens` (`read` refuses a body without it): nothing to write."""
        return raw, fields

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        """The client's bytes (`model` rewritten if need be) with its `anthropic-version` and
        `anthropic-beta` headers."""
        body = with_model(call.raw, call.fields, route.upstream_model)
        return Outbound(self, API, "/v1/messages", body, forwarded_headers(call.headers))

    def stream_watch(self, fields: MessagesFields, prompt_tokens: int) -> StreamWatch:
        return StreamWatch()

    def answer_body(self, data: bytes, document: object, cost: int | None, fields: MessagesFields) -> bytes:
        """Relayed untouched: Anthropic's shape has no place for a cost."""
        return data

    answer_usage = staticmethod(answer_usage)
    error_body = staticmethod(error_body)
    upstream_error_message = staticmethod(upstream_error_message)


MESSAGES = Endpoint()
