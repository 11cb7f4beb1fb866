"""OpenAI chat clients on Gemini-only upstreams (Google AI Studio's own API): the request into
`generateContent`, the answer (whole or streamed chunk by chunk) back into chat completions.

The other half of Gemini's chat pivot (`gemini_chat.py` is the first). Gemini wants turns of `user`
and `model`, tool results as `functionResponse` parts naming the function (looked up by the call's
id), and tool schemas as JSON Schema (`parametersJsonSchema`). A function call's thought signature,
which Gemini 3 wants back with the call, travels in the chat call's id (`gemini.call_id`). Thoughts
come back as `reasoning_content`; `reasoning_effort` becomes a thinking budget.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from hubproxy.protocols import Call, End, Outbound, Untranslatable, shapes
from hubproxy.protocols import gemini as google
from hubproxy.protocols import openai_chat as chat
from hubproxy.protocols.sse import event_object

if TYPE_CHECKING:
    from hubproxy.routing.router import Route

THINKING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"}
FILTERED = frozenset(("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"))


def finish_reason(reason: object, called_tools: bool) -> str:
    if reason in FILTERED:
        return "content_filter"
    found = FINISH_REASONS.get(reason, "stop") if reason.__class__ is str else "stop"  # type: ignore[call-overload]
    return "tool_calls" if called_tools and found == "stop" else found


def image_part(url: str) -> dict:
    if not (url.startswith("data:") and ";base64," in url):
        raise Untranslatable("an image by URL has no place in Gemini's API (send it inline, as a data: URL)")
    mime, data = url[5:].split(";base64,", 1)
    return {"inlineData": {"mimeType": mime, "data": data}}


def user_parts(content: object) -> list[dict]:
    if content.__class__ is str:
        return [{"text": content}] if content else []
    parts = []
    for part in content if content.__class__ is list else ():  # type: ignore[union-attr]
        if part.get("type") == "text":
            parts.append({"text": part.get("text") or ""})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url")
            if url.__class__ is str:
                parts.append(image_part(url))
    return parts


def model_parts(message: dict) -> list[dict]:
    parts = [{"text": chat.content_text(message.get("content"))}] if message.get("content") else []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        try:
            args = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = {}
        part: dict = {
            "functionCall": {"name": function.get("name", ""), "args": args if args.__class__ is dict else {}}
        }
        signature = google.signature_of(call.get("id"))
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def tool_config(choice: object) -> dict | None:
    if choice.__class__ is dict:
        name = (choice.get("function") or {}).get("name", "")  # type: ignore[union-attr]
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(choice) if choice.__class__ is str else None  # type: ignore[call-overload]
    return {"functionCallingConfig": {"mode": mode}} if mode else None


def generation_config(doc: dict) -> dict:
    config: dict = {}
    limit = chat.largest_limit(doc.get("max_completion_tokens"), doc.get("max_tokens"))
    if limit is not None:
        config["maxOutputTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount")):
        if doc.get(ours) is not None:
            config[theirs] = doc[ours]
    stop = doc.get("stop")
    if stop:
        config["stopSequences"] = [stop] if stop.__class__ is str else stop
    budget = THINKING_BUDGETS.get(doc.get("reasoning_effort"))  # type: ignore[arg-type]
    if budget is not None:
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
    answer_format = doc.get("response_format")
    if answer_format.__class__ is dict and answer_format.get("type") in ("json_object", "json_schema"):  # type: ignore[union-attr]
        config["responseMimeType"] = "application/json"
        schema = (answer_format.get("json_schema") or {}).get("schema")  # type: ignore[union-attr]
        if schema.__class__ is dict:
            config["responseJsonSchema"] = schema
    return config


def to_gemini(raw: bytes) -> bytes:
    """The chat request as a `generateContent` body (fields already checked by `openai_chat`)."""
    doc = orjson.loads(raw)
    system: list[dict] = []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool call id → function name, for the results
    for message in doc["messages"]:
        role = message.get("role")
        if role not in chat.CHAT_ROLES:
            raise Untranslatable(f"a message's role {role!r} has no place in Gemini's API")
        if role in ("system", "developer"):
            text = chat.content_text(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "assistant":
            turn_role, parts = "model", model_parts(message)
            for call in message.get("tool_calls") or ():
                names[str(call.get("id"))] = (call.get("function") or {}).get("name", "")
        elif role in ("tool", "function"):
            identity = str(message.get("tool_call_id") or message.get("name") or "")
            text = chat.content_text(message.get("content"))
            result = {"name": names.get(identity) or message.get("name") or identity, "response": {"result": text}}
            turn_role, parts = "user", [{"functionResponse": result}]
        else:
            turn_role, parts = "user", user_parts(message.get("content"))
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn_role, "parts": parts})
    out: dict = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    functions = [t.get("function") or {} for t in doc.get("tools") or () if t.__class__ is dict]
    if functions:
        declarations = []
        for f in functions:
            declaration = {"name": f.get("name", ""), "description": f.get("description") or ""}
            if f.get("parameters"):
                declaration["parametersJsonSchema"] = f["parameters"]
            declarations.append(declaration)
        out["tools"] = [{"functionDeclarations": declarations}]
        config = tool_config(doc.get("tool_choice"))
        if config is not None:
            out["toolConfig"] = config
    config = generation_config(doc)
    if config:
        out["generationConfig"] = config
    return orjson.dumps(out)


def assistant_message(parts: list[dict], prefix: str) -> dict:
    """Gemini parts of the model's as a chat assistant message: thoughts as `reasoning_content`, each
    `functionCall` a tool call whose id is Gemini's (or `<prefix><n>`) with its thought signature."""
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict] = []
    for part in parts:
        call = part.get("functionCall")
        if call is not None:
            identity = google.call_id(str(call.get("id") or f"{prefix}{len(calls)}"), part.get("thoughtSignature"))
            arguments = orjson.dumps(call.get("args") or {}).decode()
            calls.append(
                {"id": identity, "type": "function", "function": {"name": call.get("name", ""), "arguments": arguments}}
            )
        elif part.get("thought"):
            thoughts.append(part.get("text") or "")
        elif part.get("text") is not None:
            text.append(part["text"])
    message: dict = {"role": "assistant", "content": "".join(text) or None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message


def from_gemini(document: dict, model: str, cost: int | None) -> bytes:
    """A whole `GenerateContentResponse` as a chat completion (with `usage.cost` once billed)."""
    choices = []
    for at, candidate in enumerate(document.get("candidates") or ()):
        message = assistant_message((candidate.get("content") or {}).get("parts") or [], "call_")
        called = "tool_calls" in message
        choices.append(
            {"index": at, "message": message, "finish_reason": finish_reason(candidate.get("finishReason"), called)}
        )
    usage = chat.usage_object(google.read_usage(document.get("usageMetadata")))
    if usage is not None and cost is not None:
        usage["cost"] = chat.cost_text(cost)
    version = document.get("modelVersion")
    answer = {
        "id": "chatcmpl-" + str(document.get("responseId") or "hubproxy"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": version if version.__class__ is str and version else model,
        "choices": choices,
        "usage": usage,
    }
    return orjson.dumps(answer)


class GeminiStreamAsChat(chat.ChunkWriter):
    """Gemini's stream chunks as chat completion chunks: thoughts as `reasoning_content`, text as
    `content`, each function call (Gemini sends it whole) as one `tool_calls` entry; Google's stream
    ends with its connection, so the finish reason and the usage chunk go out once the call is settled."""

    def __init__(self, model: str, client_wants_usage: bool) -> None:
        super().__init__(model, client_wants_usage)
        self.counted = google.StreamUsage()
        self.calls = 0
        self.started = False

    def read(self, raw_event: bytes, payload: bytes | None) -> bytes | End | None:
        data = event_object(payload)
        if data is None:
            return None
        if data.get("error").__class__ is dict:
            return chat.stream_error(str(data["error"].get("message", "the upstream failed")))
        self.counted.add(data)
        self.usage = self.counted.usage
        out = b""
        if not self.started:
            self.started = True
            self.id = "chatcmpl-" + str(data.get("responseId") or "hubproxy")
            version = data.get("modelVersion")
            self.model = version if version.__class__ is str and version else self.model
            out = self.chunk({"role": "assistant", "content": ""})
        candidates = data.get("candidates")
        first = candidates[0] if candidates.__class__ is list and candidates else {}
        content = shapes.obj(shapes.obj(first, "a candidate").get("content"), "a candidate's content")
        for part in content.get("parts") or ():
            out += self._part(shapes.obj(part, "a part"))
        if first.get("finishReason"):
            self.finish = finish_reason(first["finishReason"], self.calls > 0)
        return out or None

    def _part(self, part: dict) -> bytes:
        self.output_events += 1
        call = part.get("functionCall")
        if call is not None:
            call = shapes.obj(call, "a functionCall")
            identity = google.call_id(str(call.get("id") or f"call_{self.calls}"), part.get("thoughtSignature"))
            arguments = orjson.dumps(call.get("args") or {}).decode()
            entry = {"index": self.calls, "id": identity, "type": "function"}
            entry["function"] = {"name": shapes.text(call.get("name"), "a functionCall name"), "arguments": arguments}
            self.calls += 1
            return self.chunk({"tool_calls": [entry]})
        text = shapes.text(part.get("text"), "a part's text")
        if not text:
            return b""
        return self.chunk({"reasoning_content": text} if part.get("thought") else {"content": text})


class ChatViaGemini:
    """The chat endpoint as seen from a Gemini-only deployment."""

    api = google.API

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        shapes.checked(shapes.CHAT_REQUEST, call.raw, "the request")
        body = to_gemini(call.raw)
        return Outbound(self, google.API, google.upstream_path(route.upstream_model, call.stream), body, b"")

    def stream_watch(self, fields: chat.RequestFields, prompt_tokens: int) -> GeminiStreamAsChat:
        return GeminiStreamAsChat(fields.model, fields.asks_usage)

    answer_usage = staticmethod(google.answer_usage)

    @staticmethod
    def answer_body(data: bytes, document: object, cost: int | None, fields: chat.RequestFields) -> bytes:
        if document.__class__ is not dict:
            return data
        shapes.checked(shapes.GEMINI_ANSWER, data, "the provider's answer")
        return from_gemini(document, fields.model, cost)  # type: ignore[arg-type]

    @staticmethod
    def upstream_error_message(data: bytes) -> tuple[str, bool]:
        return google.upstream_error_message(data)[0], False


VIA_GEMINI = ChatViaGemini()
