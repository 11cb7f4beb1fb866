"""Gemini clients on chat-only upstreams: the `generateContent` request into OpenAI chat, the answer
(whole or streamed chunk by chunk) back into Gemini's `GenerateContentResponse`.

With `chat_gemini.py` this is Gemini's half of the chat pivot. Function calls get chat ids: the one a
client sends back, or one made here (`call_<turn>_<n>`) that a `functionResponse` without an id is
matched to by name and order, as Google matches them. Thoughts come back as `thought: true` text
parts; a `thinkingConfig` budget becomes chat's `reasoning_effort`. A function's `parameters` in
Google's OpenAPI subset (types in capitals) become JSON Schema.
"""

from __future__ import annotations

from typing import Any

import orjson

from hubproxy.protocols import Call, Untranslatable, answered_model, shapes
from hubproxy.protocols import gemini as google
from hubproxy.protocols import openai_chat as chat
from hubproxy.protocols.chat_gemini import assistant_message

FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
FINISH_REASONS["function_call"] = "STOP"
MODES = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}


def json_schema(schema: Any) -> Any:
    """Google's OpenAPI-subset schema (`"type": "OBJECT"`) as the JSON Schema chat upstreams read."""
    if schema.__class__ is dict:
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "type" and value.__class__ is str:
                out[key] = value.lower()
            elif key == "properties" and value.__class__ is dict:
                out[key] = {name: json_schema(item) for name, item in value.items()}
            else:
                out[key] = json_schema(value) if key in ("items", "anyOf") else value
        return out
    if schema.__class__ is list:
        return [json_schema(item) for item in schema]
    return schema


def result_text(response: object) -> str:
    """A `functionResponse.response` as the tool message's text: a lone string value as it is (Gemini
    CLI sends `{"output": "…"}`), else the object as JSON."""
    if response.__class__ is dict and len(response) == 1:  # type: ignore[arg-type]
        (value,) = response.values()  # type: ignore[union-attr]
        if value.__class__ is str:
            return value
    return orjson.dumps(response).decode()


def blob_url(blob: dict) -> str:
    mime = blob.get("mimeType") or "application/octet-stream"
    if not mime.startswith("image/"):
        raise Untranslatable(f"an inline {mime} part has no place in chat")
    return f"data:{mime};base64,{blob.get('data', '')}"


class Turns:
    """Gemini contents as chat messages, keeping the ids of the last model turn's calls for the
    responses that follow it."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.pending: list[tuple[str, str]] = []  # (name, id) of calls not yet answered

    def model_turn(self, number: int, parts: list[dict]) -> None:
        message = assistant_message(parts, f"call_{number}_")
        calls = message.get("tool_calls") or []
        self.pending += [(call["function"]["name"], call["id"]) for call in calls]
        if message["content"] is not None or calls:
            self.messages.append(message)

    def answered(self, result: dict) -> str:
        """The id of the call a `functionResponse` answers: its own, else the first unanswered call of
        that name."""
        name = result.get("name", "")
        given = result.get("id")
        for at, (pending_name, identity) in enumerate(self.pending):
            if identity == given or (given is None and pending_name == name):
                del self.pending[at]
                return identity
        return str(given or f"call_{name}")

    def user_turn(self, parts: list[dict]) -> None:
        content: list[dict] = []
        for part in parts:
            result = part.get("functionResponse")
            if result is not None:
                text = result_text(result.get("response"))
                self.messages.append({"role": "tool", "tool_call_id": self.answered(result), "content": text})
            elif part.get("inlineData") is not None:
                content.append({"type": "image_url", "image_url": {"url": blob_url(part["inlineData"])}})
            elif part.get("text") is not None and not part.get("thought"):
                content.append({"type": "text", "text": part["text"]})
        if content:
            plain = all(p["type"] == "text" for p in content)
            self.messages.append({"role": "user", "content": "".join(p["text"] for p in content) if plain else content})


def system_text(instruction: object) -> str:
    parts = instruction.get("parts") if instruction.__class__ is dict else None  # type: ignore[union-attr]
    return "\n".join(p["text"] for p in parts or () if p.get("text") is not None)


def tool_choice(config: dict) -> object:
    calling = config.get("functionCallingConfig") or {}
    mode = MODES.get(str(calling.get("mode", "AUTO")).upper(), "auto")
    names = calling.get("allowedFunctionNames") or []
    if mode == "required" and len(names) == 1:
        return {"type": "function", "function": {"name": names[0]}}
    return mode


def reasoning_effort(thinking: dict) -> str | None:
    """A thinking budget as chat's `reasoning_effort` (0 turns thinking off: none asked; -1 is dynamic)."""
    budget = thinking.get("thinkingBudget")
    level = thinking.get("thinkingLevel")
    if level.__class__ is str and level.lower() in ("low", "medium", "high"):
        return level.lower()
    if budget.__class__ is not int or budget == 0:
        return None
    if budget < 0:
        return "medium"
    return "low" if budget < 4096 else ("medium" if budget < 16384 else "high")


def to_chat(call: Call, upstream_model: str, stream_usage: bool) -> bytes:
    """The Gemini request as a chat request (fields already checked by `gemini.check`)."""
    doc = google.camel(orjson.loads(call.raw))
    shapes.conforms(shapes.GeminiRequest, doc, "the request")
    fields: google.GeminiFields = call.fields
    turns = Turns()
    system = system_text(doc.get("systemInstruction"))
    if system:
        turns.messages.append({"role": "system", "content": system})
    for number, content in enumerate(doc["contents"]):
        parts = content.get("parts") or []
        if content.get("role") == "model":
            turns.model_turn(number, parts)
        else:
            turns.user_turn(parts)
    out: dict = {"model": upstream_model, "messages": turns.messages}
    if fields.max_output is not None:
        out["max_tokens"] = fields.max_output
    if fields.choices > 1:
        out["n"] = fields.choices
    declarations = [d for tool in doc.get("tools") or () for d in tool.get("functionDeclarations") or ()]
    if declarations:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": d["name"],
                    "description": d.get("description") or "",
                    "parameters": d.get("parametersJsonSchema")
                    or json_schema(d.get("parameters"))
                    or {"type": "object", "properties": {}},
                },
            }
            for d in declarations
        ]
        if doc.get("toolConfig"):
            out["tool_choice"] = tool_choice(doc["toolConfig"])
    config = doc.get("generationConfig") or {}
    for ours, theirs in (("temperature", "temperature"), ("topP", "top_p"), ("stopSequences", "stop")):
        if config.get(ours) is not None:
            out[theirs] = config[ours]
    effort = reasoning_effort(config.get("thinkingConfig") or {})
    if effort is not None:
        out["reasoning_effort"] = effort
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if schema:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": json_schema(schema)},
        }
    elif config.get("responseMimeType") == "application/json":
        out["response_format"] = {"type": "json_object"}
    if call.stream:
        out["stream"] = True
        if stream_usage:
            out["stream_options"] = {"include_usage": True}
    return orjson.dumps(out)


def candidate(message: dict, finish: object, index: int) -> dict:
    parts: list[dict] = []
    thought = chat.reasoning_text(message)
    if thought:
        parts.append({"text": thought, "thought": True})
    if message.get("content").__class__ is str and message["content"]:
        parts.append({"text": message["content"]})
    for call in message.get("tool_calls") or ():
        parts.append(function_call(call.get("id"), (call.get("function") or {}).get("name", ""), call))
    reason = FINISH_REASONS.get(finish, "STOP") if finish.__class__ is str else "STOP"
    return {"content": {"role": "model", "parts": parts}, "finishReason": reason, "index": index}


def function_call(identity: object, name: str, call: dict) -> dict:
    """A chat tool call as a `functionCall` part, with the thought signature its id carries."""
    arguments = (call.get("function") or {}).get("arguments") or "{}"
    try:
        args = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        args = {"arguments": arguments}
    part: dict = {"functionCall": {"id": str(identity or ""), "name": name, "args": args}}
    signature = google.signature_of(identity)
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def from_chat(document: dict, model: str) -> bytes:
    """A whole chat answer as a `GenerateContentResponse`."""
    candidates = [
        candidate(choice.get("message") or {}, choice.get("finish_reason"), at)
        for at, choice in enumerate(document.get("choices") or ())
        if choice.__class__ is dict
    ]
    answer = {
        "candidates": candidates,
        "usageMetadata": google.usage_metadata(chat.read_usage(document.get("usage"))),
        "modelVersion": answered_model(document, model),
        "responseId": str(document.get("id") or "hubproxy"),
    }
    return orjson.dumps(answer)


class ChatStreamAsGemini(chat.ChunkReader):
    """A chat stream's chunks as Gemini's: each text or thought delta a chunk of its own; tool calls,
    whose arguments chat sends in pieces and Gemini whole, gathered and sent with the last chunk, which
    carries the finish reason and (once the call is settled) the usage."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
        self.response_id = "hubproxy"
        self.calls: dict[int, dict] = {}  # chat tool-call index → {"id", "name", "arguments"}

    def _chunk(self, parts: list[dict], **extra: object) -> dict:
        body: dict = {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0, **extra}]}
        body["modelVersion"], body["responseId"] = self.model, self.response_id
        return body

    def start(self, chunk: dict) -> bytes:
        self.model = answered_model(chunk, self.model)
        self.response_id = str(chunk.get("id") or "hubproxy")
        return b""

    def reasoning(self, thought: str, signed: str | None) -> bytes:
        if not thought:
            return b""
        self.output_events += 1
        return google.sse(self._chunk([{"text": thought, "thought": True}]))

    def text(self, text: str) -> bytes:
        self.output_events += 1
        return google.sse(self._chunk([{"text": text}]))

    def tool_call(self, position: int, call_id: object, name: str, arguments: str) -> bytes:
        found = self.calls.setdefault(position, {"id": call_id, "name": name, "arguments": ""})
        found["arguments"] += arguments
        self.output_events += 1
        return b""

    def closing(self, cost: int) -> bytes:
        parts = [
            function_call(c["id"], c["name"], {"function": {"arguments": c["arguments"]}}) for c in self.calls.values()
        ]
        reason = FINISH_REASONS.get(self.finish, "STOP") if self.finish.__class__ is str else "STOP"  # type: ignore[arg-type]
        last = self._chunk(parts, finishReason=reason)
        last["usageMetadata"] = google.usage_metadata(self.usage)
        return google.sse(last)

    @staticmethod
    def error_event(message: str) -> bytes:
        return google.stream_error(message)


class GeminiViaChat(chat.ViaChat):
    """Gemini's endpoint as seen from a chat-only deployment: its fields and errors, the upstream's side
    in chat."""

    @staticmethod
    def as_chat(call: Call, upstream_model: str, stream_usage: bool) -> bytes:
        return to_chat(call, upstream_model, stream_usage)

    def stream_watch(self, fields: google.GeminiFields, prompt_tokens: int) -> ChatStreamAsGemini:
        return ChatStreamAsGemini(fields.model)

    @staticmethod
    def answer_body(data: bytes, document: object, cost: int | None, fields: google.GeminiFields) -> bytes:
        if document.__class__ is not dict:
            return data
        shapes.checked(shapes.CHAT_ANSWER, data, "the provider's answer")
        return from_chat(document, fields.model)  # type: ignore[arg-type]


VIA_CHAT = GeminiViaChat()
