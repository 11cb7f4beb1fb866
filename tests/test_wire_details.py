"""Wire details on the translated client-upstream pairs, as a strict client reads them: the time an
answer was made, the prompt size `message_start` states, Responses items and usage as the spec and the
SDK types want them, upstream errors in the client's own shape, invalid input refused rather than
rewritten, and the upstream's model name on every route."""

from __future__ import annotations

import json
import time

import anthropic
import openai
import pytest

from tests.conftest import HELLO, raw_request
from tests.fake_upstream import REASONING_ITEM, REPLY, THINKING_BLOCK
from tests.open_responses import resource_problems

PRICES = ["--input-price", "0.27", "--output-price", "1.10"]


@pytest.fixture
def claude(hub) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{hub.port}", api_key=hub.key, max_retries=0)


def add_model(hub, name: str, provider: str, upstream: str) -> None:
    hub.cli("models", "add", name, "--provider", provider, "--upstream-model", upstream, *PRICES)
    hub.stop()  # picked up at once on a restart (a running server reloads config.toml within a second)
    hub.start()


def test_translated_answers_carry_the_time_they_were_made(hub, claude):
    before = int(time.time()) - 1
    client = hub.client()
    assert client.chat.completions.create(model="claude-native", messages=HELLO).created >= before
    for model in ("claude-native", "gpt-native"):
        chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True))
        assert chunks and all(chunk.created >= before for chunk in chunks), model
    assert client.responses.create(model="claude-native", input="say hello").created_at >= before


def test_a_translated_message_start_states_the_prompt_and_the_cache_fields(hub, claude):
    with claude.messages.stream(model="deepseek-chat", max_tokens=50, messages=HELLO) as stream:
        events = list(stream)
    start = next(e for e in events if e.type == "message_start").message.usage
    assert start.input_tokens > 0
    assert start.cache_creation_input_tokens == 0 and start.cache_read_input_tokens == 0
    final = stream.get_final_message().usage
    assert final.input_tokens == 4  # the exact figure, from the upstream's usage at the end


def test_responses_items_and_usage_are_as_the_spec_and_sdk_types_want(hub):
    hub.client().chat.completions.create(model="gpt-native", messages=HELLO)
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/responses"][-1]["body"]
    assert all(item["type"] == "message" for item in sent["input"])
    cut = hub.client().responses.create(model="honest", input="say hello", max_output_tokens=20)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert [item.status for item in cut.output if item.type == "message"] == ["incomplete"]
    assert "cache_write_tokens" in cut.usage.input_tokens_details.model_fields_set
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    body = json.dumps({"model": "honest", "input": "say hello", "max_output_tokens": 20}).encode()
    assert not resource_problems(raw_request("POST", hub.base_url + "/responses", body, headers).json())


def test_upstream_errors_reach_every_client_in_its_own_shape_with_the_type_their_status_means(hub, claude):
    add_model(hub, "claude-limited", "claude", "rate-limited")
    hub.cli("models", "add", "gpt-limited", "--provider", "oai", "--upstream-model", "rate-limited", *PRICES)
    hub.stop()
    hub.start()
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    for model in ("claude-limited", "gpt-limited"):
        body = json.dumps({"model": model, "messages": HELLO}).encode()
        answer = raw_request("POST", hub.base_url + "/chat/completions", body, headers)
        error = answer.json()["error"]
        assert answer.status == 429 and answer.headers["retry-after"] == "7", model
        assert error["type"] == "rate_limit_error" and set(error) == {"message", "type", "code", "param"}, model
    with pytest.raises(openai.RateLimitError):
        hub.client().responses.create(model="claude-limited", input="hi")
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model="gpt-limited", max_tokens=20, messages=HELLO)
    assert limited.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    "path,body",
    [
        ("/chat/completions", {"model": "claude-native", "messages": [{"role": "robot", "content": "hi"}]}),
        (
            "/chat/completions",
            {"model": "claude-native", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        ),
        ("/messages", {"model": "deepseek-chat", "max_tokens": 9, "messages": [{"role": "robot", "content": "hi"}]}),
        (
            "/messages",
            {"model": "deepseek-chat", "max_tokens": 9, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        ),
        ("/responses", {"model": "deepseek-chat", "input": [{"role": "user", "content": 5}]}),
        ("/responses", {"model": "deepseek-chat", "input": [{"role": "robot", "content": "hi"}]}),
    ],
)
def test_invalid_input_on_a_translated_pair_is_a_400_and_never_billed(hub, path, body):
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json", "x-api-key": hub.key}
    answer = raw_request("POST", hub.base_url + path, json.dumps(body).encode(), headers)
    assert answer.status == 400, answer.body
    assert not hub.upstream.requests
    with hub.db() as db:  # refused before the upstream: nothing charged
        assert db.execute("SELECT coalesce(sum(cost), 0) FROM usage").fetchone()[0] == 0


def test_every_route_answers_with_the_upstreams_model_name(hub, claude):
    add_model(hub, "claude-alias", "claude", "claude-native")
    hub.cli("models", "add", "chat-alias", "--provider", "fake", "--upstream-model", "deepseek-chat", *PRICES)
    hub.cli("models", "add", "gpt-alias", "--provider", "oai", "--upstream-model", "gpt-native", *PRICES)
    hub.stop()
    hub.start()
    client = hub.client()
    assert client.chat.completions.create(model="claude-alias", messages=HELLO).model == "claude-native"
    chunks = list(client.chat.completions.create(model="gpt-alias", messages=HELLO, stream=True))
    assert {chunk.model for chunk in chunks} == {"gpt-native"}
    assert client.responses.create(model="chat-alias", input="hi").model == "deepseek-chat"
    events = list(client.responses.create(model="claude-alias", input="hi", stream=True))
    assert events[-1].response.model == "claude-native"
    assert claude.messages.create(model="chat-alias", max_tokens=20, messages=HELLO).model == "deepseek-chat"
    with claude.messages.stream(model="gpt-alias", max_tokens=20, messages=HELLO) as stream:
        assert stream.get_final_message().model == "gpt-native"


def test_a_limit_below_the_responses_minimum_goes_up_as_16_and_the_answer_is_cut_back(hub, claude):
    client = hub.client()
    answer = client.chat.completions.create(model="gpt-native", messages=HELLO, max_tokens=1)
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/responses"][-1]["body"]
    assert sent["max_output_tokens"] == 16
    assert answer.choices[0].finish_reason == "length" and len(answer.choices[0].message.content) < len(REPLY)
    chunks = list(client.chat.completions.create(model="gpt-native", messages=HELLO, max_tokens=1, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 1 and chunks[-1].choices[0].finish_reason == "length"
    probe = claude.messages.create(model="gpt-native", max_tokens=1, messages=HELLO)  # Claude Code's probe
    assert probe.stop_reason == "max_tokens" and len(probe.content[0].text) < len(REPLY)


def messages_sent(hub) -> list[dict]:
    return [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/messages"]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropics_signed_thinking_goes_to_a_responses_client_and_back(hub, stream):
    """Codex (Responses) on Claude with reasoning on: the signed thinking block comes back as the
    reasoning item's encrypted_content, and the next turn gives Anthropic the block it signed."""
    client = hub.client()
    first = [{"role": "user", "content": "what is the weather?"}]
    ask = {"model": "claude-native", "reasoning": {"effort": "medium"}, "max_output_tokens": 9000}
    if stream:
        events = list(client.responses.create(input=first, stream=True, **ask))
        output = events[-1].response.output
    else:
        output = client.responses.create(input=first, **ask).output
    assert messages_sent(hub)[-1]["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    item = next(i for i in output if i.type == "reasoning")
    assert item.encrypted_content and item.encrypted_content.startswith("hubproxy-anthropic:")
    again = [*first, *(i.model_dump(exclude_none=True) for i in output), {"role": "user", "content": "and now?"}]
    client.responses.create(input=again, **ask)
    assistant = next(m for m in messages_sent(hub)[-1]["messages"] if m["role"] == "assistant")
    assert assistant["content"][0] == THINKING_BLOCK  # as Anthropic signed it


@pytest.mark.parametrize("stream", [False, True])
def test_a_responses_upstreams_encrypted_reasoning_goes_to_a_messages_client_and_back(hub, claude, stream):
    """Claude Code (Messages) on a Responses-only model with thinking on: the reasoning item's
    encrypted_content comes back as the thinking block's signature, and goes up again next turn."""
    ask = {"model": "gpt-native", "max_tokens": 9000, "thinking": {"type": "enabled", "budget_tokens": 2000}}
    first = [{"role": "user", "content": "what is the weather?"}]
    if stream:
        with claude.messages.stream(messages=first, **ask) as events:
            answer = events.get_final_message()
    else:
        answer = claude.messages.create(messages=first, **ask)
    sent = [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/responses"]
    assert sent[-1]["include"] == ["reasoning.encrypted_content"]
    thinking = answer.content[0]
    assert (
        thinking.type == "thinking" and thinking.signature == "hubproxy-openai:" + REASONING_ITEM["encrypted_content"]
    )
    turn = {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in answer.content]}
    claude.messages.create(messages=[*first, turn, {"role": "user", "content": "and now?"}], **ask)
    again = [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/responses"][-1]["input"]
    reasoning = [item for item in again if item.get("type") == "reasoning"]
    assert reasoning == [
        {"type": "reasoning", "summary": REASONING_ITEM["summary"], "encrypted_content": "enc-from-openai"}
    ]


def test_reasoning_of_one_vendor_never_reaches_a_chat_upstream(hub, claude):
    signed = {"type": "thinking", "thinking": "x", "signature": "hubproxy-openai:enc"}
    turn = {"role": "assistant", "content": [signed, {"type": "text", "text": "hi"}]}
    claude.messages.create(model="deepseek-chat", max_tokens=50, messages=[*HELLO, turn, *HELLO])
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"][-1]
    assert b"reasoning_encrypted" not in sent["raw"]


def test_a_role_only_the_upstream_knows_is_relayed_to_a_chat_upstream(hub):
    """vLLM's Llama templates take an `ipython` role: a chat upstream judges its own roles."""
    headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}
    body = {"model": "deepseek-chat", "messages": [*HELLO, {"role": "ipython", "content": "42"}]}
    assert raw_request("POST", hub.base_url + "/chat/completions", json.dumps(body).encode(), headers).status == 200
    assert hub.upstream.requests[-1]["body"]["messages"][-1]["role"] == "ipython"
