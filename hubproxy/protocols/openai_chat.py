"""OpenAI's classic wire format: `/chat/completions`, `/completions` and `/embeddings`.

Everything hubproxy knows about this format is here: the request fields it reads or checks, the body
an upstream gets, where usage is in an answer and in a stream, and the error shape. Wire format as
documented at https://platform.openai.com/docs/api-reference/chat (read 2026-11).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec
import orjson
from msgspec import UnsetType

from hubproxy.errors import GatewayError, invalid_request
from hubproxy.money import format_usd
from hubproxy.protocols import FINAL, Call, End, Outbound, Usage, decode_body, error_parts, reasoning
from hubproxy.protocols.sse import event_object

if TYPE_CHECKING:
    from hubproxy.protocols import StreamWatch as ProtocolStreamWatch  # this module has a StreamWatch of its own
    from hubproxy.routing.router import Route

API = "chat"
ASK_STREAM_USAGE = b'"stream_options":{"include_usage":true},'
TOOL_PREAMBLE = 512  # above the fixed tool instructions of the common open models' chat templates
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
# the most choices one call may ask for: OpenAI's documented maxima for `n` (chat and completions) and
# `best_of` (https://platform.openai.com/docs/api-reference/chat/create, read 2026-12-07); the hold
# covers every choice, so a larger `n` is refused rather than sent up to be billed
MAX_CHOICES = 128
MAX_BEST_OF = 20
TEXT_PARTS = frozenset(("text", "refusal"))


class RequestFields(msgspec.Struct):
    """The top-level fields the gateway reads or checks. Decoding into this skips the rest of the body
    (the messages' text: tens of KB from coding tools) without building it, while checking that it is
    JSON and that the fields an upstream would choke on have the right types (msgspec checks them as
    it reads): a request an upstream would answer with a 500 is refused here, before it can count
    against the deployment."""

    web_searches: ClassVar[int] = 0  # no tool of these APIs is billed per use (Messages' web search is)

    model: Any = None  # any JSON as sent; `read` checks it is a non-empty string
    stream: bool | None = None
    max_tokens: PositiveInt | UnsetType | None = msgspec.UNSET  # None: sent as null, unlike not sent
    max_completion_tokens: PositiveInt | UnsetType | None = msgspec.UNSET
    stream_options: dict | UnsetType | None = msgspec.UNSET
    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHOICES)] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None

    @property
    def max_output(self) -> int | None:
        """The output limit an upstream applies: the larger, where a body gives both names."""
        return largest_limit(self.max_completion_tokens, self.max_tokens)

    @property
    def choices(self) -> int:
        """How many answers the upstream makes (and bills), each up to `max_output`."""
        return self.n or 1

    @property
    def asks_usage(self) -> bool:
        options = self.stream_options
        return options.__class__ is dict and options.get("include_usage") is True


def largest_limit(*given: object) -> int | None:
    """The largest of the output limits a body gives (those absent or null aside)."""
    found = None
    for value in given:
        if value.__class__ is int and (found is None or value > found):
            found = value
    return found


class Part(msgspec.Struct):
    """A content part: its type, and its text checked to be a string (an upstream answers a number
    there with a 500)."""

    type: str
    text: str | UnsetType = msgspec.UNSET


class Message(msgspec.Struct):
    role: str  # relayed as sent (vLLM's Llama templates take "ipython"); a translator refuses what it cannot map
    content: str | list[Part] | None = None


CHAT_ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))


class Tool(msgspec.Struct):
    type: str


class ChatFields(RequestFields):
    messages: list[Message] | UnsetType = msgspec.UNSET
    tools: list[Tool] | None = None
    tool_choice: str | dict | None = None
    input: msgspec.Raw | UnsetType = msgspec.UNSET  # Cursor sends some models Responses-shaped bodies here
    system: msgspec.Raw | UnsetType = msgspec.UNSET  # and Anthropic-style ones: a top-level `system`
    max_output_tokens: PositiveInt | UnsetType | None = msgspec.UNSET  # the limit of a Responses-shaped body

    @property
    def anthropic_style(self) -> bool:
        return self.system is not msgspec.UNSET

    @property
    def responses_shaped(self) -> bool:
        return self.messages is msgspec.UNSET

    @property
    def max_output(self) -> int | None:
        """A Responses-shaped body's limit is `max_output_tokens`, the only one its translation reads;
        a chat body's are the chat names (an upstream ignores `max_output_tokens` there)."""
        if self.messages is msgspec.UNSET:
            return largest_limit(self.max_output_tokens)
        return largest_limit(self.max_completion_tokens, self.max_tokens)


class CompletionFields(RequestFields):
    prompt: msgspec.Raw | UnsetType = msgspec.UNSET
    best_of: Annotated[int, msgspec.Meta(ge=1, le=MAX_BEST_OF)] | None = None

    @property
    def choices(self) -> int:
        """`n` (or `best_of`, which the upstream generates and bills in full) answers for each prompt."""
        return max(self.n or 1, self.best_of or 1) * prompt_count(self.prompt)


class EmbeddingFields(RequestFields):
    input: msgspec.Raw | UnsetType = msgspec.UNSET


AT_FIELD = re.compile(r"^(.*) - at `\$\.([A-Za-z_]+)(.*)`$")
FIELD_RULES = {
    "stream": "'stream' must be a boolean.",
    "max_tokens": "'max_tokens' must be a positive integer.",
    "max_completion_tokens": "'max_completion_tokens' must be a positive integer.",
    "n": f"'n' must be an integer from 1 to {MAX_CHOICES}.",
    "best_of": f"'best_of' must be an integer from 1 to {MAX_BEST_OF}.",
    "stream_options": "'stream_options' must be an object.",
}


def invalid_field(exc: msgspec.ValidationError) -> GatewayError:
    """A 400 that names the field, from msgspec's own "Expected `array`, got `str` - at `$.messages`"."""
    found = AT_FIELD.match(str(exc))
    if found is None:
        return invalid_request("Request body must be a JSON object.")
    problem, field, where = found.groups()
    return invalid_request(FIELD_RULES.get(field) or f"Invalid '{field}{where}': {problem}.", param=field)


AT_PATH = re.compile(r"^(.*) - at `\$(.*)`$")


def invalid_inside(exc: msgspec.ValidationError, name: str) -> GatewayError:
    """A 400 for what is wrong inside field `name`, decoded on its own (msgspec's path is relative to it)."""
    found = AT_PATH.match(str(exc))
    problem, where = found.groups() if found else (str(exc), "")
    return invalid_request(f"Invalid '{name}{where}': {problem}.", param=name)


def text_or_list(raw: msgspec.Raw | UnsetType, name: str) -> None:
    if raw is not msgspec.UNSET and bytes(raw)[:1] not in (b'"', b"["):
        raise invalid_request(f"'{name}' must be a string or an array.", param=name)


def with_field(raw: bytes, name: str, value: int, sent_as_null: bool) -> bytes:
    """A decoded JSON object's bytes with `name` set, where the body has no value for it. Written in
    front of the client's bytes (the first byte but white space is "{"); a body that sends the key
    as null is parsed and encoded again instead, so that no later duplicate of the key undoes it
    (msgspec, like the upstreams' parsers, takes a key's last value)."""
    if sent_as_null:
        whole = orjson.loads(raw)
        whole[name] = value
        return orjson.dumps(whole)
    start = raw.index(b"{") + 1
    return raw[:start] + b'"' + name.encode() + b'":' + str(value).encode() + b"," + raw[start:]


def prompt_count(prompt: msgspec.Raw | UnsetType) -> int:
    """How many prompts a completions body holds: an array of strings or of token arrays is one
    prompt each; a string or one token array is one."""
    if prompt is msgspec.UNSET or bytes(prompt)[:1] != b"[":
        return 1
    items = msgspec.json.decode(prompt)
    return len(items) if items and not all(item.__class__ is int for item in items) else 1


def media_parts(messages: list[Message]) -> int:
    """Content parts that are not text (images, audio, files): the upstream bills each by what it
    shows, not by its bytes here, and a URL's image is not in the body at all. Read from the parsed
    body, so no encoding of the JSON hides one."""
    count = 0
    for message in messages:
        content = message.content
        if content.__class__ is list:
            for part in content:
                if part.type not in TEXT_PARTS:
                    count += 1
    return count


def check_chat(fields: ChatFields) -> None:
    if fields.messages is msgspec.UNSET and fields.input is not msgspec.UNSET:
        text_or_list(fields.input, "input")  # a Responses-shaped body (Cursor): translated on its way up
        return
    if not fields.messages:
        raise invalid_request("'messages' is required: a non-empty array of messages.", param="messages")
    for n, message in enumerate(fields.messages):
        if message.content.__class__ is list:
            for k, part in enumerate(message.content):
                if part.type == "text" and part.text is msgspec.UNSET:
                    where = f"messages[{n}].content[{k}]"
                    raise invalid_request(f"Invalid '{where}': a text part needs its 'text'.", param="messages")


def check_completion(fields: CompletionFields) -> None:
    text_or_list(fields.prompt, "prompt")


def check_embedding(fields: EmbeddingFields) -> None:
    if fields.input is msgspec.UNSET:
        raise invalid_request("'input' is required: a string or an array.", param="input")
    text_or_list(fields.input, "input")


def as_plain_chat(doc: dict) -> dict:
    """Anthropic-style content in a chat body (Cursor's, for Claude models) as plain chat, which every
    chat upstream takes: a top-level `system` (a string or text blocks) becomes the first message,
    `cache_control` marks leave the content parts, and a system message's text parts become its string."""
    system = doc.pop("system", None)
    messages = doc.get("messages")
    messages = list(messages) if isinstance(messages, list) else []
    if system:
        messages.insert(0, {"role": "system", "content": system})
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            continue
        parts = [
            {k: v for k, v in p.items() if k != "cache_control"} if isinstance(p, dict) else p
            for p in message["content"]
        ]
        if message.get("role") in ("system", "developer"):
            messages[n] = {**message, "content": content_text(parts)}
        else:
            messages[n] = {**message, "content": parts}
    doc["messages"] = messages
    return doc


def upstream_body(raw: bytes, fields: RequestFields, upstream_model: str, stream_usage: bool, stream: bool) -> bytes:
    """The request as a deployment serving this format gets it: its model name, and usage asked for
    where the provider supports it.

    When nothing changes (same model name; not a stream, or a stream that already asks for usage
    where the provider supports it) the client's own bytes go up untouched: no re-encoding of what
    may be a long prompt. A stream that only lacks `stream_options` gets it written in front of the
    client's bytes. Anything else is parsed whole, changed and encoded again.
    """
    options = fields.stream_options
    same_model = upstream_model == fields.model
    anthropic_style = fields.__class__ is ChatFields and (fields.anthropic_style or b'"cache_control"' in raw)
    if not anthropic_style:
        if same_model and (not stream or (stream_usage and fields.asks_usage)):
            return raw
        if same_model and stream_usage and options is msgspec.UNSET:
            start = raw.index(b"{") + 1  # it decoded as an object: its first byte but white space is "{"
            return raw[:start] + ASK_STREAM_USAGE + raw[start:]
    whole = orjson.loads(raw)
    if anthropic_style:
        whole = as_plain_chat(whole)
    whole["model"] = upstream_model
    if stream:
        if stream_usage:
            whole["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        elif options is None:
            whole.pop("stream_options", None)
    return orjson.dumps(whole)


def read_usage(usage: object) -> Usage | None:
    """Tokens from a `usage` object, or None if it has none.

    Cached prompt tokens: OpenAI's `prompt_tokens_details.cached_tokens` or DeepSeek's
    `prompt_cache_hit_tokens`; cache writes where a provider reports them (`cache_writes`); reasoning:
    `completion_tokens_details.reasoning_tokens`. A count
    that is not a non-negative integer (a bool, a string) makes the usage unreadable.
    """
    if usage.__class__ is not dict:
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if completion is None:
        completion = 0
    if completion.__class__ is not int or completion < 0:
        return None
    if prompt is None:
        total = usage.get("total_tokens")
        prompt = total - completion if total.__class__ is int else None
    if prompt.__class__ is not int or prompt < 0:
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if details.__class__ is dict else usage.get("prompt_cache_hit_tokens")
    if cached.__class__ is not int or cached < 0:
        cached = 0
    cached = min(cached, prompt)
    written = written_1h = 0
    if details.__class__ is dict and ("cache_creation_input_tokens" in details or "cache_write_tokens" in details):
        written, written_1h = cache_writes(details, prompt - cached)
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if details.__class__ is dict else 0
    if reasoning.__class__ is not int or reasoning < 0:
        reasoning = 0
    total = usage.get("total_tokens")
    uncounted = total - prompt - completion if total.__class__ is int and total > prompt + completion else 0
    # reasoning as reported: within the completion tokens for most providers, beside them for some (xAI);
    # the meter applies the provider's rule, and pricing never bills a part beyond what encloses it
    return Usage(prompt, completion, cached, written, reasoning, written_1h, uncounted)


def cache_writes(details: dict, room: int) -> tuple[int, int]:
    """(prompt tokens written to the cache, at most `room`; of those, the ones for an hour) from a chat usage's
    `prompt_tokens_details`: Qwen's `cache_creation_input_tokens` with `cache_creation`'s
    `ephemeral_1h_input_tokens` (https://www.alibabacloud.com/help/en/model-studio/context-cache and
    explicit-cache-qwen4, read 2026-12-07), OpenRouter's `cache_write_tokens`
    (https://openrouter.ai/docs/use-cases/usage-accounting, read 2026-12-07)."""
    written = details.get("cache_creation_input_tokens", details.get("cache_write_tokens"))
    if written.__class__ is not int or written < 0:
        return 0, 0
    written = min(written, room)
    ttl = details.get("cache_creation")
    hour = ttl.get("ephemeral_1h_input_tokens") if ttl.__class__ is dict else 0
    return written, min(hour, written) if hour.__class__ is int and hour >= 0 else 0


def cost_text(cost: int) -> orjson.Fragment:
    return orjson.Fragment(format_usd(cost, min_places=1).encode())


def answer_usage(data: bytes) -> tuple[Usage | None, object]:
    """A whole answer's usage, and the answer parsed (for `answer_with_cost`)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None
    return read_usage(document.get("usage") if document.__class__ is dict else None), document


def answer_with_cost(document: dict, cost: int) -> bytes:
    """The answer with `usage.cost` added."""
    document["usage"]["cost"] = cost_text(cost)
    return orjson.dumps(document)


class StreamWatch:
    """What the relay needs from a chat stream's events: their usage and where the stream ends.

    Usage is accumulated over the events: the latest complete `usage` wins (providers that report a
    running total on every chunk, and OpenAI's one usage chunk at the end, both end with the final
    figures). The chunk that carries the final usage (a usage-only chunk, or the last content chunk
    where a provider puts it there) is held back until `[DONE]` or the stream's end, when the call is
    settled; it then leaves with `cost` added if the client asked for usage, unchanged if it has
    content, and not at all otherwise (hubproxy asked upstream for usage on its own behalf).
    `output_events` counts content chunks, about one token each: the estimate when no usage arrives.
    """

    __slots__ = ("client_wants_usage", "final", "held", "output_events", "usage")

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.output_events = 0
        self.held: tuple[bytes, dict] | None = None  # (event, its data parsed)
        self.final = b""

    @staticmethod
    def worth_reading(events: bytes) -> bool:
        """Cheap test over raw bytes: could any of these events matter for billing?"""
        return b'"usage"' in events or b"[DONE]" in events

    def read(self, event: bytes, payload: bytes | None) -> bytes | End | None:
        """What to send now for this event: itself, nothing (held), or FINAL (settle, then `closing`)."""
        if payload is None:
            return event
        if payload == b"[DONE]":
            self.final = event
            return FINAL
        if b'"usage"' not in payload:
            self.output_events += 1
            return event
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        tokens = read_usage(chunk.get("usage")) if chunk.__class__ is dict else None
        if tokens is None:
            self.output_events += 1
            return event
        self.usage = tokens
        choices = chunk.get("choices")
        if choices:
            self.output_events += 1
            ends = choices.__class__ is list and any(c.__class__ is dict and c.get("finish_reason") for c in choices)
            if not ends:
                return event
        earlier, self.held = self.held, (event, chunk)
        return None if earlier is None else self._as_it_came(*earlier)

    def _as_it_came(self, event: bytes, chunk: dict) -> bytes | None:
        """A held event whose usage turned out not to be the last word."""
        return event if self.client_wants_usage or chunk.get("choices") else None

    def closing(self, cost: int) -> bytes:
        """Once the call is settled at `cost`: the held event (with `cost` if the client asked for
        usage), then `[DONE]` if the upstream sent it."""
        if self.held is None:
            return self.final
        event, chunk = self.held
        self.held = None
        if self.client_wants_usage:
            chunk["usage"]["cost"] = cost_text(cost)
            return b"data: " + orjson.dumps(chunk) + b"\n\n" + self.final
        return (event if chunk.get("choices") else b"") + self.final

    @staticmethod
    def error_event(message: str) -> bytes:
        return stream_error(message)


class ChunkReader:
    """A chat stream read by a translator (chat upstream → another client format): each chunk parsed,
    its usage kept, its deltas handed to the subclass part by part — `start` once, `reasoning`,
    `text`, `tool_call` — and each choice's `finish_reason` kept. The one reader of chat chunks; what
    a part becomes is the subclass's."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_events = 0
        self.started = False
        self.finish: object = None  # the upstream's finish_reason

    @staticmethod
    def worth_reading(events: bytes) -> bool:
        return True

    def read(self, raw_event: bytes, payload: bytes | None) -> bytes | End | None:
        if payload == b"[DONE]":
            return FINAL
        chunk = event_object(payload)
        if chunk is None:
            return None
        tokens = read_usage(chunk.get("usage"))
        if tokens is not None:
            self.usage = tokens
        out = b""
        if not self.started:
            self.started = True
            out = self.start(chunk)
        choices = chunk.get("choices")
        for choice in choices if choices.__class__ is list else ():
            if choice.__class__ is not dict:
                continue
            delta = choice.get("delta")
            if delta.__class__ is dict:
                out += self.parts(delta)
            finish = choice.get("finish_reason")
            if finish.__class__ is str and finish:
                self.finish = finish
        return out or None

    def parts(self, delta: dict) -> bytes:
        out = b""
        thought = delta.get("reasoning_content")
        thought = thought if thought.__class__ is str else ""
        signed = delta.get(reasoning.FIELD)
        if thought or reasoning.is_token(signed):
            out += self.reasoning(thought, signed if reasoning.is_token(signed) else None)
        text = delta.get("content")
        if text.__class__ is str and text:
            out += self.text(text)
        calls = delta.get("tool_calls")
        for call in calls if calls.__class__ is list else ():
            if call.__class__ is not dict:
                continue
            function = call.get("function")
            function = function if function.__class__ is dict else {}
            name, arguments, position = function.get("name"), function.get("arguments"), call.get("index")
            out += self.tool_call(
                position if position.__class__ is int else 0,
                call.get("id"),
                name if name.__class__ is str else "",
                arguments if arguments.__class__ is str else "",
            )
        return out

    def start(self, chunk: dict) -> bytes:
        """What the client's format sends first (the first chunk, for its id and model)."""
        raise NotImplementedError

    def reasoning(self, thought: str, signed: str | None) -> bytes:
        """Reasoning text (may be empty) and/or a vendor's packed reasoning (`reasoning.FIELD`)."""
        raise NotImplementedError

    def text(self, text: str) -> bytes:
        raise NotImplementedError

    def tool_call(self, position: int, call_id: object, name: str, arguments: str) -> bytes:
        """A tool call's first chunk (its id and name) or a later one (more arguments)."""
        raise NotImplementedError


class ViaChat:
    """The leg of a client translator to a chat deployment (Messages or Responses clients): the request
    as chat (`as_chat`, the subclass's) without a vendor's reasoning, which a chat upstream would
    refuse; the answer's usage read as chat's; an upstream error always re-rendered in the client's
    shape. Subclasses say how the answer and its stream become the client's format."""

    api = API
    path = "/chat/completions"

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        body = self.as_chat(call, route.upstream_model, route.provider.stream_usage)
        return Outbound(self, API, self.path, reasoning.without_field(body), b"")

    def as_chat(self, call: Call, upstream_model: str, stream_usage: bool) -> bytes:
        raise NotImplementedError

    def stream_watch(self, fields: Any, prompt_tokens: int) -> ProtocolStreamWatch:
        raise NotImplementedError

    def answer_body(self, data: bytes, document: Any, cost: int | None, fields: Any) -> bytes:
        raise NotImplementedError

    answer_usage = staticmethod(answer_usage)

    @staticmethod
    def upstream_error_message(data: bytes) -> tuple[str, bool]:
        return upstream_error_message(data)[0], False


def usage_object(usage: Usage | None) -> dict | None:
    """A chat `usage` object for tokens another format reported."""
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


class ChunkWriter:
    """What a translator writes as a chat stream: chunks of one completion, then (once the call is
    settled) the finish chunk, the usage chunk with `cost` when the client asked for usage, and
    `[DONE]`. Subclasses read their format's events and set `usage` and `finish`."""

    usage: Usage | None = None

    def __init__(self, model: str, client_wants_usage: bool) -> None:
        self.model = model
        self.client_wants_usage = client_wants_usage
        self.output_events = 0
        self.id = "chatcmpl-hubproxy"
        self.created = int(time.time())
        self.finish: str | None = None

    @staticmethod
    def worth_reading(events: bytes) -> bool:
        return True

    def chunk(self, delta: dict, finish: str | None = None) -> bytes:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def closing(self, cost: int) -> bytes:
        out = self.chunk({}, self.finish or "stop")
        usage = usage_object(self.usage)
        if self.client_wants_usage and usage is not None:
            usage["cost"] = cost_text(cost)
            body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
            out += b"data: " + orjson.dumps({**body, "choices": [], "usage": usage}) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error_event(message: str) -> bytes:
        return stream_error(message)


def error_document(err: GatewayError) -> dict:
    return {"error": {"message": err.message, "type": err.type, "code": err.code, "param": err.param}}


def error_body(err: GatewayError) -> bytes:
    return orjson.dumps(error_document(err))


def stream_error(message: str) -> bytes:
    """An error inside a stream whose 200 status line is already sent."""
    err = GatewayError(502, "upstream_unavailable", message, type="api_error")
    return b"data: " + error_body(err) + b"\n\n"


def upstream_error_message(data: bytes) -> tuple[str, bool]:
    """The message of an upstream's error body, and whether the body is already in this format."""
    message, document = error_parts(data)
    return message, document is not None


def reasoning_text(message: dict) -> str:
    """A chat message's `reasoning_content` (DeepSeek's field, which hubproxy's translators use), or ""."""
    thought = message.get("reasoning_content")
    return thought if isinstance(thought, str) else ""


def content_text(content: object) -> str:
    """A chat message's text: its string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def chat_unseen(fields: ChatFields, image_tokens: int) -> int:
    """Prompt tokens a chat body's size does not show: `image_tokens` for each part that is not text
    (an image given by URL is not in the body at all), and the fixed instructions a chat template
    writes before tool definitions."""
    unseen = media_parts(fields.messages) * image_tokens if fields.messages else 0
    return unseen + TOOL_PREAMBLE if fields.tools else unseen


def nothing_unseen(fields: RequestFields, image_tokens: int) -> int:
    return 0


@dataclass(frozen=True, eq=False)
class Endpoint:
    """One route of this format: the upstream path (also the usage row's `endpoint`), the wire API a
    provider must serve for it, and whether it produces output and can stream. Also the leg to a
    deployment serving chat (the `ClientEndpoint` and `Leg` of `protocols/__init__.py`)."""

    name: str
    path: str
    decoder: msgspec.json.Decoder
    check: Callable[..., None]
    unseen_tokens: Callable[..., int] = nothing_unseen  # a plain function (fields, image_tokens): no bound-method layer
    makes_output: bool = True
    streams: bool = True
    api: str = API

    def read(self, raw: bytes) -> RequestFields:
        """The request's fields, checked; a 400 naming the problem otherwise."""
        fields = decode_body(self.decoder, raw, invalid_field)
        if fields.model.__class__ is not str or not fields.model:
            raise invalid_request("'model' is required and must be a string.", param="model")
        self.check(fields)
        return fields

    def with_output_limit(
        self, raw: bytes, fields: RequestFields, limit: int, field: str = "max_tokens"
    ) -> tuple[bytes, RequestFields]:
        """The request with an output limit the client did not set, for the upstream to stop at, in
        `field` (the provider's `limit_field`; completions know only `max_tokens`)."""
        name = field if fields.__class__ is ChatFields else "max_tokens"
        raw = with_field(raw, name, limit, getattr(fields, name) is None)
        return raw, msgspec.structs.replace(fields, **{name: limit})

    def stream_watch(self, fields: RequestFields, prompt_tokens: int) -> StreamWatch:
        return StreamWatch(fields.asks_usage)

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        """The client's bytes, `model` and the usage switch rewritten where need be."""
        body = upstream_body(call.raw, call.fields, route.upstream_model, route.provider.stream_usage, call.stream)
        return Outbound(self, API, self.path, body, b"")

    def answer_body(self, data: bytes, document: Any, cost: int | None, fields: RequestFields) -> bytes:
        return data if cost is None else answer_with_cost(document, cost)

    answer_usage = staticmethod(answer_usage)
    error_body = staticmethod(error_body)
    upstream_error_message = staticmethod(upstream_error_message)


CHAT = Endpoint("chat", "/chat/completions", msgspec.json.Decoder(ChatFields), check_chat, chat_unseen)
COMPLETIONS = Endpoint("completions", "/completions", msgspec.json.Decoder(CompletionFields), check_completion)
EMBEDDINGS = Endpoint(
    "embeddings",
    "/embeddings",
    msgspec.json.Decoder(EmbeddingFields),
    check_embedding,
    makes_output=False,
    streams=False,
)
ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS)
