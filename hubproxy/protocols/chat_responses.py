"""OpenAI chat clients on Responses-only upstreams (OpenAI serves some models only there): the chat
request as a Responses request, the answer (whole or streamed) back as chat completions.

The other half of the pivot for Responses (`responses_chat.py` is the first). Nothing is stored
upstream (`store: false`): each call carries the whole conversation, as chat does. Responses wants
`max_output_tokens` of at least `responses.MIN_OUTPUT_TOKENS`; a smaller limit (Claude Code probes
with `max_tokens: 1`) goes up as that
and the answer is cut back to what the client asked: text past the first `limit` deltas (each about
a token) is dropped and the finish reason is `length`; the usage stays what the upstream billed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from hubproxy.protocols import FINAL, Call, End, Outbound, Untranslatable, answered_model, reasoning, shapes
from hubproxy.protocols import openai_chat as chat
from hubproxy.protocols import openai_responses as responses
from hubproxy.protocols.sse import event_object

if TYPE_CHECKING:
    from hubproxy.routing.router import Route


def input_item(message: dict) -> list[dict]:
    role, content = message.get("role"), message.get("content")
    if role == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": str(message.get("tool_call_id", "")),
                "output": chat.content_text(content),
            }
        ]
    items: list[dict] = []
    encrypted = reasoning.openai_encrypted(message.get(reasoning.FIELD)) if role == "assistant" else None
    if encrypted:  # the upstream's own reasoning item, back to it as it came
        thought = chat.reasoning_text(message)
        summary = [{"type": "summary_text", "text": thought}] if thought else []
        items.append({"type": "reasoning", "summary": summary, "encrypted_content": encrypted})
    if isinstance(content, list) and role == "user":
        parts = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                parts.append({"type": "input_text", "text": part.get("text", "")})
            elif part.get("type") == "image_url":
                parts.append({"type": "input_image", "image_url": (part.get("image_url") or {}).get("url", "")})
        items.append({"type": "message", "role": "user", "content": parts})
    elif chat.content_text(content):
        items.append({"type": "message", "role": role, "content": chat.content_text(content)})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(
            {
                "type": "function_call",
                "call_id": str(call.get("id", "")),
                "name": function.get("name", ""),
                "arguments": function.get("arguments") or "{}",
            }
        )
    return items


def to_responses(raw: bytes, upstream_model: str, stream: bool) -> bytes:
    doc = orjson.loads(raw)
    instructions, items = [], []
    for message in doc.get("messages") or ():
        if message.get("role") not in chat.CHAT_ROLES:
            raise Untranslatable(f"a message's role {message.get('role')!r} has no place in Responses")
        if message.get("role") in ("system", "developer"):
            instructions.append(chat.content_text(message.get("content")))
        else:
            items.extend(input_item(message))
    out: dict = {"model": upstream_model, "input": items, "store": False}
    if instructions:
        out["instructions"] = "\n\n".join(instructions)
    limit = chat.largest_limit(doc.get("max_completion_tokens"), doc.get("max_tokens"))
    if limit:
        out["max_output_tokens"] = max(limit, responses.MIN_OUTPUT_TOKENS)
    tools = [t.get("function") or {} for t in doc.get("tools") or () if isinstance(t, dict)]
    if tools:
        out["tools"] = [
            {
                "type": "function",
                "name": f.get("name", ""),
                "description": f.get("description", ""),
                "parameters": f.get("parameters") or {"type": "object", "properties": {}},
            }
            for f in tools
        ]
        choice = doc.get("tool_choice")
        if isinstance(choice, dict):
            out["tool_choice"] = {"type": "function", "name": (choice.get("function") or {}).get("name", "")}
        elif choice in ("auto", "required", "none"):
            out["tool_choice"] = choice
    if isinstance(doc.get("reasoning_effort"), str):
        out["reasoning"] = {"effort": doc["reasoning_effort"]}
        out["include"] = ["reasoning.encrypted_content"]  # nothing is stored upstream: the reasoning comes back
    response_format = doc.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        out["text"] = {"format": {"type": "json_schema", **(response_format.get("json_schema") or {})}}
    for name in ("temperature", "top_p"):
        if doc.get(name) is not None:
            out[name] = doc[name]
    if stream:
        out["stream"] = True
    return orjson.dumps(out)


def cut_limit(fields: chat.RequestFields) -> int | None:
    """The client's output limit where it is below what went up (the Responses minimum), else None."""
    limit = fields.max_output
    return limit if limit is not None and limit < responses.MIN_OUTPUT_TOKENS else None


def cut_text(text: str, limit: int | None, output_tokens: int) -> str:
    """A whole answer's text cut to about `limit` of the `output_tokens` it took (by its share of
    characters: no tokenizer here)."""
    if limit is None or output_tokens <= limit:
        return text
    return text[: max(1, len(text) * limit // output_tokens)]


def from_responses(document: dict, model: str, cost: int | None, limit: int | None = None) -> bytes:
    text: list[str] = []
    thought: list[str] = []
    calls: list[dict] = []
    signed = None
    for item in document.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            text.extend(p.get("text", "") for p in item.get("content") or () if p.get("type") == "output_text")
        elif kind == "reasoning":
            thought.extend(p.get("text", "") for p in item.get("summary") or ())
            signed = reasoning.from_openai(item.get("encrypted_content")) or signed
        elif kind in ("function_call", "custom_tool_call"):
            arguments = (
                item.get("arguments")
                if kind == "function_call"
                else orjson.dumps({"input": item.get("input", "")}).decode()
            )
            calls.append(
                {
                    "id": item.get("call_id", ""),
                    "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": arguments},
                }
            )
    tokens = responses.read_usage(document.get("usage"))
    whole = "".join(text)
    content = cut_text(whole, limit, tokens.output if tokens else 0)
    cut = content != whole
    message: dict = {"role": "assistant", "content": content or None}
    if thought:
        message["reasoning_content"] = "".join(thought)
    if signed:
        message[reasoning.FIELD] = signed
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else ("length" if document.get("status") == "incomplete" or cut else "stop")
    usage = chat.usage_object(tokens)
    if usage is not None and cost is not None:
        usage["cost"] = chat.cost_text(cost)
    answer = {
        "id": "chatcmpl-" + str(document.get("id", "")),
        "object": "chat.completion",
        "created": created if (created := document.get("created_at")).__class__ is int else int(time.time()),
        "model": answered_model(document, model),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }
    return orjson.dumps(answer)


class ResponsesStreamAsChat(chat.ChunkWriter):
    """A Responses stream's events as chat completion chunks; `response.completed` ends it: the call is
    settled, then the finish chunk, the usage chunk (if the client asked, with `cost`) and `[DONE]`."""

    def __init__(self, model: str, client_wants_usage: bool, limit: int | None = None) -> None:
        super().__init__(model, client_wants_usage)
        self.calls: dict[str, int] = {}  # item id → tool_calls index
        self.limit = limit  # the client's own limit, where it is below what went up
        self.cut = False
        self.thought_streamed = False  # the reasoning item now open sent its summary as deltas

    def read(self, raw_event: bytes, payload: bytes | None) -> bytes | End | None:
        data = event_object(payload)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "response.created":
            response = shapes.obj(data.get("response"), "response.created's response")
            self.id = "chatcmpl-" + str(response.get("id", "hubproxy"))
            self.model = answered_model(response, self.model)
            return self.chunk({"role": "assistant", "content": ""})
        if kind == "response.output_text.delta":
            self.output_events += 1
            if self.limit is not None and self.output_events > self.limit:
                self.cut = True
                return None
            return self.chunk({"content": shapes.text(data.get("delta"), "an output_text delta")})
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self.output_events += 1
            self.thought_streamed = True
            return self.chunk({"reasoning_content": shapes.text(data.get("delta"), "a reasoning delta")})
        item = shapes.obj(data.get("item"), "an output item event's item") if "item" in data else {}
        if kind == "response.output_item.done" and item.get("type") == "reasoning":
            delta = {}
            thought = "" if self.thought_streamed else responses.summary_text(item)
            if thought:  # a summary that came whole, with the item
                delta["reasoning_content"] = thought
            self.thought_streamed = False
            signed = reasoning.from_openai(item.get("encrypted_content"))
            if signed:
                delta[reasoning.FIELD] = signed
            return self.chunk(delta) if delta else None
        if kind == "response.output_item.added" and item.get("type") == "function_call":
            position = self.calls[shapes.text(item.get("id"), "a function_call item's id")] = len(self.calls)
            call = {"index": position, "id": item.get("call_id", ""), "type": "function"}
            call["function"] = {"name": item.get("name", ""), "arguments": ""}
            return self.chunk({"tool_calls": [call]})
        item_id = data.get("item_id")
        if kind == "response.function_call_arguments.delta" and item_id.__class__ is str and item_id in self.calls:
            self.output_events += 1
            arguments = shapes.text(data.get("delta"), "a function_call_arguments delta")
            call = {"index": self.calls[item_id], "function": {"arguments": arguments}}
            return self.chunk({"tool_calls": [call]})
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = shapes.obj(data.get("response"), f"{kind}'s response")
            self.usage = responses.read_usage(response.get("usage"))
            cut = kind == "response.incomplete" or self.cut
            self.finish = "tool_calls" if self.calls else ("length" if cut else "stop")
            return FINAL
        if kind == "error":
            return chat.stream_error(str(data.get("message", "the upstream failed")))
        return None


class ChatViaResponses:
    """The chat endpoint as seen from a Responses-only deployment."""

    api = responses.API

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        shapes.checked(shapes.CHAT_REQUEST, call.raw, "the request")
        return Outbound(
            self, responses.API, "/responses", to_responses(call.raw, route.upstream_model, call.stream), b""
        )

    def stream_watch(self, fields: chat.RequestFields, prompt_tokens: int) -> ResponsesStreamAsChat:
        return ResponsesStreamAsChat(fields.model, fields.asks_usage, cut_limit(fields))

    answer_usage = staticmethod(responses.answer_usage)

    @staticmethod
    def answer_body(data: bytes, document: object, cost: int | None, fields: chat.RequestFields) -> bytes:
        if document.__class__ is not dict:
            return data
        shapes.checked(shapes.RESPONSES_ANSWER, data, "the provider's answer")
        return from_responses(document, fields.model, cost, cut_limit(fields))

    @staticmethod
    def upstream_error_message(data: bytes) -> tuple[str, bool]:
        """Re-rendered always: a Responses error's fields are not a chat error's."""
        return chat.upstream_error_message(data)[0], False


VIA_RESPONSES = ChatViaResponses()
