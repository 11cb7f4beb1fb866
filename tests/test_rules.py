"""The pure rules, in-process and in milliseconds: routing order, the breaker, limiter windows, the
prompt bound and prices, budget arithmetic, and reading usage over a stream's events."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import orjson
import pytest

from hubproxy import errors
from hubproxy.accounts.cache import KeyState, UserState
from hubproxy.accounts.rules import KeyPolicy, Limits
from hubproxy.billing.budget import LocalBudget
from hubproxy.billing.pricing import PROMPT_SLACK, cost_of, prompt_bound, usage_cost
from hubproxy.config import Config, Deployment, Model, Provider, RoutingSettings
from hubproxy.money import parse_price
from hubproxy.periods import WINDOW
from hubproxy.protocols import FINAL, Usage
from hubproxy.protocols.anthropic_messages import StreamWatch as MessagesWatch
from hubproxy.protocols.chat_messages import from_messages, to_messages
from hubproxy.protocols.messages_chat import safe_id, to_chat
from hubproxy.protocols.openai_chat import CHAT, EMBEDDINGS, TOOL_PREAMBLE, StreamWatch
from hubproxy.protocols.responses_chat import call_item
from hubproxy.protocols.responses_chat import to_chat as responses_to_chat
from hubproxy.ratelimit.windows import RateLimiter
from hubproxy.routing.health import HealthBoard
from hubproxy.routing.router import Router


def routed_config(*deployments: Deployment) -> Config:
    config = Config()
    for d in deployments:
        config.providers.setdefault(d.provider, Provider(d.provider, f"http://{d.provider}.test/v1"))
    config.models["m"] = Model("m", deployments[0].provider, deployments[0].upstream_model, 1, 1, deployments)
    return config


def test_weights_split_the_first_choice_and_priority_always_comes_first():
    config = routed_config(
        Deployment("a", "m", priority=0, weight=3), Deployment("b", "m", priority=0, weight=1), Deployment("c", "m", 5)
    )
    router = Router(config, rng=random.Random(7))
    health = HealthBoard(RoutingSettings())
    firsts = Counter()
    for _ in range(4000):
        order = [r.key for r in router.candidates(router.resolve("m"), health)]
        assert order[0] == "c/m" and sorted(order) == ["a/m", "b/m", "c/m"]
        firsts[order[1]] += 1
    assert 0.72 < firsts["a/m"] / 4000 < 0.78  # weight 3 of 4


def test_an_open_breaker_takes_a_deployment_out_until_its_cooldown_ends():
    board = HealthBoard(RoutingSettings(breaker_failures=3, breaker_cooldown=30.0))
    for _ in range(3):
        board.failure("a/m", "HTTP 500", caller=None, now=100.0)
    assert not board.available("a/m", now=129.9)
    assert board.available("a/m", now=130.0)
    board.success("a/m", 12.0)
    assert board.of("a/m").failures_in_a_row == 0


def test_one_callers_error_answers_never_open_the_breaker_two_callers_do():
    board = HealthBoard(RoutingSettings(breaker_failures=3))
    for _ in range(10):
        board.failure("a/m", "HTTP 500", caller=1, now=0.0)
    assert board.available("a/m", now=0.0)
    board.failure("a/m", "HTTP 500", caller=2, now=0.0)
    assert not board.available("a/m", now=0.0)


def test_rpm_window_refuses_with_the_exact_wait_and_slides():
    limiter = RateLimiter()
    limits = Limits(rpm=2)
    limiter.admit("k", limits, 0, now=10.0)
    limiter.admit("k", limits, 0, now=20.0)
    with pytest.raises(errors.GatewayError) as refused:
        limiter.admit("k", limits, 0, now=30.0)
    assert refused.value.status == 429 and refused.value.headers["retry-after-ms"] == str(int(WINDOW - 20) * 1000)
    limiter.admit("k", limits, 0, now=10.0 + WINDOW + 0.001)


def test_tpm_counts_the_hold_then_the_real_tokens_and_parallel_frees_its_slot():
    limiter = RateLimiter()
    limits = Limits(tpm=1000, max_parallel=1)
    entry = limiter.admit("k", limits, 900, now=0.0)
    with pytest.raises(errors.GatewayError):
        limiter.admit("k", limits, 50, now=1.0)  # parallel: one at a time
    limiter.finish("k", entry, 100)
    limiter.admit("k", limits, 850, now=2.0)  # 100 real + 850 fits in 1,000
    with pytest.raises(errors.GatewayError) as too_big:
        limiter.admit("k", Limits(tpm=1000), 1001, now=3.0)
    assert too_big.value.status == 400


@pytest.mark.parametrize(
    "text",
    ["7 a " * 500, "你好世界" * 300, "0123456789" * 100, "a\nb\tc " * 200, "🙂" * 250],
)
def test_the_prompt_bound_is_never_below_the_texts_bytes(text):
    """A byte-level tokenizer makes at most one token per byte of text: the bound must cover that."""
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
    bound = prompt_bound(len(body), CHAT.unseen_tokens(CHAT.read(body), 2560))
    assert bound >= len(text.encode()) + PROMPT_SLACK


def test_images_and_tools_count_what_the_body_does_not_show():
    image = {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}}
    body = orjson.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [image, image]}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        }
    )
    assert CHAT.unseen_tokens(CHAT.read(body), 1000) == 2000 + TOOL_PREAMBLE
    embed = b'{"model":"e","input":"image_url"}'
    assert EMBEDDINGS.unseen_tokens(EMBEDDINGS.read(embed), 1000) == 0


def test_prices_are_exact_integers_and_tiers_price_the_whole_call():
    model = Model("m", "p", "m", parse_price("0.27"), parse_price("1.10"))
    assert cost_of(model, 1_000_000, 0) == 270_000 * 1_000_000
    assert cost_of(model, 3, 7) == 3 * 270_000 + 7 * 1_100_000


def test_cache_reads_and_writes_are_billed_at_their_own_prices_and_the_rest_at_input():
    plain = Model("m", "p", "m", parse_price("3"), parse_price("15"))
    cached = Model("m", "p", "m", parse_price("3"), parse_price("15"), (), parse_price("0.30"), (), parse_price("3.75"))
    assert usage_cost(plain, Usage(100, 10, 60, 30)) == 100 * 3_000_000 + 10 * 15_000_000
    assert (
        usage_cost(cached, Usage(100, 10, 60, 30)) == 10 * 3_000_000 + 60 * 300_000 + 30 * 3_750_000 + 10 * 15_000_000
    )
    assert usage_cost(cached, Usage(10, 0, 8, 8)) == 8 * 300_000 + 2 * 3_750_000  # never more cached tokens than prompt


def hold(budget: LocalBudget, user: UserState, key: KeyState, amount: int) -> None:
    asyncio.run(budget.hold(user, key, amount, "r"))


def test_budget_holds_charges_and_commits_add_up():
    budget = LocalBudget()
    user, key = UserState(1, "u@x.test", True, balance=1000), KeyState("k", 1, "k", True)
    hold(budget, user, key, 600)
    assert user.available == 400
    with pytest.raises(errors.GatewayError) as refused:
        hold(budget, user, key, 401)
    assert refused.value.status == 402
    budget.charge(user, key, 600, 250)  # the call cost less than its hold
    assert (user.available, user.pending, user.reserved) == (750, 250, 0)
    budget.committed(user, 250, 750)
    assert (user.balance, user.pending, user.available) == (750, 0, 750)
    budget.charge(user, key, 0, 10)
    budget.committed(user, 10, None)  # the write failed: the balance stands, nothing stays pending
    assert (user.balance, user.pending) == (750, 0)


def test_budget_refuses_past_a_keys_cap_and_a_free_call_on_a_negative_balance():
    budget = LocalBudget()
    user = UserState(1, "u@x.test", True, balance=10**6)
    capped = KeyState("k", 1, "k", True, policy=KeyPolicy(spend_limit=500))
    hold(budget, user, capped, 300)
    with pytest.raises(errors.GatewayError) as over:
        hold(budget, user, capped, 201)
    assert "spend limit" in over.value.message
    broke = UserState(2, "b@x.test", True, balance=-1)
    with pytest.raises(errors.GatewayError):
        hold(budget, broke, KeyState("k2", 2, "k2", True), 0)


def sse(data: dict | str) -> bytes:
    return data.encode() if isinstance(data, str) else orjson.dumps(data)


def test_stream_usage_is_accumulated_and_the_final_chunk_waits_for_the_end():
    watch = StreamWatch(client_wants_usage=True)
    content = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}], "usage": None}
    running = {
        "choices": [{"index": 0, "delta": {"content": "!"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    last = {
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    assert watch.read(b"e1", sse(content)) == b"e1"
    assert watch.read(b"e2", sse(running)) == b"e2" and watch.usage == Usage(5, 1)
    assert watch.read(b"e3", sse(last)) is None and watch.usage == Usage(5, 2)
    assert watch.read(b"data: [DONE]\n\n", b"[DONE]") is FINAL
    closing = watch.closing(10**6)
    assert b'"cost":0.000001' in closing and closing.endswith(b"data: [DONE]\n\n")


def test_a_usage_only_chunk_is_dropped_when_the_client_did_not_ask_for_usage():
    watch = StreamWatch(client_wants_usage=False)
    usage_only = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    assert watch.read(b"u1", sse(usage_only)) is None
    assert watch.read(b"u2", sse(usage_only)) is None  # the earlier one was not the last word: still dropped
    assert watch.closing(1) == b""


def test_anthropic_usage_is_summed_over_message_start_and_message_delta():
    watch = MessagesWatch()
    start = {
        "type": "message_start",
        "message": {
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 30,
                "cache_creation_input_tokens": 5,
                "output_tokens": 1,
            }
        },
    }
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}
    assert watch.read(b"s", sse(start)) == b"s"
    assert watch.read(b"d", sse(delta)) == b"d"
    assert watch.read(b"stop", sse({"type": "message_stop"})) is FINAL and watch.closing(0) == b"stop"
    assert watch.usage == Usage(45, 42, cached=30, cache_write=5)


def test_a_chat_tool_loop_becomes_alternating_messages_turns_and_back():
    body = orjson.dumps(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "t1", "type": "function", "function": {"name": "w", "arguments": '{"c": 1}'}}
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stop": "END",
            "max_tokens": 4096,  # the server writes the held limit into a call that set none
        }
    )
    sent = orjson.loads(to_messages(body, "claude", stream=False))
    assert sent["system"] == "be brief" and sent["max_tokens"] == 4096 and sent["stop_sequences"] == ["END"]
    assert [t["role"] for t in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == [{"type": "tool_use", "id": "t1", "name": "w", "input": {"c": 1}}]
    assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}
    assert sent["tools"][0]["input_schema"] == {"type": "object"} and sent["tool_choice"] == {"type": "any"}
    answer = {
        "id": "m1",
        "content": [{"type": "tool_use", "id": "t2", "name": "w", "input": {}}],
        "stop_reason": "tool_use",
    }
    back = orjson.loads(from_messages({**answer, "usage": {"input_tokens": 3, "output_tokens": 2}}, "claude", 5))
    assert back["choices"][0]["finish_reason"] == "tool_calls"
    assert back["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "w", "arguments": "{}"}


def test_thinking_becomes_the_chat_reasoning_switch_by_its_budget():
    def sent(thinking):
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "thinking": thinking}
        return orjson.loads(to_chat(orjson.dumps(body), "m", False, True)).get("reasoning_effort")

    assert sent({"type": "enabled", "budget_tokens": 1024}) == "low"
    assert sent({"type": "enabled", "budget_tokens": 8000}) == "medium"
    assert sent({"type": "enabled", "budget_tokens": 32000}) == "high"
    assert sent({"type": "disabled"}) is None


def test_tool_ids_anthropic_clients_would_refuse_are_mapped_the_same_way_every_time():
    assert safe_id("functions.get_weather:0") == "functions_get_weather_0" == safe_id("functions.get_weather:0")
    assert safe_id("call_AbC-1") == "call_AbC-1" and safe_id(None).startswith("toolu_")


def test_a_freeform_tool_goes_up_as_a_one_string_function_and_comes_back_as_a_custom_tool_call():
    body = {
        "model": "m",
        "input": [{"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"}],
        "tools": [{"type": "custom", "name": "apply_patch", "description": "patch"}],
    }
    sent = orjson.loads(responses_to_chat(orjson.dumps(body), "m", False, True))
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["input"]
    assert sent["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"input":"*** Begin Patch"}'
    item = call_item("c2", "apply_patch", '{"input": "*** Begin Patch"}', {"apply_patch"})
    assert item["type"] == "custom_tool_call" and item["input"] == "*** Begin Patch" and item["call_id"] == "c2"
