"""What each translator reads of a body, declared: a translator checks the body against its shape
before it reads it, so that a body it cannot carry over is an `Untranslatable` (the caller's 400, or
the upstream's 502) and anything else it raises is a bug.

The shapes are lenient where the translators are (unknown fields are ignored; a value a translator
tests with `isinstance` is `object` here) and strict where they read: a part that must be an object,
a text that is joined with others. A format's own `read` (the hot path) checks less; a shape is
decoded only on a translated leg. `obj` and `text` check one value in a stream event.
"""

from __future__ import annotations

import msgspec
from msgspec import UnsetType

from hubproxy.protocols import Untranslatable


def checked(decoder: msgspec.json.Decoder, data: bytes, what: str) -> None:
    """`data` has the shape `decoder` declares, else `Untranslatable` naming where it differs."""
    try:
        decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise Untranslatable(f"{what}: {exc}") from None
    except msgspec.DecodeError:
        raise Untranslatable(f"{what} is not JSON") from None


def obj(value: object, where: str) -> dict:
    """A JSON object where one must be (absent or null: an empty one)."""
    if value.__class__ is dict:
        return value  # type: ignore[return-value]
    if value is None:
        return {}
    raise Untranslatable(f"{where} must be an object")


def text(value: object, where: str) -> str:
    """A string where one must be (absent or null: empty)."""
    if value.__class__ is str:
        return value  # type: ignore[return-value]
    if value is None:
        return ""
    raise Untranslatable(f"{where} must be a string")


# chat requests, as chat_messages and chat_responses read them


class ChatFunction(msgspec.Struct):
    name: str = ""
    arguments: str | None = None
    description: object = None
    parameters: dict | None = None


class ChatToolCall(msgspec.Struct):
    id: object = None
    function: ChatFunction | None = None


class ChatImage(msgspec.Struct):
    url: str | UnsetType = msgspec.UNSET


class ChatPart(msgspec.Struct):
    type: str = ""
    text: str = ""
    image_url: ChatImage | None = None


class ChatMessage(msgspec.Struct):
    role: str
    content: str | list[ChatPart | str | None] | None = None
    tool_calls: list[ChatToolCall] | None = None


class ChatToolChoice(msgspec.Struct):
    function: ChatFunction | None = None


class ChatTool(msgspec.Struct):
    function: ChatFunction | None = None


class ChatFormat(msgspec.Struct):
    type: object = None
    json_schema: dict | None = None


class ChatRequest(msgspec.Struct):
    messages: list[ChatMessage] = []
    tools: list[ChatTool | None] | None = None
    tool_choice: str | ChatToolChoice | None = None
    response_format: ChatFormat | None = None
    stop: str | list[str] | None = None


CHAT_REQUEST = msgspec.json.Decoder(ChatRequest)


# Messages requests, as messages_chat reads them


class MessagesSource(msgspec.Struct):
    type: str = ""
    url: str = ""
    media_type: str = "image/png"
    data: str = ""


class MessagesBlock(msgspec.Struct):
    type: str = ""
    text: str = ""
    thinking: str = ""
    name: str = ""
    source: MessagesSource | None = None


class MessagesTurn(msgspec.Struct):
    role: str
    content: str | list[MessagesBlock | str | None]


class MessagesRequest(msgspec.Struct):
    messages: list[MessagesTurn]
    metadata: dict | None = None


MESSAGES_REQUEST = msgspec.json.Decoder(MessagesRequest)


# Responses requests, as responses_chat reads them


class ResponsesRequest(msgspec.Struct):
    reasoning: dict | None = None
    text: dict | None = None


RESPONSES_REQUEST = msgspec.json.Decoder(ResponsesRequest)


# whole answers, as the translators back to the client's format read them


class ChatAnswerFunction(msgspec.Struct):
    name: str = ""
    arguments: str | None = None


class ChatAnswerCall(msgspec.Struct):
    id: object = None
    function: ChatAnswerFunction | None = None


class ChatAnswerMessage(msgspec.Struct):
    content: object = None
    tool_calls: list[ChatAnswerCall] | None = None


class ChatChoice(msgspec.Struct):
    message: ChatAnswerMessage | None = None
    finish_reason: str | None = None


class ChatAnswer(msgspec.Struct):
    choices: list[ChatChoice] | None = None


CHAT_ANSWER = msgspec.json.Decoder(ChatAnswer)


class MessagesAnswerBlock(msgspec.Struct):
    type: str = ""
    text: str = ""
    thinking: str = ""


class MessagesAnswer(msgspec.Struct):
    content: list[MessagesAnswerBlock] | None = None
    stop_reason: str | None = None


MESSAGES_ANSWER = msgspec.json.Decoder(MessagesAnswer)


class ResponsesAnswerPart(msgspec.Struct):
    type: str = ""
    text: str = ""


class ResponsesAnswerItem(msgspec.Struct):
    type: str = ""
    content: list[ResponsesAnswerPart] | None = None
    summary: list[ResponsesAnswerPart] | None = None


class ResponsesAnswer(msgspec.Struct):
    output: list[ResponsesAnswerItem] | None = None


RESPONSES_ANSWER = msgspec.json.Decoder(ResponsesAnswer)


# Gemini requests (their keys made camelCase first: `gemini.camel`) and answers, as gemini_chat and
# chat_gemini read them


def conforms(kind: type, value: object, what: str) -> None:
    """An already parsed `value` has the shape `kind` declares, else `Untranslatable`."""
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise Untranslatable(f"{what}: {exc}") from None


class GeminiBlob(msgspec.Struct):
    mimeType: str = ""
    data: str = ""


class GeminiCall(msgspec.Struct):
    name: str = ""
    args: dict | None = None


class GeminiResult(msgspec.Struct):
    name: str = ""
    response: dict | None = None


class GeminiPart(msgspec.Struct):
    text: str | None = None
    thought: bool | None = None
    thoughtSignature: str | None = None
    inlineData: GeminiBlob | None = None
    functionCall: GeminiCall | None = None
    functionResponse: GeminiResult | None = None


class GeminiContent(msgspec.Struct):
    role: str | None = None
    parts: list[GeminiPart] | None = None


class GeminiDeclaration(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict | None = None
    parametersJsonSchema: dict | None = None


class GeminiTool(msgspec.Struct):
    functionDeclarations: list[GeminiDeclaration] | None = None


class GeminiRequest(msgspec.Struct):
    contents: list[GeminiContent]
    systemInstruction: GeminiContent | None = None
    tools: list[GeminiTool] | None = None
    toolConfig: dict | None = None
    generationConfig: dict | None = None


class GeminiCandidate(msgspec.Struct):
    content: GeminiContent | None = None
    finishReason: str | None = None


class GeminiAnswer(msgspec.Struct):
    candidates: list[GeminiCandidate] | None = None


GEMINI_ANSWER = msgspec.json.Decoder(GeminiAnswer)
