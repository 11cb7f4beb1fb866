"""Responses clients on chat-only upstreams: the request into OpenAI chat, the answer (whole or streamed
event by event) back into a Responses `response` and its event sequence.

Chat is the pivot (see `messages_chat.py`). `input` (a string, or items: messages with
`input_text`/`input_image` parts, `function_call`, `function_call_output` by `call_id`),
`instructions` and developer messages become chat messages; function tools and `custom` (freeform)
tools such as Codex's `apply_patch` become chat functions (a freeform one takes one string, `input`,
and comes back as a `custom_tool_call`). hubproxy stores no content, so `previous_response_id` and
`store: true` can only work natively: here they are a clear 400.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING

import orjson

from hubproxy.errors import invalid_request
from hubproxy.protocols import Call, Usage, answered_model, reasoning, shapes
from hubproxy.protocols import openai_chat as chat
from hubproxy.protocols import openai_responses as responses

if TYPE_CHECKING:
    pass

FREEFORM_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
    "required": ["input"],
}
_ids = itertools.count(1)
_TAG = os.urandom(4).hex()


def new_id(prefix: str) -> str:
    return f"{prefix}_{_TAG}{next(_ids):012x}"


def text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        kinds = ("input_text", "output_text", "text")
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") in kinds)
    return ""


def message_of(item: dict) -> dict:
    role = item.get("role", "user")
    role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "input_image" for p in content):
        parts = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "input_image" and part.get("image_url"):
                parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
            elif part.get("type") in ("input_text", "output_text", "text"):
                parts.append({"type": "text", "text": part.get("text", "")})
        return {"role": role, "content": parts}
    return {"role": role, "content": text_of(content)}


def chat_history(doc: dict) -> list[dict]:
    history: list[dict] = []
    if isinstance(doc.get("instructions"), str) and doc["instructions"]:
        history.append({"role": "system", "content": doc["instructions"]})
    items = doc.get("input")
    if isinstance(items, str):
        return [*history, {"role": "user", "content": items}]
    for item in items or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            history.append(message_of(item))
        elif kind in ("function_call", "custom_tool_call"):
            arguments = (
                item.get("arguments")
                if kind == "function_call"
                else orjson.dumps({"input": item.get("input", "")}).decode()
            )
            function = {"name": item.get("name", ""), "arguments": arguments or "{}"}
            call = {"id": str(item.get("call_id", "")), "type": "function", "function": function}
            if history and history[-1]["role"] == "assistant" and not history[-1].get("content"):
                history[-1].setdefault("tool_calls", []).append(call)
            else:
                history.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            text = output if isinstance(output, str) else text_of(output)
            history.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")), "content": text})
        elif kind == "reasoning" and reasoning.is_token(item.get("encrypted_content")):
            history.append(
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": responses.summary_text(item),
                    reasoning.FIELD: item["encrypted_content"],
                }
            )  # reasoning of ours to take back: to the upstream that made it, through its translator
    return history


def chat_tools(tools: list) -> list[dict]:
    out = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "function":
            function = {"name": tool.get("name", ""), "description": tool.get("description", "")}
            function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
            out.append({"type": "function", "function": function})
        elif tool.get("type") == "custom":
            function = {"name": tool.get("name", ""), "description": tool.get("description", "")}
            function["parameters"] = FREEFORM_PARAMETERS
            out.append({"type": "function", "function": function})
    return out


def to_chat(raw: bytes, upstream_model: str, stream: bool, stream_usage: bool) -> bytes:
    doc = orjson.loads(raw)
    if doc.get("previous_response_id"):
        raise invalid_request(
            "'previous_response_id' needs a stored response, and this model is served through a chat upstream "
            "with nothing stored: send the whole conversation in 'input'.",
            param="previous_response_id",
        )
    if doc.get("store") is True:
        raise invalid_request(
            "'store': true is not possible for this model (served through a chat upstream; hubproxy stores "
            "no content): send 'store': false.",
            param="store",
        )
    out: dict = {"model": upstream_model, "messages": chat_history(doc)}
    if doc.get("max_output_tokens"):
        out["max_tokens"] = doc["max_output_tokens"]
    tools = chat_tools(doc.get("tools") or [])
    if tools:
        out["tools"] = tools
        choice = doc.get("tool_choice")
        if isinstance(choice, dict) and choice.get("name"):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        elif choice in ("auto", "required", "none"):
            out["tool_choice"] = choice
    effort = (doc.get("reasoning") or {}).get("effort")
    if isinstance(effort, str):
        out["reasoning_effort"] = effort
    format_ = (doc.get("text") or {}).get("format")
    if isinstance(format_, dict) and format_.get("type") == "json_schema":
        schema = {k: format_[k] for k in ("name", "schema", "strict") if k in format_}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(format_, dict) and format_.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "user"):
        if doc.get(name) is not None:
            out[name] = doc[name]
    if tools and isinstance(doc.get("parallel_tool_calls"), bool):
        out["parallel_tool_calls"] = doc["parallel_tool_calls"]
    if stream:
        out["stream"] = True
        if stream_usage:
            out["stream_options"] = {"include_usage": True}
    return orjson.dumps(out)


def plain_chat(raw: bytes, fields: chat.RequestFields) -> tuple[bytes, chat.RequestFields]:
    """A chat body as plain chat: Cursor sends some models a Responses-shaped body (`input`,
    `instructions`) on /chat/completions and reads chat back; it is made chat once, here, so that
    every leg sees the one shape (a vendor's packed reasoning has no place in a chat answer)."""
    if fields.__class__ is not chat.ChatFields or not fields.responses_shaped:
        return raw, fields
    body = reasoning.without_field(to_chat(raw, fields.model, fields.stream is True, False))
    return body, chat.CHAT.read(body)


def responses_usage(usage: Usage | None) -> dict:
    usage = usage or Usage(0, 0)
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": usage.cache_write},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }


def freeform_names(doc: dict) -> set[str]:
    tools = doc.get("tools") or ()
    return {
        t["name"] for t in tools if isinstance(t, dict) and t.get("type") == "custom" and isinstance(t.get("name"), str)
    }


def call_item(call_id: str, name: str, arguments: str, freeform: set[str], status: str = "completed") -> dict:
    """A chat tool call as a Responses output item: `function_call`, or `custom_tool_call` for a
    freeform tool (its one string argument unwrapped)."""
    if name in freeform:
        try:
            text = orjson.loads(arguments).get("input", "")
        except (orjson.JSONDecodeError, AttributeError):
            text = arguments
        return {
            "id": new_id("ctc"),
            "type": "custom_tool_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "input": text,
        }
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id or new_id("msg"), "type": "message", "status": status, "role": "assistant", "content": [part]}


def reasoning_item(text: str, item_id: str | None = None, encrypted: object = None) -> dict:
    """A reasoning item; `encrypted`: the upstream's own reasoning, packed (`reasoning.py`), which the
    client sends back as it is."""
    item: dict[str, object] = {"id": item_id or new_id("rs"), "type": "reasoning"}
    item["summary"] = [{"type": "summary_text", "text": text}]
    if reasoning.is_token(encrypted):
        item["encrypted_content"] = encrypted
    return item


def response_resource(
    response_id: str, created: int, doc: dict, model: str, output: list, usage: Usage | None, status: str
) -> dict:
    """The `response` object with every field the Open Responses `ResponseResource` requires
    (https://www.openresponses.org, OpenAPI document 2026-04-24, read 2026-12-02); `doc` is what the
    request set that the answer echoes (see `requested`)."""
    settings = doc.get("reasoning") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "completed_at": int(time.time()) if status == "completed" else None,
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": model,
        "previous_response_id": None,
        "instructions": doc.get("instructions"),
        "output": output,
        "error": None,
        "tools": doc.get("tools", []),
        "tool_choice": doc.get("tool_choice", "auto"),
        "truncation": "disabled",
        "parallel_tool_calls": doc.get("parallel_tool_calls", True),
        "text": {"format": {"type": "text"}, **doc.get("text", {})},
        "top_p": doc.get("top_p", 1.0),
        "presence_penalty": doc.get("presence_penalty", 0.0),
        "frequency_penalty": doc.get("frequency_penalty", 0.0),
        "top_logprobs": doc.get("top_logprobs", 0),
        "temperature": doc.get("temperature", 1.0),
        "reasoning": {"effort": settings.get("effort"), "summary": settings.get("summary")},
        "user": doc.get("user"),
        "usage": responses_usage(usage) if status != "in_progress" else None,
        "max_output_tokens": doc.get("max_output_tokens"),
        "max_tool_calls": doc.get("max_tool_calls"),
        "store": False,
        "background": False,
        "service_tier": "default",
        "metadata": doc.get("metadata", {}),
        "safety_identifier": doc.get("safety_identifier"),
        "prompt_cache_key": doc.get("prompt_cache_key"),
    }


def from_chat(document: dict, request: dict, model: str) -> bytes:
    choice = (document.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    freeform = freeform_names(request)
    output: list[dict] = []
    thought = chat.reasoning_text(message)
    if thought or reasoning.is_token(message.get(reasoning.FIELD)):
        output.append(reasoning_item(thought, encrypted=message.get(reasoning.FIELD)))
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(message_item(message["content"]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        call_id = str(call.get("id") or new_id("call"))
        output.append(call_item(call_id, function.get("name", ""), function.get("arguments") or "{}", freeform))
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    if status == "incomplete":
        output = [{**item, "status": "incomplete"} if item["type"] == "message" else item for item in output]
    usage = chat.read_usage(document.get("usage"))
    created = document.get("created")
    created = created if created.__class__ is int and created > 0 else int(time.time())
    resource = response_resource(
        new_id("resp"), created, request, answered_model(document, model), output, usage, status
    )
    return orjson.dumps(resource)


class ChatStreamAsResponses(chat.ChunkReader):
    """A chat stream as the Responses event sequence: `response.created`, `response.in_progress`, then for
    each output item `output_item.added`, its deltas (`reasoning_summary_text.delta`,
    `content_part.added` + `output_text.delta`, `function_call_arguments.delta`) and `.done` events,
    `output_item.done`; once the call is settled, `response.completed` with the whole output and
    usage. Every event carries its `sequence_number`."""

    def __init__(self, request: dict, model: str) -> None:
        super().__init__()
        self.request = request
        self.model = model
        self.freeform = freeform_names(request)
        self.response_id = new_id("resp")
        self.created = int(time.time())
        self.sequence = 0
        self.output: list[dict] = []  # items done
        self.open: dict = {}  # the item being streamed: {"kind", "item", "text", "call"}; {} when none is
        self.calls: dict[int, dict] = {}  # chat tool-call index → its open state

    def event(self, name: str, data: dict) -> bytes:
        data = {"type": name, **data, "sequence_number": self.sequence}
        self.sequence += 1
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def start(self, chunk: dict) -> bytes:
        self.model = answered_model(chunk, self.model)
        resource = response_resource(self.response_id, self.created, self.request, self.model, [], None, "in_progress")
        return self.event("response.created", {"response": resource}) + self.event(
            "response.in_progress", {"response": resource}
        )

    def _open_item(self, kind: str, item: dict) -> bytes:
        out = self._close_item()
        self.open = {"kind": kind, "item": item, "text": []}
        out += self.event("response.output_item.added", {"output_index": len(self.output), "item": item})
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self.event(
                "response.content_part.added",
                {"item_id": item["id"], "output_index": len(self.output), "content_index": 0, "part": part},
            )
        elif kind == "reasoning":
            part = {"type": "summary_text", "text": ""}
            out += self.event(
                "response.reasoning_summary_part.added",
                {"item_id": item["id"], "output_index": len(self.output), "summary_index": 0, "part": part},
            )
        return out

    def _close_item(self) -> bytes:
        if not self.open:
            return b""
        kind, item, text = self.open["kind"], self.open["item"], "".join(self.open["text"])
        index, where = len(self.output), {"item_id": item["id"], "output_index": len(self.output)}
        out = b""
        if kind == "message":
            done = message_item(text, item["id"], "incomplete" if self.finish == "length" else "completed")
            out += self.event("response.output_text.done", {**where, "content_index": 0, "text": text, "logprobs": []})
            out += self.event("response.content_part.done", {**where, "content_index": 0, "part": done["content"][0]})
        elif kind == "reasoning":
            done = reasoning_item(text, item["id"], self.open.get("encrypted"))
            out += self.event("response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text})
            out += self.event(
                "response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": done["summary"][0]}
            )
        else:
            call = self.open["call"]
            done = call_item(call["call_id"], call["name"], text or "{}", self.freeform)
            done["id"] = item["id"]
            if done["type"] == "function_call":
                out += self.event("response.function_call_arguments.done", {**where, "arguments": done["arguments"]})
            else:
                out += self.event("response.custom_tool_call_input.done", {**where, "input": done["input"]})
        self.output.append(done)
        self.open = {}
        return out + self.event("response.output_item.done", {"output_index": index, "item": done})

    def reasoning(self, thought: str, signed: str | None) -> bytes:
        out = b""
        if self.open.get("kind") != "reasoning":
            out += self._open_item("reasoning", {"id": new_id("rs"), "type": "reasoning", "summary": []})
        if signed is not None:
            self.open["encrypted"] = signed
        if thought:
            out += self._text(thought, "response.reasoning_summary_text.delta", {"summary_index": 0})
        return out

    def text(self, text: str) -> bytes:
        out = b""
        if self.open.get("kind") != "message":
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant", "content": []}
            out += self._open_item("message", item)
        return out + self._text(text, "response.output_text.delta", {"content_index": 0, "logprobs": []})

    def tool_call(self, position: int, call_id: object, name: str, arguments: str) -> bytes:
        out = b""
        if position not in self.calls:
            state = {"call_id": str(call_id or new_id("call")), "name": name}
            self.calls[position] = state
            out += self._open_item("call", call_item(state["call_id"], name, "", self.freeform, "in_progress"))
            self.open["call"] = state
        if arguments and self.open.get("call") is self.calls[position]:
            if self.open["item"]["type"] == "function_call":
                out += self._text(arguments, "response.function_call_arguments.delta", {})
            else:
                self.open["text"].append(arguments)  # a freeform tool's input is whole only at the end
        return out

    def _text(self, text: str, name: str, where: dict) -> bytes:
        self.output_events += 1
        self.open["text"].append(text)
        item = self.open["item"]
        return self.event(name, {"item_id": item["id"], "output_index": len(self.output), **where, "delta": text})

    def closing(self, cost: int) -> bytes:
        out = (b"" if self.started else self.start({})) + self._close_item()
        status = "incomplete" if self.finish == "length" else "completed"
        resource = response_resource(
            self.response_id, self.created, self.request, self.model, self.output, self.usage, status
        )
        name = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self.event(name, {"response": resource})

    def error_event(self, message: str) -> bytes:
        self.sequence += 1
        return responses.stream_error(message, self.sequence - 1)


class ResponsesViaChat(chat.ViaChat):
    """The `/responses` endpoint as seen from a chat-only deployment."""

    @staticmethod
    def as_chat(call: Call, upstream_model: str, stream_usage: bool) -> bytes:
        shapes.checked(shapes.RESPONSES_REQUEST, call.raw, "the request")
        return to_chat(call.raw, upstream_model, call.stream, stream_usage)

    def stream_watch(self, fields: responses.ResponsesFields, prompt_tokens: int) -> ChatStreamAsResponses:
        return ChatStreamAsResponses(requested(fields), fields.model)

    @staticmethod
    def answer_body(data: bytes, document: object, cost: int | None, fields: responses.ResponsesFields) -> bytes:
        if document.__class__ is not dict:
            return data
        shapes.checked(shapes.CHAT_ANSWER, data, "the provider's answer")
        return from_chat(document, requested(fields), fields.model)


ECHOED = {
    "instructions": (str,),
    "max_output_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "top_logprobs": (int,),
    "max_tool_calls": (int,),
    "parallel_tool_calls": (bool,),
    "tool_choice": (str, dict),
    "reasoning": (dict,),
    "text": (dict,),
    "metadata": (dict,),
    "user": (str,),
    "safety_identifier": (str,),
    "prompt_cache_key": (str,),
}


def requested(fields: responses.ResponsesFields) -> dict:
    """The request's settings a response echoes, each only where it has the type the answer declares
    (the fields struct holds them, not the body's input)."""
    doc = {}
    for name, types in ECHOED.items():
        value = getattr(fields, name)
        if isinstance(value, types) and not (value.__class__ is bool and bool not in types):
            doc[name] = value
    if fields.tools:
        doc["tools"] = [echoed_tool(t) for t in fields.tools]
    return doc


def echoed_tool(tool: responses.Tool) -> dict:
    """A function tool with the fields `FunctionTool` requires; others (`custom`, …) as declared."""
    if tool.type != "function":
        out: dict[str, object] = {"type": tool.type, "name": tool.name}
        if tool.description is not None:
            out["description"] = tool.description
        if tool.format is not None:
            out["format"] = tool.format
        return out
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description if isinstance(tool.description, str) else None,
        "parameters": tool.parameters if isinstance(tool.parameters, dict) else None,
        "strict": tool.strict if isinstance(tool.strict, bool) else None,
    }


VIA_CHAT = ResponsesViaChat()
