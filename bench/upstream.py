"""A fast static OpenAI-compatible upstream for benchmarks (not itself the bottleneck: its direct
figure is reported beside the others). Each streamed chunk's content is its send time in ns, so the
client can measure how long the chunk took to get through a gateway, even one that re-encodes chunks."""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import orjson
from aiohttp import web

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
)


TTFB = web.AppKey("ttfb", float)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if request.app[TTFB]:  # a model's time to first byte (`bench.suite`)
        await asyncio.sleep(request.app[TTFB])
    if b'"stream"' not in body or b'"stream":true' not in body.replace(b" ", b""):  # cheap for long prompts
        return web.Response(body=ANSWER, content_type="application/json")
    params = orjson.loads(body)
    chunks = int(params.get("bench_chunks", 20))
    gap = float(params.get("bench_gap", 0.05))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    if params.get("bench_phase"):  # independent streams: each starts at its own point of the gap
        await asyncio.sleep(random.uniform(0, gap))
    for _ in range(chunks):
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": str(time.time_ns())}}],
        }
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await asyncio.sleep(gap)
    usage = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "bench",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks},
    }
    await resp.write(b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")
    return resp


MESSAGE = orjson.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "bench",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    }
)


async def messages(request: web.Request) -> web.Response:
    """Anthropic's Messages API, not streamed: for `bench.run --messages`."""
    await request.read()
    return web.Response(body=MESSAGE, content_type="application/json")


RESPONSE = orjson.dumps(
    {
        "id": "resp_bench",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "bench",
        "output": [
            {
                "id": "msg_bench",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 12, "output_tokens": 1, "total_tokens": 13},
    }
)


async def responses(request: web.Request) -> web.Response:
    """OpenAI's Responses API, not streamed: for `bench.run --responses`."""
    await request.read()
    return web.Response(body=RESPONSE, content_type="application/json")


GENERATED = orjson.dumps(
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1, "totalTokenCount": 13},
        "modelVersion": "bench",
        "responseId": "gen-bench",
    }
)


async def generate(request: web.Request) -> web.Response:
    """Google's Gemini API, not streamed: for `bench.instructions --gemini`."""
    await request.read()
    return web.Response(body=GENERATED, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttfb-ms", type=float, default=0.0, help="wait this long before answering a chat call")
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    app = web.Application()
    app[TTFB] = args.ttfb_ms / 1000
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1beta/models/{target}", generate)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
