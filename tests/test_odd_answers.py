"""Upstream answers a translator cannot read: whatever shape a provider sends back, a client gets its
own protocol's error (502) or an in-band error event, never a 500 or a traceback in the log. Every
odd answer goes to every client format through every upstream wire API, plain and streamed."""

from __future__ import annotations

import itertools
import json
import os

import pytest

from tests.conftest import Gateway, configure, free_port, raw_request

ODD_JSON = [
    b'{"choices": "x"}',
    b'{"choices": [1]}',
    b'{"choices": [{"message": "x"}]}',
    b'{"choices": [{"message": {"content": 5, "tool_calls": "x"}}]}',
    b'{"choices": [{"message": {"tool_calls": [1, {"function": "x"}]}}]}',
    b'{"choices": [{"message": {"tool_calls": [{"function": {"name": 5, "arguments": 7}}]}}]}',
    b'{"content": "x"}',
    b'{"content": [1, {"type": "tool_use", "input": 5}]}',
    b'{"content": [{"type": "text", "text": 5}]}',
    b'{"output": "x"}',
    b'{"output": [1, {"type": "message", "content": "x"}]}',
    b'{"output": [{"type": "function_call", "arguments": 5}]}',
    b'{"usage": "x"}',
    b'{"usage": {"prompt_tokens": "x"}}',
    b"[1,2]",
    b'"x"',
    b"null",
    b"not json",
    b"",
    b'{"stop_reason": 5, "content": null}',
    b'{"choices": [{"finish_reason": [1], "message": {}}]}',
]
ODD_SSE = [
    b'data: {"choices": "x"}\n\n',
    b'data: {"choices": [1]}\n\n',
    b'data: {"choices": [{"delta": "x"}]}\n\n',
    b'data: {"choices": [{"delta": {"tool_calls": [1]}}]}\n\n',
    b'data: {"choices": [{"delta": {"tool_calls": [{"index": "a", "function": "x"}]}}]}\n\n',
    b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": 5, "arguments": 6}}]}}]}\n\n',
    b'data: {"choices": [{"delta": {"content": 5, "reasoning_content": [1]}}]}\n\n',
    b'event: message_start\ndata: {"type": "message_start", "message": "x"}\n\n',
    b'event: content_block_start\ndata: {"type": "content_block_start", "index": "x", "content_block": 5}\n\n',
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": "x"}\n\n',
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
    b'"delta": {"type": "input_json_delta", "partial_json": 5}}\n\n',
    b'event: message_delta\ndata: {"type": "message_delta", "delta": 5, "usage": "x"}\n\n',
    b'event: response.output_item.added\ndata: {"type": "response.output_item.added", "item": 5}\n\n',
    b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": 5}\n\n',
    b'event: response.completed\ndata: {"type": "response.completed", "response": "x"}\n\n',
    b'event: response.completed\ndata: {"type": "response.completed", '
    b'"response": {"output": [5], "usage": {"input_tokens": "x"}}}\n\n',
    b"event: response.function_call_arguments.delta\n"
    b'data: {"type": "response.function_call_arguments.delta", "delta": [1]}\n\n',
    b"data: [1]\n\n",
    b'data: ["usage", "message_stop", "response.completed"]\n\n',  # what a watch looks for, in a list
    b'data: "x"\n\n',
    b"data: null\n\n",
    b"data: not json\n\n",
]

CLIENTS = {
    "/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/messages": {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
    "/responses": {"input": "hi"},
}
MODELS = ("deepseek-chat", "claude-native", "gpt-native")  # served over chat, Messages, Responses


@pytest.mark.parametrize("stream", [False, True])
def test_odd_upstream_answers_never_make_a_500(hub, stream):
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    seen = set()
    for answer in ODD_SSE if stream else ODD_JSON:
        hub.upstream.scripted = answer
        for (path, body), model in itertools.product(CLIENTS.items(), MODELS):
            sent = json.dumps({**body, "model": model, "stream": stream}).encode()
            got = raw_request("POST", f"http://127.0.0.1:{hub.port}/v1{path}", sent, headers)
            assert got.status != 500, (answer, path, model, got.body)
            seen.add(got.status)
    hub.upstream.scripted = None
    assert "Traceback" not in hub.log(), hub.log()[hub.log().index("Traceback") - 300 :][:3000]
    assert seen <= {200, 502}


BUG = """
import hubproxy.protocols.messages_chat as messages_chat


def from_chat(document, model):
    raise KeyError("a translator bug")


def text(self, text):
    raise KeyError("a translator bug")


messages_chat.from_chat = from_chat
messages_chat.ChatStreamAsMessages.text = text
"""


def test_a_translator_bug_is_logged_as_a_bug_and_answered_as_the_gateways_500(home, cli, upstream, tmp_path):
    """A bug in a translator (here: one that raises KeyError, planted through `sitecustomize` in the
    server's process) is not the caller's 400 nor an unreadable answer: it is logged with its
    traceback, answered as a 500 in the client's error shape (in a stream: an in-band error), and
    the call is billed, as the upstream did the work. The prompt never reaches the log."""
    configure(cli, upstream)
    gateway = Gateway(home, cli, upstream, free_port())
    gateway.key = gateway.new_user("dev@example.com", "5")
    (tmp_path / "planted").mkdir()
    (tmp_path / "planted" / "sitecustomize.py").write_text(BUG)
    os.environ["PYTHONPATH"] = str(tmp_path / "planted")
    try:
        gateway.start()
    finally:
        del os.environ["PYTHONPATH"]
    try:
        headers = {"x-api-key": gateway.key, "content-type": "application/json", "anthropic-version": "2023-06-01"}
        body = {"model": "deepseek-chat", "max_tokens": 20, "messages": [{"role": "user", "content": "secret plans"}]}
        url = f"http://127.0.0.1:{gateway.port}/v1/messages"
        plain = raw_request("POST", url, json.dumps(body).encode(), headers)
        assert plain.status == 500 and plain.json()["error"]["type"] == "api_error", plain.body
        streamed = raw_request("POST", url, json.dumps({**body, "stream": True}).encode(), headers)
        assert streamed.status == 200 and b"event: error" in streamed.body and b"internal error" in streamed.body
        log = gateway.log()
        assert log.count("KeyError: 'a translator bug'") == 2 and "Traceback" in log
        assert "secret plans" not in log and gateway.key not in log
        with gateway.db() as db:
            rows = db.execute("SELECT status, cost > 0 FROM usage ORDER BY id").fetchall()
        assert [cost for _, cost in rows] == [1, 1], "both billed: the provider answered"
    finally:
        gateway.stop()
