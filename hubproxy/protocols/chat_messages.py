"""OpenAI chat clients on Messages-only upstreams (Anthropic's own API): the request into Messages, the
answer (whole or streamed event by event) back into chat completions.

The other half of the chat pivot (`messages_chat.py` is the first): with both, every client format
reaches every upstream format. Messages wants what chat leaves optional: `max_tokens` (the server
writes the limit the hold was sized by into every call it translates that set none), turns
alternate (consecutive messages of one role are merged) and tool results travel in user turns.
`reasoning_content` sent back by a chat client is dropped: Anthropic accepts only the thinking
blocks it signed itself, which travel packed in `reasoning_encrypted` (`reasoning.py`) and go back
to it as they came.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from hubproxy.protocols import FINAL, Call, End, Outbound, Untranslatable, answered_model, reasoning, shapes
from hubproxy.protocols import anthropic_messages as messages
from hubproxy.protocols import openai_chat as chat
from hubproxy.protocols.sse import event_object

if TYPE_CHECKING:
    from hubproxy.routing.router import Route

# chat's `reasoning_effort` as Anthropic's thinking budget (the inverse of messages_chat.reasoning_effort)
THINKING_BUDGETS = {"low": 2048, "medium": 8192, "high": 24576}
MIN_THINKING_BUDGET = 1024
FINISH_REASONS = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls", "stop_sequence": "stop"}
FINISH_REASONS["refusal"] = "content_filter"


def image_block(url: str) -> dict:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def system_blocks(content: object) -> list[dict]:
    """System text as Messages text blocks, keeping a block's `cache_control` (Anthropic-style system
    blocks in a chat body, as Cursor sends them for Claude models)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else ():
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            block = {"type": "text", "text": part["text"]}
            if isinstance(part.get("cache_control"), dict):
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
    return blocks


def blocks_of(message: dict) -> list[dict]:
    """One chat message as the content blocks of a Messages turn."""
    role, content = message.get("role"), message.get("content")
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": str(message.get("tool_call_id", "")),
            "content": chat.content_text(content),
        }
        return [result]
    blocks: list[dict] = reasoning.anthropic_blocks(message.get(reasoning.FIELD)) if role == "assistant" else []
    if isinstance(content, str) and content:
        blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                blocks.append({"type": "text", "text": part.get("text", "")})
                if isinstance(part.get("cache_control"), dict):  # Cursor marks them for Claude
                    blocks[-1]["cache_control"] = part["cache_control"]
            elif part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url")
                if isinstance(url, str):
                    blocks.append(image_block(url))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        blocks.append(
            {"type": "tool_use", "id": str(call.get("id", "")), "name": function.get("name", ""), "input": arguments}
        )
    return blocks


def tool_choice(choice: object) -> dict | None:
    if isinstance(choice, dict):
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    if not isinstance(choice, str):
        return None
    return {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}.get(choice)


def to_messages(raw: bytes, upstream_model: str, stream: bool) -> bytes:
    """The chat request as a Messages request (fields already checked by `openai_chat`)."""
    doc = orjson.loads(raw)
    system, turns = system_blocks(doc.get("system")), list[dict]()
    for message in doc["messages"]:
        role = message.get("role")
        if role not in chat.CHAT_ROLES:
            raise Untranslatable(f"a message's role {role!r} has no place in Messages")
        if role in ("system", "developer"):
            system += system_blocks(message.get("content"))
            continue
        turn_role = "assistant" if role == "assistant" else "user"
        blocks = blocks_of(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    out: dict = {
        "model": upstream_model,
        "max_tokens": chat.largest_limit(doc.get("max_completion_tokens"), doc.get("max_tokens")),
        "messages": turns,
    }
    budget = min(THINKING_BUDGETS.get(doc.get("reasoning_effort"), 0), out["max_tokens"] - 1)
    if budget >= MIN_THINKING_BUDGET:  # Anthropic's minimum; below the answer's limit, as it requires
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if any("cache_control" in block for block in system):
        out["system"] = system
    elif system:
        out["system"] = "\n\n".join(block["text"] for block in system)
    tools = [t.get("function") or {} for t in doc.get("tools") or () if isinstance(t, dict)]
    if tools:
        out["tools"] = [
            {
                "name": f.get("name", ""),
                "description": f.get("description", ""),
                "input_schema": f.get("parameters") or {"type": "object", "properties": {}},
            }
            for f in tools
        ]
        choice = tool_choice(doc.get("tool_choice"))
        if choice is not None:
            out["tool_choice"] = choice
    stop = doc.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    for name in ("temperature", "top_p"):
        if doc.get(name) is not None:
            out[name] = doc[name]
    if isinstance(doc.get("user"), str):
        out["metadata"] = {"user_id": doc["user"]}
    if stream:
        out["stream"] = True
    return orjson.dumps(out)


def from_messages(document: dict, model: str, cost: int | None) -> bytes:
    """A whole Messages answer as a chat completion (with `usage.cost` once billed)."""
    text, thinking, calls = [], [], []
    for block in document.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": arguments},
                }
            )
    message: dict = {"role": "assistant", "content": "".join(text) or None}
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    signed = reasoning.from_anthropic([b for b in document.get("content") or () if isinstance(b, dict)])
    if signed:
        message[reasoning.FIELD] = signed
    if calls:
        message["tool_calls"] = calls
    usage = chat.usage_object(messages.read_usage(document.get("usage")))
    if usage is not None and cost is not None:
        usage["cost"] = chat.cost_text(cost)
    answer = {
        "id": "chatcmpl-" + str(document.get("id", "")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answered_model(document, model),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASONS.get(str(document.get("stop_reason")), "stop"),
            }
        ],
        "usage": usage,
    }
    return orjson.dumps(answer)


def block_index(event: dict) -> int:
    """A content block event's `index` (0 where it gives none)."""
    index = event.get("index", 0)
    if index.__class__ is not int:
        raise Untranslatable("a content block event's index must be an integer")
    return index


class MessagesStreamAsChat(chat.ChunkWriter):
    """A Messages stream's events as chat completion chunks: text and thinking deltas as `content` and
    `reasoning_content`, each tool_use block as one `tool_calls` entry whose arguments arrive in
    pieces; once the call is settled, the finish reason, the usage chunk (if the client asked, with
    `cost`) and `[DONE]`."""

    def __init__(self, model: str, client_wants_usage: bool) -> None:
        super().__init__(model, client_wants_usage)
        self.counted = messages.StreamUsage()
        self.tools: dict[int, int] = {}  # block index → tool_calls index
        self.thinking: list[dict] = []  # the thinking blocks so far, as Anthropic sent them
        self.in_thinking = False  # the open block is a thinking block

    def read(self, raw_event: bytes, payload: bytes | None) -> bytes | End | None:
        data = event_object(payload)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "message_start":
            message = shapes.obj(data.get("message"), "message_start's message")
            self.id = "chatcmpl-" + str(message.get("id", "hubproxy"))
            self.model = answered_model(message, self.model)
            self.counted.add(message.get("usage"), False)
            self.usage = self.counted.usage
            return self.chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = shapes.obj(data.get("content_block"), "content_block_start's block")
            self.in_thinking = block.get("type") in reasoning.THINKING_BLOCKS
            if self.in_thinking:
                self.thinking.append(dict(block))
            if block.get("type") != "tool_use":
                return None
            position = self.tools[block_index(data)] = len(self.tools)
            call = {"index": position, "id": shapes.text(block.get("id"), "a tool_use id"), "type": "function"}
            call["function"] = {"name": shapes.text(block.get("name"), "a tool_use name"), "arguments": ""}
            return self.chunk({"tool_calls": [call]})
        if kind == "content_block_delta":
            return self._delta(block_index(data), shapes.obj(data.get("delta"), "content_block_delta's delta"))
        if kind == "content_block_stop" and self.in_thinking:
            self.in_thinking = False  # the blocks so far, packed: the last such chunk has them all
            return self.chunk({reasoning.FIELD: reasoning.from_anthropic(self.thinking)})
        if kind == "message_delta":
            self.counted.add(data.get("usage"), True)
            self.usage = self.counted.usage
            reason = shapes.obj(data.get("delta"), "message_delta's delta").get("stop_reason")
            self.finish = FINISH_REASONS.get(shapes.text(reason, "a stop_reason"), "stop")
            return None
        if kind == "message_stop":
            return FINAL
        if kind == "error":
            return chat.stream_error(
                str(shapes.obj(data.get("error"), "an error event's error").get("message", "the upstream failed"))
            )
        return None

    def _delta(self, index: int, delta: dict) -> bytes | None:
        kind = delta.get("type")
        self.output_events += 1
        if kind == "text_delta":
            return self.chunk({"content": delta.get("text", "")})
        if kind == "thinking_delta":
            thought = shapes.text(delta.get("thinking"), "a thinking delta")
            if self.in_thinking:
                self.thinking[-1]["thinking"] = shapes.text(self.thinking[-1].get("thinking"), "thinking") + thought
            return self.chunk({"reasoning_content": thought})
        if kind == "signature_delta" and self.in_thinking:
            self.thinking[-1]["signature"] = delta.get("signature", "")
            return None
        if kind == "input_json_delta" and index in self.tools:
            arguments = shapes.text(delta.get("partial_json"), "an input_json delta")
            call = {"index": self.tools[index], "function": {"arguments": arguments}}
            return self.chunk({"tool_calls": [call]})
        return None


class ChatViaMessages:
    """The chat endpoint as seen from a Messages-only deployment."""

    api = messages.API

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        shapes.checked(shapes.CHAT_REQUEST, call.raw, "the request")
        body = to_messages(call.raw, route.upstream_model, call.stream)
        return Outbound(self, messages.API, "/v1/messages", body, messages.forwarded_headers({}))

    def stream_watch(self, fields: chat.RequestFields, prompt_tokens: int) -> MessagesStreamAsChat:
        return MessagesStreamAsChat(fields.model, fields.asks_usage)

    answer_usage = staticmethod(messages.answer_usage)

    @staticmethod
    def answer_body(data: bytes, document: object, cost: int | None, fields: chat.RequestFields) -> bytes:
        if document.__class__ is not dict:
            return data
        shapes.checked(shapes.MESSAGES_ANSWER, data, "the provider's answer")
        return from_messages(document, fields.model, cost)

    @staticmethod
    def upstream_error_message(data: bytes) -> tuple[str, bool]:
        return messages.upstream_error_message(data)[0], False


VIA_MESSAGES = ChatViaMessages()
