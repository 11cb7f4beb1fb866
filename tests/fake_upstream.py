"""A fake OpenAI-compatible provider on a real 127.0.0.1 socket, run in its own thread.

Its usage numbers are computed from the request (prompt tokens = words in the messages, completion
tokens = words in the reply), so tests check billing against values they can derive themselves.
The model name picks a behaviour: "fail-500", "rate-limited", "no-usage", "reasoning", "tools",
"slow-stream", "echo-key" (an error body quoting the upstream key), "hang", "die-mid-stream",
"cache-hit" (2 prompt tokens from the provider's cache), "aider-edit" (rewrites note.txt in Aider's
"whole" edit format), "cc-tool" and "codex-tool" (ask Claude
Code's Read tool, or Codex's exec_command, for note.txt, then answer with what the tool said),
"long-answer" (reports 2,000 completion tokens whatever `max_tokens` said, as an upstream that
ignores it would), "honest" (bills as a real provider would at worst: every one of `n` choices —
`best_of` and each prompt of a completions call — runs to the output limit, or to UNLIMITED
tokens when none is sent, and each image part it parses costs IMAGE_TOKENS).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import threading
import time

import orjson
from aiohttp import web

REPLY = "hello from the fake upstream model"
# what "tool-caller" asks for, in every wire API, until the last turn holds the tool's answer
WEATHER_CALL = {
    "id": "call_weather",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
UNLIMITED = 30_000  # what "honest" writes when nothing limits it (a reasoning model's long answer)
IMAGE_TOKENS = 2_000  # what "honest" bills for each image part (below `[billing] image_tokens`)
# Aider's "whole" edit format: the file's path, then its new content fenced
AIDER_EDIT = "Here it is.\n\nnote.txt\n```\nedited through hubproxy\n```\n"
WORKING_DIRECTORY = re.compile(r"Primary working directory: (\S+)")


def cc_tool_call(body: dict) -> tuple[str, str]:
    """Claude Code's Read tool on note.txt in the working directory its system prompt names."""
    found = WORKING_DIRECTORY.search(json.dumps(body.get("messages", [])).replace("\\n", "\n"))
    return "Read", json.dumps({"file_path": f"{found.group(1) if found else '.'}/note.txt"})


def codex_tool_call(body: dict) -> tuple[str, str]:
    """Codex's shell tool, reading note.txt in its working directory."""
    return "exec_command", json.dumps({"cmd": "cat note.txt"})


GEMINI_WORKSPACE = re.compile(r"Workspace Directories:\*\*\n\s+- (\S+)")
WRITTEN = "written through hubproxy\n"


def gemini_write_call(body: dict) -> tuple[str, str]:
    """Gemini CLI's write_file tool, writing note.txt in the workspace its session context names."""
    found = GEMINI_WORKSPACE.search(json.dumps(body).replace("\\n", "\n"))
    return "write_file", json.dumps({"file_path": f"{found.group(1) if found else '.'}/note.txt", "content": WRITTEN})


OPENCODE_DIRECTORY = re.compile(r"Working directory: (\S+)")
QWEN_DIRECTORY = re.compile(r"I'm currently working in the directory: (\S+)")


def opencode_write_call(body: dict) -> tuple[str, str]:
    """OpenCode's write tool, writing note.txt in the working directory its system prompt names."""
    found = OPENCODE_DIRECTORY.search(json.dumps(body).replace("\\n", "\n"))
    return "write", json.dumps({"filePath": f"{found.group(1) if found else '.'}/note.txt", "content": WRITTEN})


def qwen_write_call(body: dict) -> tuple[str, str]:
    """Qwen Code's write_file tool, writing note.txt in the directory its context names."""
    found = QWEN_DIRECTORY.search(json.dumps(body).replace("\\n", "\n"))
    return "write_file", json.dumps({"file_path": f"{found.group(1) if found else '.'}/note.txt", "content": WRITTEN})


# What a Responses upstream's `response` object carries besides its output (as OpenAI's does)
RESPONSE_DEFAULTS = {
    "object": "response",
    "incomplete_details": None,
    "previous_response_id": None,
    "instructions": None,
    "error": None,
    "tools": [],
    "tool_choice": "auto",
    "truncation": "disabled",
    "parallel_tool_calls": True,
    "text": {"format": {"type": "text"}},
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "top_logprobs": 0,
    "temperature": 1.0,
    "reasoning": {"effort": None, "summary": None},
    "max_output_tokens": None,
    "max_tool_calls": None,
    "store": False,
    "background": False,
    "service_tier": "default",
    "metadata": {},
    "safety_identifier": None,
    "prompt_cache_key": None,
}
TOOL_PLAYERS = {
    "cc-tool": cc_tool_call,
    "codex-tool": codex_tool_call,
    "gemini-writer": gemini_write_call,
    "opencode-writer": opencode_write_call,
    "qwen-writer": qwen_write_call,
}


def message_text(content: object) -> str:
    """A Messages turn's text: a string, or its text blocks."""
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return str(content or "")


def count_prompt_words(body: dict) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    prompt = body.get("prompt", body.get("input", ""))
    if isinstance(prompt, list):
        return sum(len(str(p).split()) for p in prompt)
    return len(str(prompt).split())


THINKING_BLOCK = {"type": "thinking", "thinking": "let me think", "signature": "sig-from-anthropic"}
REASONING_ITEM = {
    "id": "rs_up",
    "type": "reasoning",
    "summary": [{"type": "summary_text", "text": "thought it over"}],
    "encrypted_content": "enc-from-openai",
}


SIGNATURE_BYTES = b"\xfb\xef\xbe\xff\xff\xffthought"
GEMINI_SIGNATURE = base64.b64encode(SIGNATURE_BYTES).decode()  # "+" and "/" in it


def signature_bytes(signature: object) -> bytes | None:
    """A thought signature's bytes: protobuf's JSON takes bytes in either base64 alphabet."""
    if not isinstance(signature, str):
        return None
    return base64.urlsafe_b64decode(signature.replace("+", "-").replace("/", "_") + "=" * (-len(signature) % 4))


TOOL_USE = {"type": "tool_use", "id": "toolu_weather", "name": "get_weather", "input": {"city": "Paris"}}
FUNCTION_CALL_ITEM = {
    "id": "fc_weather",
    "type": "function_call",
    "status": "completed",
    "call_id": "call_weather",
    "name": "get_weather",
    "arguments": '{"city": "Paris"}',
}


def messages_tool_answered(body: dict) -> bool:
    """The last Messages turn holds a tool's result."""
    last = (body.get("messages") or [{}])[-1].get("content")
    return isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last)


def thinks(body: dict) -> bool:
    """A Messages request with thinking on: the answer starts with a signed thinking block."""
    return isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"


def image_parts(body: dict) -> int:
    """Image parts in a chat body, as any JSON parser reads them (escaped keys and all)."""
    return sum(
        1
        for message in body.get("messages", [])
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def honest_answer(body: dict, prompt: int, choices: int) -> dict:
    """What "honest" answers: `choices` answers each as long as the limit allows, billed in full."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or UNLIMITED
    prompt += image_parts(body) * IMAGE_TOKENS
    message = {"role": "assistant", "content": REPLY}
    return {
        "id": "chatcmpl-honest",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": i, "message": message, "finish_reason": "length"} for i in range(min(choices, 128))],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": limit * choices,
            "total_tokens": prompt + limit * choices,
        },
    }


def honest_gemini_answer(body: dict, prompt: int) -> dict:
    """What "honest" answers on Gemini's API, reading both of Google's spellings as Google does."""
    config = body.get("generationConfig") or body.get("generation_config") or {}
    limit = config.get("maxOutputTokens") or config.get("max_output_tokens") or UNLIMITED
    count = config.get("candidateCount") or config.get("candidate_count") or 1
    inline = sum(
        1 for c in body.get("contents", []) for p in c.get("parts", []) if "inlineData" in p or "inline_data" in p
    )
    prompt += inline * IMAGE_TOKENS
    text = {"role": "model", "parts": [{"text": REPLY}]}
    candidates = [{"content": text, "finishReason": "MAX_TOKENS", "index": i} for i in range(count)]
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": limit * count,
        "totalTokenCount": prompt + limit * count,
    }
    return {"candidates": candidates, "usageMetadata": usage, "modelVersion": "honest"}


# GET /models: one model every test config serves, one in the deepseek preset's catalog, one nobody
# prices, two with OpenRouter-style per-token prices (one exact, one "varies") and two with
# Together-style per-million prices (one real, one 0 for "not sold per token").
LISTED = [
    {"id": "deepseek-chat", "object": "model"},
    {"id": "deepseek-reasoner", "object": "model"},
    {"id": "new-model", "object": "model"},
    {"id": "listed-model", "object": "model", "pricing": {"prompt": "0.000001", "completion": "0.0000025"}},
    {"id": "varies-model", "object": "model", "pricing": {"prompt": "-1", "completion": "-1"}},
    {"id": "org/open-model", "object": "model", "pricing": {"hourly": 0, "input": 0.3, "output": 0.6}},
    {"id": "org/dedicated-only", "object": "model", "pricing": {"hourly": 1.5, "input": 0, "output": 0}},
]


class FakeUpstream:
    def __init__(self, api_key: str = "sk-upstream-secret-123", tls: tuple[str, str] | None = None) -> None:
        self.api_key = api_key
        self.tls = tls  # (certificate, key): serve https
        self.requests: list[dict] = []
        self.open_streams = 0
        self.cancelled_streams = 0
        self.stream_delay = 0.0
        self.delay = 0.0
        # usage to report instead of the counted one, by wire API ("chat", "messages", "responses"): a
        # price test's hand-worked usage
        self.usage: dict[str, dict] = {}
        self.socket_connects = 0  # WebSockets opened to /v1/responses
        self.reported: list[tuple[str, dict]] = []  # (wire API, the usage object sent), call by call
        self.stream_words = REPLY.split()
        self.scripted: bytes | None = None  # when set, every POST is answered with these bytes, as they are
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    async def _shutdown(self) -> None:
        await self._runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(middlewares=[self._scripted])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/bare/models", self.models_as_a_list)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_get("/v1/responses", self.responses_socket)
        app.router.add_post("/v1beta/models/{target:.+}", self.gemini)
        app.router.add_get("/v1beta/models", self.gemini_models)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        context = None
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    # --- handlers --------------------------------------------------------------------------------
    @web.middleware
    async def _scripted(self, request: web.Request, handler: object) -> web.StreamResponse:
        """A test's odd answer in place of the handler's: JSON for a plain call, SSE for a stream."""
        if self.scripted is None or request.method != "POST":
            return await handler(request)
        body = await self._record(request)
        streamed = isinstance(body, dict) and body.get("stream") is True
        kind = "text/event-stream" if streamed else "application/json"
        return web.Response(body=self.scripted, headers={"Content-Type": kind})

    async def _record(self, request: web.Request) -> dict:
        raw = await request.read()
        body = json.loads(raw)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            {"headers": dict(request.headers), "body": body, "path": request.path, "raw": raw, "peer": peer}
        )
        return body

    def _check_key(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {
                    "error": {
                        "message": "bad upstream key",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status=401,
            )
        return None

    async def models_as_a_list(self, request: web.Request) -> web.Response:
        """Together's shape: the model list itself, not wrapped in {"data": …}."""
        if (refused := self._check_key(request)) is not None:
            return refused
        return web.json_response(LISTED)

    async def models(self, request: web.Request) -> web.Response:
        """OpenAI's list; Anthropic's too (the same path under its origin, the key in `x-api-key`)."""
        self.requests.append({"headers": dict(request.headers), "body": None, "path": request.path, "raw": b""})
        anthropic_style = request.headers.get("x-api-key") == self.api_key and "anthropic-version" in request.headers
        if not anthropic_style and (refused := self._check_key(request)) is not None:
            return refused
        return web.json_response({"object": "list", "data": LISTED})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._check_key(request)) is not None:
            return refused
        body = await self._record(request)
        model = body.get("model", "")
        special = self._special(model)
        if special is not None:
            return special
        if model == "hang":
            await asyncio.sleep(3600)
        if self.delay:
            await asyncio.sleep(self.delay)
        prompt = count_prompt_words(body)
        if model == "honest":
            return web.json_response(honest_answer(body, prompt, body.get("n") or 1))
        if body.get("stream"):
            return await self._stream(request, body, prompt)
        message: dict = {"role": "assistant", "content": self._reply(body)}
        if model == "reasoning":
            message["reasoning_content"] = "let me think"
        if model in TOOL_PLAYERS and not self._tool_answered(body):
            name, arguments = TOOL_PLAYERS[model](body)
            message["content"] = None
            message["tool_calls"] = [
                {"id": "call_read", "type": "function", "function": {"name": name, "arguments": arguments}}
            ]
        if model == "tool-caller" and not self._tool_answered(body):
            message["content"] = None
            message["tool_calls"] = [dict(WEATHER_CALL)]
        if model == "tools":
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        answer = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "system_fingerprint": "fp_fake",
        }
        if model != "no-usage":
            completion = 2000 if model == "long-answer" else len(REPLY.split())
            answer["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_cache_hit_tokens": min(2, prompt) if model == "cache-hit" else 0,
            }
            answer["usage"] = self.usage.get("chat", answer["usage"])
            self.reported.append(("chat", answer["usage"]))
        return web.json_response(answer)

    @staticmethod
    def _tool_answered(body: dict) -> bool:
        messages = body.get("messages") or [{}]
        return messages[-1].get("role") == "tool"

    def _reply(self, body: dict) -> str:
        """REPLY, or for a turn that ends with a tool's answer, what the tool said."""
        if body.get("model") in TOOL_PLAYERS and self._tool_answered(body):
            return "the tool said: " + str(body["messages"][-1].get("content", ""))[:200]
        if body.get("model") == "aider-edit":
            return AIDER_EDIT
        return " ".join(self.stream_words) if body.get("stream") else REPLY

    def _special(self, model: str) -> web.Response | None:
        if model == "fail-500":
            return web.json_response(
                {"error": {"message": "upstream exploded", "type": "server_error", "code": None}}, status=500
            )
        if model == "rate-limited":
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limited"}},
                status=429,
                headers={"Retry-After": "7"},
            )
        if model == "echo-key":
            return web.json_response(
                {
                    "error": {
                        "message": f"key {self.api_key} has no access",
                        "type": "invalid_request_error",
                        "code": None,
                    }
                },
                status=400,
            )
        return None

    async def _stream(self, request: web.Request, body: dict, prompt: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        model = body["model"]
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model}
        self.open_streams += 1
        try:
            first = {"role": "assistant", "content": ""}
            if model == "reasoning":
                first["reasoning_content"] = "thinking"
            if model == "aider-edit":  # its lines matter: streamed a line at a time
                chunks = [first] + [{"content": line} for line in AIDER_EDIT.splitlines(keepends=True)]
            else:
                chunks = [first] + [{"content": w + " "} for w in self._reply(body).split()]
            if model in TOOL_PLAYERS and not self._tool_answered(body):
                name, arguments = TOOL_PLAYERS[model](body)
                call = {"index": 0, "id": "call_read", "type": "function"}
                chunks = [
                    {"role": "assistant", "tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]},
                    {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]},
                ]
            if model == "tool-caller" and not self._tool_answered(body):
                call = {"index": 0, "id": WEATHER_CALL["id"], "type": "function"}
                chunks = [
                    {
                        "role": "assistant",
                        "tool_calls": [{**call, "function": {"name": "get_weather", "arguments": ""}}],
                    },
                    {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
                    {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
                ]
            if model == "tools":
                chunks = [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": "{}"},
                            }
                        ],
                    }
                ]
            for number, delta in enumerate(chunks):
                if model == "die-mid-stream" and number == 2:
                    request.transport.abort()
                    return resp
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                if include_usage:
                    chunk["usage"] = None
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if model == "slow-stream" or self.stream_delay:
                    await asyncio.sleep(self.stream_delay or 0.2)
            final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            await resp.write(b"data: " + orjson.dumps(final) + b"\n\n")
            if include_usage and model != "no-usage":
                completion = len(chunks)
                usage = {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    },
                }
                usage["usage"] = self.usage.get("chat", usage["usage"])
                self.reported.append(("chat", usage["usage"]))
                await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled_streams += 1
            raise
        finally:
            self.open_streams -= 1
        return resp

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API, as Anthropic and the Anthropic-compatible vendors serve it: the key in
        `x-api-key`; usage split over `message_start` (input, cache) and `message_delta` (output)."""
        if request.headers.get("x-api-key") != self.api_key:
            error = {"type": "authentication_error", "message": "invalid x-api-key"}
            return web.json_response({"type": "error", "error": error}, status=401)
        body = await self._record(request)
        model = body.get("model", "")
        if model == "rate-limited":
            error = {"type": "rate_limit_error", "message": "slow down"}
            return web.json_response({"type": "error", "error": error}, status=429, headers={"Retry-After": "7"})
        prompt = sum(len(message_text(m.get("content")).split()) for m in body.get("messages", []))
        usage = {"input_tokens": prompt, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 5}
        if model == "claude-hour-cache":  # two of the three written for an hour (Anthropic's `cache_creation`)
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 2}
        if model == "hour-writer":  # the whole prompt written to a 1-hour cache, one token a byte: the worst case
            written = len(self.requests[-1]["raw"])
            usage = {"input_tokens": 0, "cache_creation_input_tokens": written, "cache_read_input_tokens": 0}
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": written}
        words = REPLY.split()
        output_tokens = len(words)
        if "messages" in self.usage:
            usage = {k: v for k, v in self.usage["messages"].items() if k != "output_tokens"}
            output_tokens = self.usage["messages"]["output_tokens"]
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "stop_sequence": None}
        self.reported.append(("messages", {**usage, "output_tokens": output_tokens}))
        calls_tool = model == "tool-caller" and not messages_tool_answered(body)
        if not body.get("stream"):
            content = [{"type": "text", "text": REPLY}]
            if calls_tool:
                content = [dict(TOOL_USE)]
            if thinks(body):
                content.insert(0, dict(THINKING_BLOCK))
            answer = {
                **message,
                "content": content,
                "stop_reason": "tool_use" if calls_tool else "end_turn",
                "usage": {**usage, "output_tokens": output_tokens},
            }
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(name: str, data: dict) -> None:
            await resp.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")

        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        await send("message_start", {"type": "message_start", "message": start})
        text_index = 0
        if thinks(body):  # a thinking block first, its signature last, as Anthropic streams it
            block = {"type": "thinking", "thinking": "", "signature": ""}
            await send("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
            for delta in (
                {"type": "thinking_delta", "thinking": THINKING_BLOCK["thinking"]},
                {"type": "signature_delta", "signature": THINKING_BLOCK["signature"]},
            ):
                await send("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            await send("content_block_stop", {"type": "content_block_stop", "index": 0})
            text_index = 1
        if calls_tool:
            block = {**TOOL_USE, "input": {}}
            await send(
                "content_block_start", {"type": "content_block_start", "index": text_index, "content_block": block}
            )
            delta = {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}
            await send("content_block_delta", {"type": "content_block_delta", "index": text_index, "delta": delta})
            await send("content_block_stop", {"type": "content_block_stop", "index": text_index})
            final = {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}}
            await send("message_delta", {**final, "usage": {"output_tokens": output_tokens}})
            await send("message_stop", {"type": "message_stop"})
            return resp
        await send(
            "content_block_start",
            {"type": "content_block_start", "index": text_index, "content_block": {"type": "text", "text": ""}},
        )
        await send("ping", {"type": "ping"})
        if model == "die-mid-stream":  # a long answer cut before `message_delta` ever comes
            for _ in range(900):
                delta = {"type": "text_delta", "text": "word "}
                await send("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            request.transport.abort()
            return resp
        for word in words:
            delta = {"type": "text_delta", "text": word + " "}
            await send("content_block_delta", {"type": "content_block_delta", "index": text_index, "delta": delta})
        await send("content_block_stop", {"type": "content_block_stop", "index": text_index})
        final = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
        await send("message_delta", {**final, "usage": {"output_tokens": output_tokens}})
        await send("message_stop", {"type": "message_stop"})
        return resp

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's Responses API: usage only in the whole response and in `response.completed`."""
        if (refused := self._check_key(request)) is not None:
            return refused
        body = await self._record(request)
        if body.get("model") == "rate-limited":  # OpenAI's shape, as its Responses API sends it: no `param`
            error = {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}
            return web.json_response({"error": error}, status=429, headers={"Retry-After": "7"})
        response, events = self._responses_events(body)
        if not body.get("stream"):
            return web.json_response(response)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for name, data in events:
            await resp.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")
        return resp

    async def responses_socket(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's Responses API over a WebSocket: each `response.create` answered with the stream's
        events as text frames; an `error` event (with the HTTP status it would have had) for "rate-limited"."""
        if (refused := self._check_key(request)) is not None:
            return refused
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.socket_connects += 1
        async for message in socket:
            body = json.loads(message.data)
            self.requests.append(
                {"headers": dict(request.headers), "body": body, "path": "ws:/v1/responses", "raw": b""}
            )
            if body.get("model") == "rate-limited":
                error = {"type": "requests", "code": "rate_limit_exceeded", "message": "slow down"}
                await socket.send_str(json.dumps({"type": "error", "status": 429, "error": error}))
                continue
            for _, data in self._responses_events(body)[1]:
                await socket.send_str(orjson.dumps(data).decode())
        return socket

    def _responses_events(self, body: dict) -> tuple[dict, list[tuple[str, dict]]]:
        """The whole response for `body`, and the events a stream of it sends (numbered)."""
        given = body.get("input")
        prompt = len(given.split()) if isinstance(given, str) else len(json.dumps(given).split())
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 6,
            "output_tokens_details": {"reasoning_tokens": 1},
            "total_tokens": prompt + 6,
        }
        usage = self.usage.get("responses", usage)
        self.reported.append(("responses", usage))
        text = {"type": "output_text", "text": REPLY, "annotations": []}
        item = {"id": "msg_up", "type": "message", "status": "completed", "role": "assistant", "content": [text]}
        output = [item]
        if body.get("model") == "tool-caller" and not any(
            isinstance(i, dict) and i.get("type") == "function_call_output"
            for i in (given if isinstance(given, list) else ())
        ):
            output = [dict(FUNCTION_CALL_ITEM)]
        if "reasoning.encrypted_content" in (body.get("include") or []):
            output.insert(0, dict(REASONING_ITEM))
        response = {
            **RESPONSE_DEFAULTS,
            "id": "resp_up",
            "created_at": 1,
            "completed_at": 2,
            "status": "completed",
            "model": body.get("model"),
            "output": output,
            "usage": usage,
        }
        events: list[tuple[str, dict]] = []

        def send(name: str, data: dict) -> None:
            events.append((name, {"type": name, **data, "sequence_number": len(events)}))

        started = {**response, "status": "in_progress", "completed_at": None, "output": [], "usage": None}
        send("response.created", {"response": started})
        if output[0]["type"] == "function_call":
            call = output[0]
            send(
                "response.output_item.added",
                {"output_index": 0, "item": {**call, "arguments": "", "status": "in_progress"}},
            )
            where = {"item_id": call["id"], "output_index": 0}
            send("response.function_call_arguments.delta", {**where, "delta": call["arguments"]})
            send("response.function_call_arguments.done", {**where, "arguments": call["arguments"]})
            send("response.output_item.done", {"output_index": 0, "item": call})
            send("response.completed", {"response": response})
            return response, events
        at = len(output) - 1  # the message's index, after any reasoning item
        if at:
            send("response.output_item.added", {"output_index": 0, "item": {**REASONING_ITEM, "summary": []}})
            send("response.output_item.done", {"output_index": 0, "item": REASONING_ITEM})
        where = {"item_id": "msg_up", "output_index": at}
        send(
            "response.output_item.added", {"output_index": at, "item": {**item, "status": "in_progress", "content": []}}
        )
        send("response.content_part.added", {**where, "content_index": 0, "part": {**text, "text": ""}})
        for word in REPLY.split():
            send("response.output_text.delta", {**where, "content_index": 0, "delta": word + " "})
        send("response.output_text.done", {**where, "content_index": 0, "text": REPLY})
        send("response.content_part.done", {**where, "content_index": 0, "part": text})
        send("response.output_item.done", {"output_index": at, "item": item})
        send("response.completed", {"response": response})
        return response, events

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        """Google's Gemini API: the model and method in the path, the key in `x-goog-api-key`, usage in
        `usageMetadata` on every chunk (the prompt counting its cached part, thoughts beside the
        candidates), a stream of `data:` chunks that ends with its connection. "tool-caller" calls
        get_weather with a thought signature, and refuses a later turn whose call lacks it, as Gemini 3
        does."""
        if request.headers.get("x-goog-api-key") != self.api_key:
            error = {"code": 401, "message": "API key not valid.", "status": "UNAUTHENTICATED"}
            return web.json_response({"error": error}, status=401)
        body = await self._record(request)
        model, _, method = request.match_info["target"].rpartition(":")
        if method == "countTokens":
            return web.json_response({"totalTokens": 1000 + len(body.get("contents", []))})
        if model == "rate-limited":
            error = {"code": 429, "message": "Resource has been exhausted.", "status": "RESOURCE_EXHAUSTED"}
            return web.json_response({"error": error}, status=429, headers={"Retry-After": "7"})
        contents = body.get("contents") or []
        prompt = sum(len(str(p.get("text", "")).split()) for c in contents for p in c.get("parts", []))
        last = contents[-1].get("parts", []) if contents else []
        answered = any("functionResponse" in p for p in last)
        for content in contents:
            for part in content.get("parts", []) if content.get("role") == "model" else ():
                if "functionCall" in part and signature_bytes(part.get("thoughtSignature")) != SIGNATURE_BYTES:
                    error = {
                        "code": 400,
                        "message": "Function call is missing a thought_signature.",
                        "status": "INVALID_ARGUMENT",
                    }
                    return web.json_response({"error": error}, status=400)
        if self.delay:
            await asyncio.sleep(self.delay)
        if model == "honest":  # every candidate to the limit, each inline part at IMAGE_TOKENS
            return web.json_response(honest_gemini_answer(body, prompt))
        words = REPLY.split()
        usage = {
            "promptTokenCount": prompt + 1,
            "candidatesTokenCount": len(words),
            "cachedContentTokenCount": 1,
            "thoughtsTokenCount": 2,
            "totalTokenCount": prompt + 1 + len(words) + 2,
        }
        usage = self.usage.get("gemini", usage)
        self.reported.append(("gemini", usage))
        parts: list[dict] = [{"text": REPLY}]
        if model == "tool-caller" and not answered:
            call = {"name": "get_weather", "args": {"city": "Paris"}}
            parts = [{"functionCall": call, "thoughtSignature": GEMINI_SIGNATURE}]
        if model in TOOL_PLAYERS and not answered:
            name, arguments = TOOL_PLAYERS[model](body)
            call = {"name": name, "args": json.loads(arguments)}
            parts = [{"functionCall": call, "thoughtSignature": GEMINI_SIGNATURE}]
        done = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        answer = {"candidates": [done], "usageMetadata": usage, "modelVersion": model, "responseId": "gem-fake"}
        if method == "generateContent":
            return web.json_response(answer)
        if request.query.get("alt") != "sse":
            return web.json_response(
                {"error": {"code": 400, "message": "alt=sse only here", "status": "INVALID_ARGUMENT"}}, status=400
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        running = {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]}
        if parts[0].get("text"):
            for word in words[:-1]:
                chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": word + " "}]}, "index": 0}]}
                chunk.update(usageMetadata=running, modelVersion=model, responseId="gem-fake")
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n")
                if self.stream_delay:
                    await asyncio.sleep(self.stream_delay)
            done = {**done, "content": {"role": "model", "parts": [{"text": words[-1]}]}}
        await resp.write(b"data: " + orjson.dumps({**answer, "candidates": [done]}) + b"\r\n\r\n")
        return resp

    async def gemini_models(self, request: web.Request) -> web.Response:
        if request.headers.get("x-goog-api-key") != self.api_key:
            return web.json_response(
                {"error": {"code": 401, "message": "bad key", "status": "UNAUTHENTICATED"}}, status=401
            )
        return web.json_response({"models": [{"name": "models/gemini-native"}, {"name": "models/tool-caller"}]})

    async def count_tokens(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response({"input_tokens": 1000 + len(body.get("messages", []))})

    async def completions(self, request: web.Request) -> web.Response:
        if (refused := self._check_key(request)) is not None:
            return refused
        body = await self._record(request)
        prompt = count_prompt_words(body)
        if body["model"] == "honest":
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            prompts = [prompts] if all(isinstance(p, int) for p in prompts) else prompts
            choices = max(body.get("n") or 1, body.get("best_of") or 1) * len(prompts)
            return web.json_response(honest_answer(body, prompt, choices))
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "text": REPLY, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 6, "total_tokens": prompt + 6},
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        if (refused := self._check_key(request)) is not None:
            return refused
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        prompt = count_prompt_words(body)
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        )
