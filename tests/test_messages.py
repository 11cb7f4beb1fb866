"""Anthropic's Messages API through hubproxy, driven by the official `anthropic` SDK: translated to a
chat-only upstream and relayed natively to one that speaks Messages, streamed and not, with tools,
thinking, billing and Anthropic-shaped errors."""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import pytest
from openai import OpenAI

from tests.conftest import PRICE_IN, PRICE_OUT, Gateway, configure, raw_request, serving, wait_for
from tests.fake_upstream import REPLY

HELLO = [{"role": "user", "content": "say hello to me"}]
PICO = 10**12


def cost(prompt: int, output: int) -> int:
    return int(prompt * Decimal(PRICE_IN) * 10**6 + output * Decimal(PRICE_OUT) * 10**6)


@pytest.fixture
def cached_hub(home, cli, upstream):
    """The shared `cached_hub`, with a model that has cache prices."""
    configure(cli, upstream, native=True)
    cli(
        *("models", "add", "claude-cached", "--provider", "claude", "--upstream-model", "claude-native"),
        *("--input-price", "3", "--output-price", "15", "--cached-input-price", "0.30", "--cache-write-price", "3.75"),
    )
    cli(
        *("models", "add", "claude-hour", "--provider", "claude", "--upstream-model", "claude-hour-cache"),
        *("--input-price", "3", "--output-price", "15", "--cached-input-price", "0.30", "--cache-write-price", "3.75"),
        *("--price", "cache_write_1h=6"),
    )
    yield from serving(home, cli, upstream)


def claude(cached_hub: Gateway, key: str | None = None, **kwargs) -> anthropic.Anthropic:
    base = f"http://127.0.0.1:{cached_hub.port}"
    return anthropic.Anthropic(
        base_url=base, api_key=key or cached_hub.key, max_retries=kwargs.pop("max_retries", 0), **kwargs
    )


def last_usage_row(cached_hub: Gateway) -> tuple:
    with cached_hub.db() as db:
        return db.execute(
            "SELECT endpoint, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost, estimated "
            "FROM usage ORDER BY id DESC LIMIT 1"
        ).fetchone()


def upstream_calls(cached_hub: Gateway, path: str) -> list[dict]:
    return [r for r in cached_hub.upstream.requests if r["path"] == path]


def test_a_chat_only_model_answers_the_anthropic_sdk_translated_and_billed(cached_hub):
    answer = claude(cached_hub).messages.create(model="deepseek-chat", max_tokens=50, system="be brief", messages=HELLO)
    assert answer.type == "message" and answer.role == "assistant" and answer.model == "deepseek-chat"
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text == REPLY
    assert answer.stop_reason == "end_turn"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (6, 6)  # the fake counts words: 2 + 4
    sent = upstream_calls(cached_hub, "/v1/chat/completions")[-1]["body"]
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, *HELLO] and sent["max_tokens"] == 50
    assert last_usage_row(cached_hub) == ("/messages", 6, 6, 0, 0, cost(6, 6), 0)


def test_a_translated_stream_arrives_as_anthropic_events_and_is_billed_exactly(cached_hub):
    with claude(cached_hub).messages.stream(model="deepseek-chat", max_tokens=50, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.split() == REPLY.split()
    assert final.stop_reason == "end_turn" and (final.usage.input_tokens, final.usage.output_tokens) == (4, 7)
    assert upstream_calls(cached_hub, "/v1/chat/completions")[-1]["body"]["stream_options"] == {"include_usage": True}
    wait_for(lambda: last_usage_row(cached_hub) == ("/messages", 4, 7, 0, 0, cost(4, 7), 0))


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_become_tool_use_blocks_and_results_go_back_as_tool_messages(cached_hub, stream):
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {}}}]
    client = claude(cached_hub)
    if stream:
        with client.messages.stream(model="tools", max_tokens=50, messages=HELLO, tools=tools) as events:
            answer = events.get_final_message()
    else:
        answer = client.messages.create(model="tools", max_tokens=50, messages=HELLO, tools=tools)
    call = next(b for b in answer.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.id == "call_1" and answer.stop_reason == "tool_use"
    assert call.input == ({} if stream else {"city": "Paris"})
    sent = upstream_calls(cached_hub, "/v1/chat/completions")[-1]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    turn = [
        *HELLO,
        {"role": "assistant", "content": [b.model_dump() for b in answer.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    client.messages.create(model="deepseek-chat", max_tokens=50, messages=turn, tools=tools)
    history = upstream_calls(cached_hub, "/v1/chat/completions")[-1]["body"]["messages"]
    assert (
        history[1]["tool_calls"][0]["id"] == "call_1"
        and history[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    )
    assert history[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_reasoning_comes_back_as_a_signed_thinking_block_and_goes_up_again_next_turn(cached_hub):
    answer = claude(cached_hub).messages.create(model="reasoning", max_tokens=50, messages=HELLO)
    thinking = answer.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "let me think"
    assert thinking.signature.startswith("hubproxy:") and answer.content[1].text == REPLY
    turn = [*HELLO, {"role": "assistant", "content": [b.model_dump() for b in answer.content]}, *HELLO]
    claude(cached_hub).messages.create(model="reasoning", max_tokens=50, messages=turn)
    history = upstream_calls(cached_hub, "/v1/chat/completions")[-1]["body"]["messages"]
    assert history[1]["reasoning_content"] == "let me think" and history[1]["content"] == REPLY


def test_a_messages_upstream_gets_the_clients_bytes_and_its_usage_is_read_with_the_cache(cached_hub):
    client = claude(cached_hub, default_headers={"anthropic-beta": "tools-2024-04-04"})
    answer = client.messages.create(model="claude-native", max_tokens=50, messages=HELLO)
    assert answer.id == "msg_fake" and answer.content[0].text == REPLY
    assert (answer.usage.cache_read_input_tokens, answer.usage.cache_creation_input_tokens) == (5, 3)
    sent = upstream_calls(cached_hub, "/v1/messages")[-1]
    assert sent["headers"]["x-api-key"] == cached_hub.upstream.api_key and "Authorization" not in sent["headers"]
    assert sent["headers"]["anthropic-beta"] == "tools-2024-04-04" and sent["headers"]["anthropic-version"]
    assert cached_hub.key not in json.dumps(sent["headers"])
    assert sent["body"] == {"model": "claude-native", "max_tokens": 50, "messages": HELLO}
    assert last_usage_row(cached_hub) == ("/messages", 12, 6, 5, 3, cost(12, 6), 0)


def test_cache_reads_and_writes_are_billed_at_the_models_cache_prices(cached_hub):
    claude(cached_hub).messages.create(model="claude-cached", max_tokens=50, messages=HELLO)
    expected = 4 * 3_000_000 + 5 * 300_000 + 3 * 3_750_000 + 6 * 15_000_000  # input, read, write, output
    assert last_usage_row(cached_hub) == ("/messages", 12, 6, 5, 3, expected, 0)
    report = {r["group"]: r for r in cached_hub.cli.json("usage", "report", "--by", "model")}
    assert (report["claude-cached"]["cached_tokens"], report["claude-cached"]["cache_write_tokens"]) == (5, 3)
    assert "cache write" in cached_hub.cli("usage", "report").stdout


@pytest.mark.parametrize("stream", [False, True])
def test_cache_writes_kept_an_hour_are_billed_at_their_own_price(cached_hub, stream):
    """Anthropic bills a 1-hour cache write at twice the input price (5-minute ones at 1.25 times): the usage row keeps
    them apart, the cost prices them apart, and the report shows them; through a translation too."""
    if stream:
        with claude(cached_hub).messages.stream(model="claude-hour", max_tokens=50, messages=HELLO) as events:
            events.get_final_message()
    else:
        claude(cached_hub).messages.create(model="claude-hour", max_tokens=50, messages=HELLO)
    expected = 4 * 3_000_000 + 5 * 300_000 + 1 * 3_750_000 + 2 * 6_000_000 + 6 * 15_000_000
    with cached_hub.db() as db:
        row = db.execute("SELECT cache_write_tokens, cache_write_1h_tokens, cost FROM usage ORDER BY id DESC LIMIT 1")
        assert row.fetchone() == (3, 2, expected)
    OpenAI(base_url=f"http://127.0.0.1:{cached_hub.port}/v1", api_key=cached_hub.key).chat.completions.create(
        model="claude-hour", max_tokens=50, messages=HELLO
    )
    with cached_hub.db() as db:
        assert db.execute("SELECT cost FROM usage ORDER BY id DESC LIMIT 1").fetchone() == (expected,)
    report = {r["group"]: r for r in cached_hub.cli.json("usage", "report", "--by", "model")}
    assert report["claude-hour"]["cache_write_1h_tokens"] == 4
    assert "cache write 1h" in cached_hub.cli("usage", "report").stdout
    listed = {m["name"]: m for m in cached_hub.cli.json("models", "list")}
    assert listed["claude-hour"]["cache_write_1h_price"] == "6"
    assert "cache_write_1h_price" not in listed["claude-cached"]


def test_a_native_stream_is_relayed_and_billed_from_message_start_and_message_delta(cached_hub):
    with claude(cached_hub).messages.stream(model="claude-native", max_tokens=50, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.split() == REPLY.split() and final.usage.output_tokens == 6
    wait_for(lambda: last_usage_row(cached_hub) == ("/messages", 12, 6, 5, 3, cost(12, 6), 0))


def test_errors_come_in_anthropic_shape_with_the_status_the_sdk_expects(cached_hub):
    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        claude(cached_hub, key="sk-hp-nope").messages.create(model="deepseek-chat", max_tokens=5, messages=HELLO)
    assert bad_key.value.body["type"] == "error" and bad_key.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude(cached_hub).messages.create(model="no-such-model", max_tokens=5, messages=HELLO)
    assert unknown.value.body["error"]["type"] == "not_found_error"
    url = f"http://127.0.0.1:{cached_hub.port}/v1/messages?beta=true"
    headers = {"x-api-key": cached_hub.key, "content-type": "application/json"}
    before = len(cached_hub.upstream.requests)
    for body, field in (
        ({"model": "deepseek-chat", "messages": HELLO}, "max_tokens"),
        ({"model": "deepseek-chat", "max_tokens": 5, "messages": "hi"}, "messages"),
        ({"model": "deepseek-chat", "max_tokens": -1, "messages": HELLO}, "max_tokens"),
        ({"max_tokens": 5, "messages": HELLO}, "model"),
    ):
        answer = raw_request("POST", url, json.dumps(body).encode(), headers)
        assert answer.status == 400, body
        error = answer.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert error["error"]["message"].startswith(field), error
    assert len(cached_hub.upstream.requests) == before


def test_no_balance_is_a_billing_error_the_sdk_does_not_retry(cached_hub):
    broke = cached_hub.new_user("broke@example.com", "0")
    wait_for(lambda: cached_hub.key_works(broke))
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude(cached_hub, key=broke, max_retries=3).messages.create(
            model="deepseek-chat", max_tokens=5, messages=HELLO
        )
    assert refused.value.status_code == 402 and refused.value.body["error"]["type"] == "billing_error"
    assert refused.value.response.headers["x-should-retry"] == "false"


def test_count_tokens_is_answered_locally_for_a_chat_model_and_by_a_messages_upstream(cached_hub):
    before = len(cached_hub.upstream.requests)
    counted = claude(cached_hub).messages.count_tokens(model="deepseek-chat", messages=HELLO)
    assert counted.input_tokens > 0 and len(cached_hub.upstream.requests) == before
    assert claude(cached_hub).messages.count_tokens(model="claude-native", messages=HELLO).input_tokens == 1001
    asked = upstream_calls(cached_hub, "/v1/messages/count_tokens")[-1]
    assert asked["headers"]["x-api-key"] == cached_hub.upstream.api_key and asked["body"]["model"] == "claude-native"
    with cached_hub.db() as db:
        assert db.execute("SELECT count(*) FROM usage").fetchone()[0] == 0  # counting is not billed


def test_an_openai_client_reaches_a_messages_only_model_translated_and_billed(cached_hub):
    answer = cached_hub.client().chat.completions.create(model="claude-native", messages=HELLO, max_tokens=50)
    assert answer.choices[0].message.content == REPLY and answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 6)
    assert answer.usage.prompt_tokens_details.cached_tokens == 5 and answer.usage.model_extra["cost"] > 0
    sent = upstream_calls(cached_hub, "/v1/messages")[-1]
    assert sent["body"] == {
        "model": "claude-native",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "say hello to me"}]}],
    }
    assert sent["headers"]["anthropic-version"] and sent["headers"]["x-api-key"] == cached_hub.upstream.api_key
    assert last_usage_row(cached_hub) == ("/chat/completions", 12, 6, 5, 3, cost(12, 6), 0)


def test_an_openai_stream_from_a_messages_only_model_ends_with_usage_and_done(cached_hub):
    stream = cached_hub.client().chat.completions.create(
        model="claude-native", messages=HELLO, max_tokens=50, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == REPLY.split()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, 6) and usage.model_extra["cost"] > 0
    wait_for(lambda: last_usage_row(cached_hub) == ("/chat/completions", 12, 6, 5, 3, cost(12, 6), 0))


def test_an_upstream_that_breaks_mid_stream_becomes_an_error_event_and_is_billed_for_what_was_sent(cached_hub):
    url = f"http://127.0.0.1:{cached_hub.port}/v1/messages"
    body = {"model": "die-mid-stream", "max_tokens": 20, "stream": True, "messages": HELLO}
    answer = raw_request(
        "POST", url, json.dumps(body).encode(), {"x-api-key": cached_hub.key, "content-type": "application/json"}
    )
    assert answer.status == 200 and b"event: message_start" in answer.body
    assert b"event: error" in answer.body and b'"type":"api_error"' in answer.body
    assert b"message_stop" not in answer.body
    wait_for(lambda: last_usage_row(cached_hub)[6] == 1)  # estimated
    with cached_hub.db() as db:
        assert db.execute("SELECT status FROM usage ORDER BY id DESC LIMIT 1").fetchone()[0] == "upstream_broken"


def test_image_blocks_reach_a_chat_upstream_as_image_parts(cached_hub):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    linked = {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.png"}}
    content = [{"type": "text", "text": "what is this"}, image, linked]
    claude(cached_hub).messages.create(
        model="deepseek-chat", max_tokens=20, messages=[{"role": "user", "content": content}]
    )
    parts = upstream_calls(cached_hub, "/v1/chat/completions")[-1]["body"]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "what is this"}
    assert parts[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert parts[2] == {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}}


def test_a_rate_limited_key_gets_anthropics_429_with_the_wait(cached_hub):
    cached_hub.cli("users", "add", "slow@example.com", "--balance", "5")
    key = cached_hub.cli.json("keys", "create", "--user", "slow@example.com", "--name", "slow", "--rpm", "1")["key"]
    wait_for(lambda: cached_hub.key_works(key))
    client = claude(cached_hub, key=key)
    client.messages.create(model="deepseek-chat", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="deepseek-chat", max_tokens=5, messages=HELLO)
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    assert 0 < int(limited.value.response.headers["retry-after"]) <= 60


def test_a_streamed_thinking_block_arrives_whole_with_its_signature(cached_hub):
    with claude(cached_hub).messages.stream(model="reasoning", max_tokens=50, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "thinking" and final.content[0].signature.startswith("hubproxy:")
    assert final.content[1].text.split() == REPLY.split()
