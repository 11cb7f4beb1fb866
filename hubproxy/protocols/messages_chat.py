"""Anthropic Messages clients on chat-only upstreams: the request into OpenAI chat, the answer (whole or
streamed event by event) back into Messages.

Chat is the pivot: every other client format reaches a chat upstream through a module like this one,
so a new format adds its translators to and from chat, not one per pair. What chat cannot carry (`cache_control`,
citations, document blocks) is dropped, not refused. Tool ids are made safe for Anthropic clients
(letters, digits, `_` and `-`) the same way in both directions, so a tool loop keeps matching.
Thinking comes back as `thinking` blocks signed `hubproxy:…`; when a client sends such a block back
in the next turn it reaches the upstream as `reasoning_content`, as DeepSeek and others want it
during tool loops. A request's `thinking` becomes chat's `reasoning_effort` (by its budget).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import orjson

from hubproxy.protocols import Call, Usage, answered_model, reasoning, shapes
from hubproxy.protocols import anthropic_messages as messages
from hubproxy.protocols import openai_chat as chat

if TYPE_CHECKING:
    pass

UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}
STOP_REASONS["content_filter"] = "refusal"
SIGNATURE_PREFIX = "hubproxy:"


def safe_id(raw: object, prefix: str = "toolu_") -> str:
    text = UNSAFE_ID.sub("_", str(raw or ""))
    return text if text else prefix + hashlib.sha256(repr(raw).encode()).hexdigest()[:16]


def signature(thinking: str) -> str:
    """Marks a thinking block as made here from an upstream's `reasoning_content`."""
    return SIGNATURE_PREFIX + hashlib.sha256(thinking.encode()).hexdigest()[:32]


def block_text(content: object) -> str:
    """A string, or the text of a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def image_url(block: dict) -> str | None:
    source = block.get("source") or {}
    if source.get("type") == "url":
        return source.get("url")
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    return None


def user_messages(content: list) -> list[dict]:
    """One Anthropic user turn: its tool results as `tool` messages (first, as chat wants them right after
    the assistant's calls), then the rest as one user message."""
    out: list[dict] = []
    parts: list[dict] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "tool_result":
            text = block_text(block.get("content"))
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": safe_id(block.get("tool_use_id")),
                    "content": f"Error: {text}" if block.get("is_error") else text,
                }
            )
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image" and (url := image_url(block)):
            parts.append({"type": "image_url", "image_url": {"url": url}})
    if parts:
        plain = all(p["type"] == "text" for p in parts)
        joined: str | list[dict] = "\n".join(p["text"] for p in parts) if plain else parts
        out.append({"role": "user", "content": joined})
    return out


def assistant_message(content: list) -> dict:
    message: dict = {"role": "assistant", "content": ""}
    texts, calls, thinking = [], [], []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
            if reasoning.is_token(block.get("signature")):  # an upstream's own reasoning: back to it
                message[reasoning.FIELD] = block["signature"]
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name", ""), "arguments": arguments}
            call = {"id": safe_id(block.get("id")), "type": "function", "function": function}
            calls.append(call)
    message["content"] = "".join(texts) or None
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    return message


def reasoning_effort(thinking: object) -> str | None:
    """Anthropic's `thinking` as OpenAI chat's reasoning switch, `reasoning_effort`, by its budget
    (chat upstreams without the switch ignore it, as DeepSeek and vLLM do unknown fields)."""
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    budget = budget if isinstance(budget, int) else 0
    return "low" if budget < 4096 else ("medium" if budget < 16384 else "high")


def tool_choice(choice: dict) -> object:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return {"any": "required", "none": "none"}.get(kind, "auto") if isinstance(kind, str) else "auto"


def to_chat(raw: bytes, upstream_model: str, stream: bool, stream_usage: bool) -> bytes:
    """The Messages request as a chat request (fields already checked by `anthropic_messages`)."""
    doc = orjson.loads(raw)
    out: dict = {"model": upstream_model, "max_tokens": doc["max_tokens"]}
    history: list[dict] = []
    system = block_text(doc.get("system"))
    if system:
        history.append({"role": "system", "content": system})
    for turn in doc["messages"]:
        content = turn.get("content")
        if isinstance(content, str):
            history.append({"role": turn["role"], "content": content})
        elif turn["role"] == "assistant":
            history.append(assistant_message(content))
        else:
            history.extend(user_messages(content))
    out["messages"] = history
    tools = doc.get("tools")
    if tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.get("name", ""),
                    "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for tool in tools
            if isinstance(tool, dict) and tool.get("name")
        ]
        if isinstance(doc.get("tool_choice"), dict):
            out["tool_choice"] = tool_choice(doc["tool_choice"])
    for ours, theirs in (("stop_sequences", "stop"), ("temperature", "temperature"), ("top_p", "top_p")):
        if doc.get(ours) is not None:
            out[theirs] = doc[ours]
    effort = reasoning_effort(doc.get("thinking"))
    if effort is not None:
        out["reasoning_effort"] = effort
    user = (doc.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    if stream:
        out["stream"] = True
        if stream_usage:
            out["stream_options"] = {"include_usage": True}
    return orjson.dumps(out)


def anthropic_usage(usage: Usage | None) -> dict:
    usage = usage or Usage(0, 0)
    return {
        "input_tokens": usage.input - usage.cached - usage.cache_write,
        "output_tokens": usage.output,
        "cache_read_input_tokens": usage.cached,
        "cache_creation_input_tokens": usage.cache_write,
    }


def start_usage(usage: Usage | None, prompt_tokens: int) -> dict:
    """`message_start`'s usage: the upstream's figures where its first chunk had them, else the
    prompt estimate, as Anthropic sends the prompt's size before any output; the exact figures follow
    in `message_delta`."""
    return {**anthropic_usage(usage or Usage(prompt_tokens, 0)), "output_tokens": 0}


def message_id(chat_id: object) -> str:
    return "msg_" + safe_id(chat_id, "")[-40:] if chat_id else "msg_hubproxy"


def from_chat(document: dict, model: str) -> bytes:
    """A whole chat answer as a Messages answer."""
    choice = (document.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    thought = chat.reasoning_text(message)
    signed = message.get(reasoning.FIELD)
    if thought or reasoning.is_token(signed):
        sig = signed if reasoning.is_token(signed) else signature(thought)
        content.append({"type": "thinking", "thinking": thought, "signature": sig})
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {"arguments": function.get("arguments")}
        content.append(
            {"type": "tool_use", "id": safe_id(call.get("id")), "name": function.get("name", ""), "input": arguments}
        )
    return orjson.dumps(
        {
            "id": message_id(document.get("id")),
            "type": "message",
            "role": "assistant",
            "model": answered_model(document, model),
            "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason"), any(b["type"] == "tool_use" for b in content)),
            "stop_sequence": None,
            "usage": anthropic_usage(chat.read_usage(document.get("usage"))),
        }
    )


def stop_reason(finish_reason: object, called_tools: bool) -> str:
    """Anthropic clients run tools only on `tool_use`; some chat upstreams say `stop` after tool calls."""
    reason = STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    return "tool_use" if called_tools and reason == "end_turn" else reason


def event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ChatStreamAsMessages(chat.ChunkReader):
    """A chat stream's chunks as Messages events, in Anthropic's order: `message_start`, then each
    block's `content_block_start` / `_delta` / `_stop` (thinking, text, one per tool call with its
    arguments as `input_json_delta`), then, once the call is settled, `message_delta` with the stop
    reason and the usage, and `message_stop`."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        super().__init__()
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.block: str | None = None  # the open block's kind
        self.index = -1
        self.thinking: list[str] = []
        self.signed: str | None = None  # the upstream's own reasoning, packed, for the thinking block's signature
        self.tools: dict[int, int] = {}  # chat tool-call index → block index

    def start(self, chunk: dict) -> bytes:
        message: dict[str, object] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": answered_model(chunk, self.model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage(self.usage, self.prompt_tokens),
        }
        return event("message_start", {"type": "message_start", "message": message})

    def _open(self, kind: str, block: dict) -> bytes:
        out = self._close()
        self.index += 1
        self.block = kind
        return out + event(
            "content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block}
        )

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        out = b""
        if self.block == "thinking":
            sig = {"type": "signature_delta", "signature": self.signed or signature("".join(self.thinking))}
            self.signed = None
            out = event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": sig})
            self.thinking = []
        self.block = None
        return out + event("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _emit(self, delta: dict) -> bytes:
        self.output_events += 1
        return event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def reasoning(self, thought: str, signed: str | None) -> bytes:
        out = b""
        if self.block != "thinking":
            out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        if signed is not None:
            self.signed = signed
        if thought:
            self.thinking.append(thought)
            out += self._emit({"type": "thinking_delta", "thinking": thought})
        return out

    def text(self, text: str) -> bytes:
        out = b""
        if self.block != "text":
            out += self._open("text", {"type": "text", "text": ""})
        return out + self._emit({"type": "text_delta", "text": text})

    def tool_call(self, position: int, call_id: object, name: str, arguments: str) -> bytes:
        out = b""
        if position not in self.tools:
            out += self._open("tool_use", {"type": "tool_use", "id": safe_id(call_id), "name": name, "input": {}})
            self.tools[position] = self.index
        if arguments and self.tools[position] == self.index:
            out += self._emit({"type": "input_json_delta", "partial_json": arguments})
        return out

    def closing(self, cost: int) -> bytes:
        out = (b"" if self.started else self.start({})) + self._close()
        reason = stop_reason(self.finish, bool(self.tools))
        delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None}}
        delta["usage"] = anthropic_usage(self.usage)
        return out + event("message_delta", delta) + event("message_stop", {"type": "message_stop"})

    @staticmethod
    def error_event(message: str) -> bytes:
        return messages.stream_error(message)


class MessagesViaChat(chat.ViaChat):
    """The `/messages` endpoint as seen from a chat-only deployment: same fields and errors, the
    upstream's side in chat."""

    @staticmethod
    def as_chat(call: Call, upstream_model: str, stream_usage: bool) -> bytes:
        shapes.checked(shapes.MESSAGES_REQUEST, call.raw, "the request")
        return to_chat(call.raw, upstream_model, call.stream, stream_usage)

    def stream_watch(self, fields: messages.MessagesFields, prompt_tokens: int) -> ChatStreamAsMessages:
        return ChatStreamAsMessages(fields.model, prompt_tokens)

    @staticmethod
    def answer_body(data: bytes, document: object, cost: int | None, fields: messages.MessagesFields) -> bytes:
        if document.__class__ is not dict:
            return data
        shapes.checked(shapes.CHAT_ANSWER, data, "the provider's answer")
        return from_chat(document, fields.model)


VIA_CHAT = MessagesViaChat()
