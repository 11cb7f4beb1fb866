"""The hold is a real bound on what an honest upstream bills: every choice (`n`, `best_of`, each prompt of
a completions call), every image however its JSON is spelled, an output limit sent when the client set
none, and a cut Messages stream billed from what was relayed."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import openai
import pytest

from hubproxy.billing.pricing import output_limits
from hubproxy.errors import GatewayError
from hubproxy.protocols.anthropic_messages import MESSAGES
from hubproxy.protocols.openai_chat import CHAT, COMPLETIONS
from hubproxy.protocols.openai_responses import RESPONSES
from tests.conftest import HELLO, balance_and_ledger, raw_request, wait_for
from tests.fake_upstream import UNLIMITED

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def escaped(document: dict) -> bytes:
    """JSON with every image part's key and type spelled with a \\u escape, as any parser reads them."""
    return msgspec.json.encode(document).replace(b'"image_url"', b'"image\\u005furl"')


# --- the pure rules -------------------------------------------------------------------------------


def test_output_limits_hold_the_clients_limit_the_models_maximum_or_send_the_default():
    assert output_limits(1000, None, 4096) == (1000, None)
    assert output_limits(100_000, 8192, 4096) == (8192, None)  # the model stops at its own maximum
    assert output_limits(None, 8192, 4096) == (8192, None)
    assert output_limits(None, None, 4096) == (4096, 4096)  # nothing limits it: the default goes up
    assert output_limits(1, None, 4096) == (16, None)  # a Responses upstream makes 16 of a smaller limit


def test_choices_count_n_best_of_and_every_prompt():
    assert CHAT.read(b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 7}').choices == 7
    assert COMPLETIONS.read(b'{"model": "m", "prompt": "x", "best_of": 5, "n": 2}').choices == 5
    assert COMPLETIONS.read(b'{"model": "m", "prompt": ["a", "b", "c"], "n": 2}').choices == 6
    assert COMPLETIONS.read(b'{"model": "m", "prompt": [1, 2, 3]}').choices == 1
    assert COMPLETIONS.read(b'{"model": "m", "prompt": [[1, 2], [3]]}').choices == 2


@pytest.mark.parametrize("body", [b'"n": 129', b'"n": 1000000000', b'"n": 0'])
def test_n_past_the_documented_maximum_is_refused(body):
    with pytest.raises(GatewayError) as refused:
        CHAT.read(b'{"model": "m", "messages": [{"role": "user", "content": "x"}], ' + body + b"}")
    assert refused.value.status == 400 and "from 1 to 128" in refused.value.message


def test_images_are_counted_from_the_parsed_body_whatever_the_escapes():
    chat = escaped(
        {"model": "m", "messages": [{"role": "user", "content": [IMAGE, IMAGE, {"type": "text", "text": "?"}]}]}
    )
    assert b'"image_url"' not in chat
    assert CHAT.unseen_tokens(CHAT.read(chat), 100) == 200
    messages = (
        b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "im\\u0061ge"}, '
        b'{"type": "tool_result", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]}]}'
    )
    assert MESSAGES.unseen_tokens(MESSAGES.read(messages), 100) == 200
    responses = (
        b'{"model": "m", "input": [{"role": "user", "content": [{"type": "input_im\\u0061ge"}]}, '
        b'{"type": "function_call_output", "output": [{"type": "input_image"}]}]}'
    )
    assert RESPONSES.unseen_tokens(RESPONSES.read(responses), 100) == 200


@pytest.mark.parametrize(
    "endpoint,body",
    [
        (CHAT, b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}'),
        (
            MESSAGES,
            b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}'
            b"",
        ),
    ],
)
def test_a_text_part_that_is_not_text_is_refused_before_it_goes_upstream(endpoint, body):
    with pytest.raises(GatewayError) as refused:
        endpoint.read(body)
    assert refused.value.status == 400 and "text" in refused.value.message


def test_a_limit_is_written_into_a_body_without_one_and_over_a_null_one():
    raw = b' {"model": "m", "messages": [{"role": "user", "content": "x"}]}'
    body, fields = CHAT.with_output_limit(raw, CHAT.read(raw), 4096)
    assert msgspec.json.decode(body)["max_tokens"] == 4096 and fields.max_output == 4096
    nulled = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tok\\u0065ns": null}'
    body, _ = CHAT.with_output_limit(nulled, CHAT.read(nulled), 4096)
    assert msgspec.json.decode(body)["max_tokens"] == 4096
    raw = b'{"model": "m", "input": "x"}'
    body, fields = RESPONSES.with_output_limit(raw, RESPONSES.read(raw), 4096)
    assert msgspec.json.decode(body)["max_output_tokens"] == 4096 and fields.max_output == 4096


# --- against an honest upstream, 50 calls at once ------------------------------------------------


async def post_all(url: str, headers: dict[str, str], bodies: list[bytes]) -> list[int]:
    """Raw bodies posted at once (an SDK would re-encode them); the status of each."""
    async with aiohttp.ClientSession() as session:

        async def one(body: bytes) -> int:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*(one(body) for body in bodies))


async def fire_raw(gateway, key: str, path: str, bodies: list[bytes]) -> list[int]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return await post_all(gateway.base_url + path, headers, bodies)


def test_fifty_calls_asking_128_choices_each_cannot_overspend(gateway):
    key = gateway.new_user("choices@example.com", "0.5")
    wait_for(lambda: gateway.key_works(key))
    gateway.upstream.delay = 0.5
    client = gateway.async_client(key=key)

    async def fire():
        calls = [
            client.chat.completions.create(model="honest", messages=HELLO, n=128, max_tokens=1000) for _ in range(50)
        ]
        try:
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(fire())
    ok = [r for r in results if not isinstance(r, Exception)]
    assert ok and all(r.usage.completion_tokens == 128_000 for r in ok)
    assert all(r.status_code == 402 for r in results if isinstance(r, Exception))
    balance, ledger = balance_and_ledger(gateway, "choices@example.com")
    assert 0 <= balance == ledger


def test_n_past_the_maximum_never_goes_upstream(gateway):
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client().chat.completions.create(model="honest", messages=HELLO, n=1_000_000_000)
    assert refused.value.code == "invalid_request_error" or refused.value.status_code == 400
    assert not gateway.upstream.requests


def fifty_raw_calls_stay_covered(gateway, email: str, balance: str, path: str, body: bytes) -> None:
    """50 copies of `body` at once from a new user: some answered, some refused, the balance never below 0."""
    key = gateway.new_user(email, balance)
    wait_for(lambda: gateway.key_works(key))
    gateway.upstream.delay = 0.5
    statuses = asyncio.run(fire_raw(gateway, key, path, [body] * 50))
    assert 200 in statuses and 402 in statuses
    left, ledger = balance_and_ledger(gateway, email)
    assert 0 <= left == ledger


def test_fifty_completions_with_best_of_and_prompt_arrays_cannot_overspend(gateway):
    body = msgspec.json.encode({"model": "honest", "prompt": ["a", "b", "c"], "best_of": 20, "max_tokens": 500})
    fifty_raw_calls_stay_covered(gateway, "best@example.com", "0.2", "/completions", body)


def test_fifty_calls_with_escaped_images_cannot_overspend(gateway):
    content = [{"type": "text", "text": "what is in these?"}] + [IMAGE] * 20
    body = escaped({"model": "honest", "messages": [{"role": "user", "content": content}], "max_tokens": 10})
    fifty_raw_calls_stay_covered(gateway, "images@example.com", "0.05", "/chat/completions", body)


def test_a_call_without_max_tokens_sends_the_held_limit_upstream(gateway):
    key = gateway.new_user("nolimit@example.com", "0.5")
    wait_for(lambda: gateway.key_works(key))
    gateway.upstream.delay = 0.5
    results = asyncio.run(gateway.fire(key, 50, model="honest", max_tokens=None))
    ok = [r for r in results if not isinstance(r, Exception)]
    assert ok and all(r.usage.completion_tokens == 4096 for r in ok)  # [billing] default_max_tokens
    assert all(r["body"]["max_tokens"] == 4096 for r in gateway.upstream.requests)
    balance, ledger = balance_and_ledger(gateway, "nolimit@example.com")
    assert 0 <= balance == ledger


def test_a_model_with_a_known_maximum_is_held_at_it_and_its_body_goes_up_unchanged(gateway):
    priced = ["--input-price", "0.27", "--output-price", "1.10"]
    gateway.cli(
        "models",
        "add",
        "capped-model",
        "--provider",
        "fake",
        "--upstream-model",
        "honest",
        *priced,
        "--max-output-tokens",
        str(UNLIMITED),
    )
    key = gateway.new_user("known@example.com", "0.04")  # covers one hold of 30,000 output tokens, not two
    wait_for(lambda: gateway.key_works(key))
    wait_for(
        lambda: raw_request("GET", gateway.base_url + "/models", headers={"Authorization": f"Bearer {key}"}).body.count(
            b"capped-model"
        )
    )
    results = asyncio.run(gateway.fire(key, 5, model="capped-model", max_tokens=None))
    ok = [r for r in results if not isinstance(r, Exception)]
    assert len(ok) == 1 and ok[0].usage.completion_tokens == UNLIMITED
    assert "max_tokens" not in gateway.upstream.requests[-1]["body"]
    balance, ledger = balance_and_ledger(gateway, "known@example.com")
    assert 0 <= balance == ledger


# --- a native Messages stream cut before its usage ---------------------------------------------


def test_a_messages_stream_cut_before_message_delta_is_billed_from_what_was_relayed(hub):
    priced = ["--input-price", "0.27", "--output-price", "1.10"]
    hub.cli("models", "add", "claude-cut", "--provider", "claude", "--upstream-model", "die-mid-stream", *priced)
    headers = {"x-api-key": hub.key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    body = msgspec.json.encode({"model": "claude-cut", "max_tokens": 2000, "stream": True, "messages": HELLO})
    url = hub.base_url + "/messages"
    wait_for(lambda: raw_request("POST", url, body, headers).status == 200, timeout=5)
    with hub.db() as db:
        rows = db.execute(
            "SELECT completion_tokens, estimated FROM usage WHERE model = 'claude-cut' ORDER BY created_at"
        ).fetchall()
    assert rows and all(estimated == 1 and completion >= 900 for completion, estimated in rows)


def test_only_the_limit_an_upstream_reads_counts():
    chat = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_output_tokens": 99999}'
    assert CHAT.read(chat).max_output is None  # a chat upstream ignores it: the default is sent instead
    cursor = b'{"model": "m", "input": "x", "max_output_tokens": 99999, "max_tokens": 5}'
    assert CHAT.read(cursor).max_output == 99999
    both = (
        b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9, "max_completion_tokens": 7}'
    )
    assert CHAT.read(both).max_output == 9


def test_a_provider_that_limits_with_max_completion_tokens_gets_it(gateway):
    """OpenAI's reasoning models refuse `max_tokens`: the openai preset's provider gets the limit as
    `max_completion_tokens`, the field it reads, and the hold stays a bound."""
    fake = ["--base-url", gateway.upstream.base_url, "--api-key-env", "UPSTREAM_KEY", "--no-models"]
    gateway.cli("providers", "add", "oai-chat", "--preset", "openai", *fake)
    priced = ["--input-price", "0.27", "--output-price", "1.10"]
    gateway.cli("models", "add", "honest-oai", "--provider", "oai-chat", "--upstream-model", "honest", *priced)
    key = gateway.new_user("oai@example.com", "0.5")
    wait_for(lambda: gateway.key_works(key))
    wait_for(
        lambda: (
            b"honest-oai"
            in raw_request("GET", gateway.base_url + "/models", headers={"Authorization": f"Bearer {key}"}).body
        )
    )
    answer = gateway.client(key=key).chat.completions.create(model="honest-oai", messages=HELLO)
    sent = gateway.upstream.requests[-1]["body"]
    assert sent["max_completion_tokens"] == 4096 and "max_tokens" not in sent
    assert answer.usage.completion_tokens == 4096
    tiny = gateway.new_user("oai-tiny@example.com", "0.02")  # covers four holds of 4,096 output tokens
    wait_for(lambda: gateway.key_works(tiny))
    gateway.upstream.delay = 0.5
    results = asyncio.run(gateway.fire(tiny, 50, model="honest-oai", max_tokens=None))
    assert any(isinstance(r, openai.APIStatusError) and r.status_code == 402 for r in results)
    balance, ledger = balance_and_ledger(gateway, "oai-tiny@example.com")
    assert 0 <= balance == ledger


def test_a_translated_call_without_a_limit_goes_up_with_the_one_it_was_held_at(hub):
    """Messages requires max_tokens: a chat call with none, to a Messages-only model whose maximum is
    2,000, goes up with 2,000 (what was held), not a translator's own default."""
    priced = ["--input-price", "0.27", "--output-price", "1.10"]
    hub.cli(
        "models",
        "add",
        "claude-small",
        "--provider",
        "claude",
        "--upstream-model",
        "claude-native",
        *priced,
        "--max-output-tokens",
        "2000",
    )
    wait_for(
        lambda: (
            b"claude-small"
            in raw_request("GET", hub.base_url + "/models", headers={"Authorization": f"Bearer {hub.key}"}).body
        )
    )
    hub.client().chat.completions.create(model="claude-small", messages=HELLO)
    hub.client().responses.create(model="claude-small", input="hello")
    sent = [r["body"]["max_tokens"] for r in hub.upstream.requests if r["path"] == "/v1/messages"]
    assert sent == [2000, 2000]


def test_fifty_responses_calls_without_a_limit_cannot_overspend(hub):
    """A Responses client that sets no `max_output_tokens`, on a chat upstream that bills to the limit."""
    key = hub.new_user("resp@example.com", "0.05")
    wait_for(lambda: hub.key_works(key))
    hub.upstream.delay = 0.5
    body = msgspec.json.encode({"model": "honest", "input": "hello"})
    statuses = asyncio.run(fire_raw(hub, key, "/responses", [body] * 50))
    assert 200 in statuses and 402 in statuses
    assert all(r["body"]["max_tokens"] == 4096 for r in hub.upstream.requests if r["path"] == "/v1/chat/completions")
    balance, ledger = balance_and_ledger(hub, "resp@example.com")
    assert 0 <= balance == ledger


def test_fifty_calls_whose_whole_prompt_goes_to_a_one_hour_cache_cannot_overspend(hub):
    """Anthropic bills a prompt written to a 1-hour cache at twice the input price: the hold prices the
    prompt at the dearest class it may be billed as, so 50 Messages calls whose upstream writes every
    prompt byte to that cache cannot spend past a small balance (held at the input price, each would
    have cost about twice its hold)."""
    prices = ["--input-price", "3", "--output-price", "15", "--cache-write-price", "3.75"]
    hub.cli("models", "add", "hour-writer", "--provider", "claude", *prices, "--price", "cache_write_1h=6")
    key = hub.new_user("hour@example.com", "0.25")
    wait_for(lambda: hub.key_works(key))
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    wait_for(lambda: raw_request("GET", hub.base_url + "/models", headers=headers).body.count(b"hour-writer") > 0)
    prompt = "cache this context for the next hour " * 100
    body = msgspec.json.encode(
        {"model": "hour-writer", "max_tokens": 10, "messages": [{"role": "user", "content": prompt}]}
    )
    hub.upstream.delay = 0.5
    statuses = asyncio.run(post_all(hub.base_url + "/messages", headers, [body] * 50))
    assert 200 in statuses and 402 in statuses, statuses
    balance, ledger = balance_and_ledger(hub, "hour@example.com")
    assert 0 <= balance == ledger
    with hub.db() as db:
        written, over = db.execute(
            "SELECT min(cache_write_1h_tokens), max(over_reservation) FROM usage WHERE model = 'hour-writer'"
        ).fetchone()
    assert written >= len(body) and over == 0, "billed as the whole prompt written for an hour, within its hold"


def test_fifty_calls_that_search_the_web_cannot_overspend(hub):
    """Anthropic bills each web search ($10 per 1,000) on top of the tokens: the hold counts the most a
    call's web search tool may make (`max_uses`), so 50 calls whose upstream searches that often cannot
    spend past a small balance (held for tokens only, each would cost ~40x its hold)."""
    prices = ["--input-price", "3", "--output-price", "15", "--price", "web_search=10000"]
    hub.cli("models", "add", "searcher", "--provider", "claude", *prices)
    key = hub.new_user("search@example.com", "0.05")
    wait_for(lambda: hub.key_works(key))
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    wait_for(lambda: raw_request("GET", hub.base_url + "/models", headers=headers).body.count(b"searcher") > 0)
    hub.upstream.usage["messages"] = {
        "input_tokens": 30,
        "output_tokens": 10,
        "server_tool_use": {"web_search_requests": 2},
    }
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
    body = msgspec.json.encode({"model": "searcher", "max_tokens": 10, "messages": HELLO, "tools": [tool]})
    hub.upstream.delay = 0.5
    statuses = asyncio.run(post_all(hub.base_url + "/messages", headers, [body] * 50))
    assert 200 in statuses and 402 in statuses, statuses
    balance, ledger = balance_and_ledger(hub, "search@example.com")
    assert 0 <= balance == ledger
    with hub.db() as db:
        searches, over = db.execute(
            "SELECT sum(web_search_requests), max(over_reservation) FROM usage WHERE model = 'searcher'"
        ).fetchone()
    assert searches == 2 * statuses.count(200) and over == 0, "every search billed, within its hold"
