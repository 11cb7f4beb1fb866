"""OpenAI's Responses API through hubproxy, driven by the official `openai` SDK's `responses.create`:
translated to a chat-only upstream and relayed natively to one that speaks Responses, streamed and
not, with tools; the answers checked against the Open Responses schemas; and Cursor's request shapes
on /chat/completions (Responses-shaped bodies, Anthropic-style system blocks and `cache_control`)."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.conftest import Gateway, raw_request, wait_for
from tests.fake_upstream import REPLY
from tests.open_responses import resource_problems, stream_problems

WEATHER = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "weather",
        "parameters": {"type": "object", "properties": {}},
    }
]


def last_row(hub: Gateway) -> tuple:
    with hub.db() as db:
        return db.execute(
            "SELECT endpoint, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, estimated, status "
            "FROM usage ORDER BY id DESC LIMIT 1"
        ).fetchone()


def chat_calls(hub: Gateway) -> list[dict]:
    return [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"]


def test_responses_create_on_a_chat_only_model_is_translated_and_billed(hub):
    answer = hub.client().responses.create(model="deepseek-chat", input="say hello to me", instructions="be brief")
    assert answer.object == "response" and answer.status == "completed" and answer.id.startswith("resp_")
    assert answer.output_text == REPLY and answer.output[0].id.startswith("msg_")
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (6, 6)
    assert chat_calls(hub)[-1]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "say hello to me"},
    ]
    assert last_row(hub) == ("/responses", 6, 6, 0, 0, 0, "ok")


def test_a_translated_stream_is_the_responses_event_sequence(hub):
    events = list(hub.client().responses.create(model="deepseek-chat", input="say hello to me", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.content_part.added" in kinds and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.split() == REPLY.split()
    done = events[-1].response
    assert done.output_text.split() == REPLY.split() and done.usage.output_tokens == 7
    wait_for(lambda: last_row(hub) == ("/responses", 4, 7, 0, 0, 0, "ok"))


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_come_back_as_function_call_items_and_outputs_go_up_as_tool_messages(hub, stream):
    client = hub.client()
    if stream:
        events = list(client.responses.create(model="tools", input="weather?", tools=WEATHER, stream=True))
        assert "response.function_call_arguments.delta" in [e.type for e in events]
        answer = events[-1].response
    else:
        answer = client.responses.create(model="tools", input="weather?", tools=WEATHER)
    call = answer.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id == "call_1"
    assert call.arguments == ("{}" if stream else '{"city": "Paris"}') and call.id.startswith("fc_")
    turn = [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    client.responses.create(model="deepseek-chat", input=turn, tools=WEATHER)
    history = chat_calls(hub)[-1]["messages"]
    assert history[1]["tool_calls"][0]["id"] == "call_1" and history[2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "sunny",
    }
    assert chat_calls(hub)[-1]["tools"][0]["function"]["name"] == "get_weather"


def test_stored_state_is_refused_clearly_when_the_model_is_translated(hub):
    before = len(hub.upstream.requests)
    for extra, param in (({"previous_response_id": "resp_1"}, "previous_response_id"), ({"store": True}, "store")):
        with pytest.raises(openai.BadRequestError) as refused:
            hub.client().responses.create(model="deepseek-chat", input="hi", **extra)
        assert refused.value.param == param
    assert len(hub.upstream.requests) == before
    with pytest.raises(openai.BadRequestError) as missing:
        hub.client().post("/responses", body={"model": "deepseek-chat"}, cast_to=object)
    assert missing.value.param == "input"


def test_a_responses_upstream_gets_the_clients_bytes_and_is_billed_from_its_usage(hub):
    answer = hub.client().responses.create(model="gpt-native", input="say hello to me")
    assert answer.id == "resp_up" and answer.output_text == REPLY
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/responses"][-1]
    assert sent["raw"].startswith(b'{"max_output_tokens":4096,')  # the limit the hold was sized by, in front
    assert sent["body"] == {"model": "gpt-native", "input": "say hello to me", "max_output_tokens": 4096}
    assert sent["headers"]["Authorization"] == f"Bearer {hub.upstream.api_key}"
    assert last_row(hub) == ("/responses", 4, 6, 2, 1, 0, "ok")
    events = list(hub.client().responses.create(model="gpt-native", input="say hello to me", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage.output_tokens == 6
    wait_for(lambda: last_row(hub) == ("/responses", 4, 6, 2, 1, 0, "ok"))


def test_an_openai_chat_call_still_works_beside_them(hub):
    assert (
        hub.client()
        .chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "hi"}])
        .choices
    )


def test_a_responses_shaped_body_on_chat_completions_is_answered_as_chat(hub):
    """Cursor sends some models `input` instead of `messages` on /chat/completions and reads chat back."""
    url = f"http://127.0.0.1:{hub.port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    body = {
        "model": "deepseek-chat",
        "input": [{"role": "user", "content": "say hello to me"}],
        "instructions": "brief",
    }
    answer = raw_request("POST", url, json.dumps(body).encode(), headers).json()
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"] == REPLY
    assert chat_calls(hub)[-1]["messages"] == [
        {"role": "system", "content": "brief"},
        {"role": "user", "content": "say hello to me"},
    ]
    streamed = {"model": "deepseek-chat", "input": "say hello to me", "stream": True}
    answer = raw_request("POST", url, json.dumps(streamed).encode(), headers)
    chunks = [json.loads(line[6:]) for line in answer.body.decode().splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert answer.status == 200 and text.split() == REPLY.split() and b"data: [DONE]" in answer.body


def test_anthropic_style_chat_bodies_are_plain_chat_upstream_and_keep_cache_marks_for_claude(hub):
    """Cursor sends Claude models a chat body with a top-level `system` of blocks and `cache_control`."""
    url = f"http://127.0.0.1:{hub.port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    mark = {"type": "ephemeral"}
    body = {
        "system": [{"type": "text", "text": "be brief", "cache_control": mark}],
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "use tools", "cache_control": mark}]},
            {"role": "user", "content": [{"type": "text", "text": "say hello to me", "cache_control": mark}]},
        ],
    }
    answer = raw_request("POST", url, json.dumps({**body, "model": "deepseek-chat"}).encode(), headers)
    assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == REPLY
    sent = chat_calls(hub)[-1]
    assert "system" not in sent and b"cache_control" not in json.dumps(sent).encode()
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "system", "content": "use tools"},
        {"role": "user", "content": [{"type": "text", "text": "say hello to me"}]},
    ]
    answer = raw_request("POST", url, json.dumps({**body, "model": "claude-native"}).encode(), headers)
    assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == REPLY
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/messages"][-1]["body"]
    assert sent["system"] == [
        {"type": "text", "text": "be brief", "cache_control": mark},
        {"type": "text", "text": "use tools", "cache_control": mark},
    ]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "say hello to me", "cache_control": mark}]}
    ]


def test_a_responses_client_reaches_a_messages_only_model_through_chat_twice(hub):
    answer = hub.client().responses.create(model="claude-native", input="say hello to me", max_output_tokens=50)
    assert answer.output_text == REPLY and (answer.usage.input_tokens, answer.usage.output_tokens) == (12, 6)
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/messages"][-1]["body"]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "say hello to me"}]}]
    assert sent["max_tokens"] == 50
    events = list(hub.client().responses.create(model="claude-native", input="say hello to me", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.output_text.split() == REPLY.split() and events[-1].response.usage.output_tokens == 6
    wait_for(lambda: last_row(hub) == ("/responses", 12, 6, 5, 0, 0, "ok"))


def test_chat_and_messages_clients_reach_a_responses_only_model(hub):
    answer = hub.client().chat.completions.create(
        model="gpt-native", messages=[{"role": "user", "content": "say hello to me"}]
    )
    assert answer.choices[0].message.content == REPLY and answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (9, 6)  # the fake counts the JSON's words
    assert answer.usage.completion_tokens_details.reasoning_tokens == 1 and answer.usage.model_extra["cost"] > 0
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/responses"][-1]["body"]
    assert sent["input"] == [{"type": "message", "role": "user", "content": "say hello to me"}]
    assert sent["store"] is False
    chunks = list(
        hub.client().chat.completions.create(
            model="gpt-native",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == REPLY.split()
    assert chunks[-1].usage.completion_tokens == 6
    claude = anthropic.Anthropic(base_url=f"http://127.0.0.1:{hub.port}", api_key=hub.key, max_retries=0)
    message = claude.messages.create(model="gpt-native", max_tokens=50, messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text == REPLY and message.usage.output_tokens == 6
    with claude.messages.stream(
        model="gpt-native", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "".join(stream.text_stream).split() == REPLY.split()


def test_bodies_a_translator_cannot_read_are_a_400_not_a_500(hub):
    """`read` checks the top of a body; a translator reads deeper. What it cannot read is the caller's."""
    url = f"http://127.0.0.1:{hub.port}/v1"
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    before = len(hub.upstream.requests)
    for path, body in (
        (
            "/messages",
            {
                "model": "gpt-native",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}],
            },
        ),
        (
            "/chat/completions",
            {
                "model": "gpt-native",
                "messages": [{"role": "assistant", "tool_calls": [{"id": "1", "function": ["x"]}]}],
            },
        ),
        (
            "/chat/completions",
            {
                "model": "claude-native",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
            },
        ),
    ):
        answer = raw_request("POST", url + path, json.dumps(body).encode(), headers)
        assert answer.status == 400 and b"cannot be translated" in answer.body, (path, answer.body)
    assert len(hub.upstream.requests) == before
    assert "Traceback" not in hub.log()


def sse_events(body: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["deepseek-chat", "tools", "reasoning", "claude-native", "gpt-native"])
def test_answers_conform_to_the_open_responses_specification(hub, model, stream):
    """Translated from chat (text, a tool call, reasoning), from Messages through chat, or relayed:
    the whole `response` and every streamed event validate against the Open Responses schemas."""
    body = {
        "model": model,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "say hello to me"}]}],
        "tools": WEATHER,
        "temperature": 0.5,
        "metadata": {"run": "conformance"},
        "reasoning": {"effort": "low"},
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    answer = raw_request("POST", f"http://127.0.0.1:{hub.port}/v1/responses", json.dumps(body).encode(), headers)
    assert answer.status == 200, answer.body
    if stream:
        events = sse_events(answer.body)
        assert stream_problems(events) == []
        resource = events[-1]["response"]
        assert resource["created_at"] == events[0]["response"]["created_at"]
    else:
        resource = json.loads(answer.body)
        assert resource_problems(resource) == []
    assert resource["status"] == "completed" and resource["output"]
    if model != "gpt-native":  # translated: the request's settings are echoed
        assert (resource["temperature"], resource["metadata"]) == (0.5, {"run": "conformance"})
        assert resource["reasoning"] == {"effort": "low", "summary": None}
        assert resource["tools"][0]["name"] == "get_weather" and resource["tools"][0]["strict"] is None
    kinds = [item["type"] for item in resource["output"]]
    thinks = ["reasoning", "message"]  # `reasoning` asked: chat's reasoning_effort, Anthropic's thinking
    expected = {"tools": ["function_call"], "reasoning": thinks, "claude-native": thinks}.get(model, ["message"])
    assert kinds == expected


def test_a_stream_broken_upstream_ends_with_a_conforming_error_event(hub):
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    body = {"model": "die-mid-stream", "input": "say hello to me", "stream": True}
    answer = raw_request("POST", f"http://127.0.0.1:{hub.port}/v1/responses", json.dumps(body).encode(), headers)
    events = sse_events(answer.body)
    assert events[-1]["type"] == "error" and stream_problems(events) == []
    assert events[-1]["message"] == events[-1]["error"]["message"]  # where OpenAI's SDKs read it, too
