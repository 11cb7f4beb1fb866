"""Google's Gemini API wire format: `POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse` (Gemini CLI, Google's GenAI SDKs).

Everything hubproxy knows about the format is here: the request fields it reads or checks, where usage
is in an answer and over a stream's chunks, and the error shape. Unlike the other formats the model
and the streaming switch are in the path, not the body: an endpoint is made per call
(`endpoint(model, stream)`) and its `read` puts them in the fields. A deployment that serves `gemini`
gets the client's bytes unchanged (the model is in the path it is sent to); one that does not is
reached through chat (`gemini_chat.py`). Wire format as documented at
https://ai.google.dev/api/generate-content (request, `GenerateContentResponse`, `UsageMetadata`),
https://ai.google.dev/api/tokens (countTokens), https://ai.google.dev/api/models (list) and
https://ai.google.dev/gemini-api/docs/troubleshooting (error statuses), read 2026-12-07.

Google parses a field by its JSON name (`maxOutputTokens`) or its proto name (`max_output_tokens`),
so every field read for the money is read under both, and a body giving both is refused: what the
upstream parses is what is held. `maxOutputTokens` bounds thoughts and answer together
(googleapis/python-genai#811 and #2062, read 2026-12-07), and `candidateCount` answers are each billed.
Tools Google runs and bills apart, or whose results come back as prompt tokens the body does not
show (Search grounding, code execution, URL context, Maps), a `cachedContent` made elsewhere and files
by URI have no bound hubproxy can hold: they are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec
import orjson
from msgspec import UnsetType

from hubproxy.errors import GatewayError, invalid_request
from hubproxy.protocols import Call, End, Outbound, Usage, decode_body, error_parts
from hubproxy.protocols.sse import event_object

if TYPE_CHECKING:
    from hubproxy.routing.router import Route

API = "gemini"
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
MAX_CANDIDATES = 8  # Google's documented range of candidateCount is 1 to 8
TOOL_PREAMBLE = 512
STREAM_QUERY = "?alt=sse"

STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# tools Google runs itself: billed per use, or their results billed as prompt tokens the body lacks
UNBOUNDED_TOOLS = (
    ("googleSearch", "google_search"),
    ("googleSearchRetrieval", "google_search_retrieval"),
    ("codeExecution", "code_execution"),
    ("urlContext", "url_context"),
    ("googleMaps", "google_maps"),
    ("fileSearch", "file_search"),
    ("computerUse", "computer_use"),
)


def given(value: Any) -> bool:
    return value is not None and value is not msgspec.UNSET


def one_of(where: str, camel: str, camel_value: Any, snake_value: Any) -> Any:
    """The value a field has under either of its names (None: neither); both given is the caller's 400
    (which one Google would take is not documented, and the hold must be sized by the one it takes)."""
    if given(camel_value) and given(snake_value):
        raise invalid_request(f"{where}{camel}: given twice (camelCase and snake_case); send one.", param=camel)
    return camel_value if given(camel_value) else (snake_value if given(snake_value) else None)


class Part(msgspec.Struct):
    """A part: its text checked to be a string; media and tool parts seen under either spelling."""

    text: str | UnsetType = msgspec.UNSET
    thought: bool | None = None
    inlineData: dict | None = None
    inline_data: dict | None = None
    fileData: dict | None = None
    file_data: dict | None = None

    @property
    def media(self) -> bool:
        return self.inlineData is not None or self.inline_data is not None


class Content(msgspec.Struct):
    parts: list[Part] | None = None
    role: str | None = None


class ThinkingConfig(msgspec.Struct):
    thinkingBudget: int | None = None
    thinking_budget: int | None = None
    includeThoughts: bool | None = None
    include_thoughts: bool | None = None
    thinkingLevel: str | None = None
    thinking_level: str | None = None


Candidates = Annotated[int, msgspec.Meta(ge=1, le=MAX_CANDIDATES)]


class GenerationConfig(msgspec.Struct):
    maxOutputTokens: PositiveInt | None = None
    max_output_tokens: PositiveInt | None = None
    candidateCount: Candidates | None = None
    candidate_count: Candidates | None = None
    stopSequences: list[str] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    topP: float | None = None
    top_p: float | None = None
    thinkingConfig: ThinkingConfig | None = None
    thinking_config: ThinkingConfig | None = None


class Declaration(msgspec.Struct):
    name: str


class Tool(msgspec.Struct, dict=True):
    functionDeclarations: list[Declaration] | None = None
    function_declarations: list[Declaration] | None = None
    googleSearch: dict | None = None
    google_search: dict | None = None
    googleSearchRetrieval: dict | None = None
    google_search_retrieval: dict | None = None
    codeExecution: dict | None = None
    code_execution: dict | None = None
    urlContext: dict | None = None
    url_context: dict | None = None
    googleMaps: dict | None = None
    google_maps: dict | None = None
    fileSearch: dict | None = None
    file_search: dict | None = None
    computerUse: dict | None = None
    computer_use: dict | None = None


class GeminiFields(msgspec.Struct):
    """The fields the gateway reads or checks; `model` and `stream` come from the path."""

    contents: list[Content] | UnsetType = msgspec.UNSET
    systemInstruction: Content | None = None
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    # unset, not null: a body without either gets its output limit written in front of its bytes
    generationConfig: GenerationConfig | UnsetType | None = msgspec.UNSET
    generation_config: GenerationConfig | UnsetType | None = msgspec.UNSET
    cachedContent: str | None = None
    cached_content: str | None = None
    model: str = ""
    stream: bool = False
    # set by `read` whatever the body holds under these names: the limit and the candidates, from
    # whichever spelling the body used
    max_output: int | None = None
    choices: int = 1

    web_searches: ClassVar[int] = 0  # a search tool is refused: nothing billed per use gets through


DECODER = msgspec.json.Decoder(GeminiFields)
AT_FIELD = re.compile(r"^(.*) - at `\$\.([A-Za-z_]+)(.*)`$")


def invalid_field(exc: msgspec.ValidationError) -> GatewayError:
    """A 400 naming the field, as Google words one ("Invalid value at 'generation_config…'")."""
    found = AT_FIELD.match(str(exc))
    if found is None:
        return invalid_request("Invalid JSON payload received: the request body must be a JSON object.")
    problem, field, where = found.groups()
    return invalid_request(f"Invalid value at '{field}{where}': {problem}.", param=field)


def check(fields: GeminiFields) -> None:
    """What `read` refuses beyond the types: no contents, a field given under both names, and what
    has no bound to hold (see the module's docstring)."""
    if not fields.contents:
        raise invalid_request("contents: Field required (a non-empty array).", param="contents")
    one_of("", "systemInstruction", fields.systemInstruction, fields.system_instruction)
    config = one_of("", "generationConfig", fields.generationConfig, fields.generation_config)
    fields.max_output, fields.choices = None, 1  # never what the body says under these names
    if config is not None:
        where = "generationConfig."
        fields.max_output = one_of(where, "maxOutputTokens", config.maxOutputTokens, config.max_output_tokens)
        fields.choices = one_of(where, "candidateCount", config.candidateCount, config.candidate_count) or 1
        one_of(where, "thinkingConfig", config.thinkingConfig, config.thinking_config)
        one_of(where, "stopSequences", config.stopSequences, config.stop_sequences)
    if one_of("", "cachedContent", fields.cachedContent, fields.cached_content) is not None:
        raise invalid_request(
            "cachedContent: a cache made outside hubproxy is billed by a size hubproxy cannot see; send the content.",
            param="cachedContent",
        )
    for n, tool in enumerate(fields.tools or ()):
        one_of(f"tools[{n}].", "functionDeclarations", tool.functionDeclarations, tool.function_declarations)
        for camel, snake in UNBOUNDED_TOOLS:
            if getattr(tool, camel) is not None or getattr(tool, snake) is not None:
                raise invalid_request(
                    f"tools[{n}].{camel}: Google bills this tool by use or by results the request does not hold, "
                    "which hubproxy cannot bound; use function declarations.",
                    param="tools",
                )
    for content in (*fields.contents, fields.systemInstruction or fields.system_instruction):
        for part in (content.parts or ()) if content is not None else ():
            if part.fileData is not None or part.file_data is not None:
                raise invalid_request(
                    "fileData: a file by URI is billed by a size hubproxy cannot see; send it as inlineData.",
                    param="contents",
                )


def media_parts(fields: GeminiFields) -> int:
    """Parts that are not text (inline images, audio, video, documents), read from the parsed body."""
    return sum(1 for content in fields.contents or () for part in content.parts or () if part.media)


def _count(value: object) -> int:
    return value if value.__class__ is int and value >= 0 else 0  # type: ignore[return-value]


def read_usage(meta: object) -> Usage | None:
    """Google's `usageMetadata`: `promptTokenCount` includes the cached content
    (`cachedContentTokenCount`, a part of it); `toolUsePromptTokenCount` is prompt billed beside it;
    thoughts (`thoughtsTokenCount`) are billed as output beside `candidatesTokenCount`. None where
    the answer has no usage or no candidates count yet."""
    if meta.__class__ is not dict:
        return None
    prompt = meta.get("promptTokenCount")  # type: ignore[attr-defined]
    if prompt.__class__ is not int or prompt < 0:
        return None
    thoughts = _count(meta.get("thoughtsTokenCount"))  # type: ignore[attr-defined]
    output = _count(meta.get("candidatesTokenCount")) + thoughts  # type: ignore[attr-defined]
    prompt += _count(meta.get("toolUsePromptTokenCount"))  # type: ignore[attr-defined]
    cached = min(_count(meta.get("cachedContentTokenCount")), prompt)  # type: ignore[attr-defined]
    return Usage(prompt, output, cached, reasoning=thoughts)


def usage_metadata(usage: Usage | None) -> dict:
    """Tokens another format reported, as Gemini's `usageMetadata`."""
    usage = usage or Usage(0, 0)
    candidates = usage.output - usage.reasoning
    meta = {
        "promptTokenCount": usage.input,
        "candidatesTokenCount": candidates,
        "totalTokenCount": usage.input + usage.output,
    }
    if usage.cached:
        meta["cachedContentTokenCount"] = usage.cached
    if usage.reasoning:
        meta["thoughtsTokenCount"] = usage.reasoning
    return meta


def answer_usage(data: bytes) -> tuple[Usage | None, object]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None
    return read_usage(document.get("usageMetadata") if document.__class__ is dict else None), document


def finished(chunk: dict) -> bool:
    """Whether a chunk ends its candidates (a `finishReason`): Google's stream has no end event of its own."""
    candidates = chunk.get("candidates")
    return candidates.__class__ is list and any(
        c.__class__ is dict and c.get("finishReason")
        for c in candidates  # type: ignore[union-attr]
    )


class StreamUsage:
    """Usage over a Gemini stream: every chunk carries `usageMetadata`, the latest the total so far;
    it is final once a chunk has ended the candidates (`finishReason`). A stream cut before that is
    billed from an estimate of what was relayed, as a Messages stream cut before `message_delta`."""

    __slots__ = ("ended", "latest")

    def __init__(self) -> None:
        self.latest: Usage | None = None
        self.ended = False

    def add(self, chunk: dict) -> None:
        counted = read_usage(chunk.get("usageMetadata"))
        if counted is not None:
            self.latest = counted
        self.ended = self.ended or finished(chunk)

    @property
    def usage(self) -> Usage | None:
        return self.latest if self.ended else None


class StreamWatch:
    """A native Gemini stream: chunks go on unread until one ends the candidates; that one and any
    after it (the final usage) are held until the stream's end, when the call is settled."""

    __slots__ = ("counted", "held", "output_events")

    def __init__(self) -> None:
        self.counted = StreamUsage()
        self.output_events = 0
        self.held = b""

    @property
    def usage(self) -> Usage | None:
        return self.counted.usage

    def worth_reading(self, events: bytes) -> bool:
        return self.counted.ended or b'"finishReason"' in events

    def read(self, event: bytes, payload: bytes | None) -> bytes | End | None:
        if not self.counted.ended and (payload is None or b'"finishReason"' not in payload):
            self.output_events += 1
            return event
        chunk = event_object(payload)
        if chunk is not None:
            self.counted.add(chunk)
        if not self.counted.ended:
            self.output_events += 1
            return event
        self.held += event
        return None

    def closing(self, cost: int) -> bytes:
        return self.held

    @staticmethod
    def error_event(message: str) -> bytes:
        return stream_error(message)


def error_document(status: int, message: str) -> dict:
    return {"error": {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}}


def error_body(err: GatewayError) -> bytes:
    return orjson.dumps(error_document(err.status, err.message))


def sse(chunk: dict) -> bytes:
    """One chunk of a stream, framed as Google frames them."""
    return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"


def stream_error(message: str, status: int = 502) -> bytes:
    """An error inside a stream whose 200 status line is already sent: a chunk holding Google's error."""
    return sse(error_document(status, message))


def upstream_error_message(data: bytes) -> tuple[str, bool]:
    """An upstream error's message, and whether it is already in Google's shape (an `error` with a
    string `status`)."""
    message, document = error_parts(data)
    return message, document is not None and document["error"].get("status").__class__ is str


def with_output_limit(raw: bytes, fields: GeminiFields, limit: int) -> bytes:
    """The body with `generationConfig.maxOutputTokens` set, in whichever spelling the body's config has:
    written in front of the client's bytes where the body has no config at all (the first byte but
    white space is "{"), else into its config, parsed and encoded again."""
    if fields.generationConfig is msgspec.UNSET and fields.generation_config is msgspec.UNSET:
        start = raw.index(b"{") + 1
        return raw[:start] + b'"generationConfig":{"maxOutputTokens":' + str(limit).encode() + b"}," + raw[start:]
    whole = orjson.loads(raw)
    name = "generation_config" if "generation_config" in whole else "generationConfig"
    config = whole.get(name)
    config = config if config.__class__ is dict else {}
    config["max_output_tokens" if name == "generation_config" else "maxOutputTokens"] = limit
    whole[name] = config
    return orjson.dumps(whole)


def upstream_path(upstream_model: str, stream: bool) -> str:
    """Where a deployment serving Gemini's API takes the call (the model is in the path)."""
    return f"/v1beta/models/{upstream_model}:" + (
        "streamGenerateContent" + STREAM_QUERY if stream else "generateContent"
    )


@dataclass(frozen=True, eq=False)
class Endpoint:
    """`:generateContent` / `:streamGenerateContent` for one model: the `ClientEndpoint` of this format,
    made per call from the path (see `protocols/__init__.py`)."""

    model: str
    stream: bool
    name: str = "gemini"
    path: str = "/generateContent"
    api: str = API
    makes_output: bool = True
    streams: bool = True

    def read(self, raw: bytes) -> GeminiFields:
        fields = decode_body(DECODER, raw, invalid_field)
        fields.model, fields.stream = self.model, self.stream
        check(fields)
        return fields

    def unseen_tokens(self, fields: GeminiFields, image_tokens: int) -> int:
        unseen = media_parts(fields) * image_tokens
        return unseen + TOOL_PREAMBLE if fields.tools else unseen

    def with_output_limit(self, raw: bytes, fields: GeminiFields, limit: int, field: str = "") -> tuple[bytes, Any]:
        written = msgspec.structs.replace(fields, max_output=limit)
        return with_output_limit(raw, fields, limit), written

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        """The client's bytes, unchanged: the deployment's model name goes in the path."""
        return Outbound(self, API, upstream_path(route.upstream_model, call.stream), call.raw, b"")

    def stream_watch(self, fields: GeminiFields, prompt_tokens: int) -> StreamWatch:
        return StreamWatch()

    def answer_body(self, data: bytes, document: object, cost: int | None, fields: GeminiFields) -> bytes:
        """Relayed untouched: Google's shape has no place for a cost."""
        return data

    answer_usage = staticmethod(answer_usage)
    error_body = staticmethod(error_body)
    upstream_error_message = staticmethod(upstream_error_message)


# the proto names of the fields the translators read, and their JSON names
SNAKE_NAMES = {
    name: re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    for name in (
        "system_instruction",
        "generation_config",
        "max_output_tokens",
        "candidate_count",
        "stop_sequences",
        "top_p",
        "top_k",
        "thinking_config",
        "thinking_budget",
        "include_thoughts",
        "response_mime_type",
        "response_schema",
        "response_json_schema",
        "function_declarations",
        "parameters_json_schema",
        "tool_config",
        "function_calling_config",
        "allowed_function_names",
        "function_call",
        "function_response",
        "inline_data",
        "mime_type",
        "thought_signature",
    )
}
FREE_FORM = frozenset(
    ("args", "response", "parameters", "parametersJsonSchema", "responseSchema", "responseJsonSchema")
)


def camel(value: Any) -> Any:
    """A request with every field a translator reads under its JSON name (Google takes either), the
    caller's own data (a call's args, a schema's property names) left as it is."""
    if value.__class__ is dict:
        out = {}
        for key, item in value.items():
            key = SNAKE_NAMES.get(key, key)
            out[key] = item if key in FREE_FORM else camel(item)
        return out
    if value.__class__ is list:
        return [camel(item) for item in value]
    return value


# Gemini 3 wants a function call's `thoughtSignature` back with the call in the next turn
# (https://ai.google.dev/gemini-api/docs/thought-signatures, read 2026-12-07). Other formats have no
# place for it but the call's id, which every client sends back: it travels there, URL-safe.
SIGNED = "__ts_"


def call_id(base: str, signature: object) -> str:
    if signature.__class__ is not str or not signature:
        return base
    packed = signature.replace("+", "-").replace("/", "_").rstrip("=")  # type: ignore[union-attr]
    return base + SIGNED + packed


def signature_of(tool_call_id: object) -> str | None:
    """The thought signature a call id made by `call_id` carries, as Google wrote it; None for another id."""
    if tool_call_id.__class__ is not str or SIGNED not in tool_call_id:  # type: ignore[operator]
        return None
    packed = tool_call_id.split(SIGNED, 1)[1]  # type: ignore[union-attr]
    packed = packed.replace("-", "+").replace("_", "/")
    return packed + "=" * (-len(packed) % 4)
