"""Prices from the genai-prices catalog, each token class billed as the provider bills it, and the
price history. Each expected cost below is worked out by hand from the provider's published prices
(the page in the comment; the figures as genai-prices carries them, pinned by the test extra), in
micro-USD per 1M tokens times tokens = pico-USD."""

from __future__ import annotations

import csv
import io
import random
import time
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import anthropic
import pytest
from genai_prices import Usage as CatalogUsage
from hypothesis import given, settings
from hypothesis import strategies as st

from hubproxy.billing.pricing import hold_cost, usage_cost
from hubproxy.config import ConfigError
from hubproxy.config.listprices import list_price, priced_info, providers
from hubproxy.tokens import Usage
from tests.conftest import HELLO, configure, raw_request, serving, wait_for
from tests.test_dashboard import admin_link, base
from tests.test_metrics import scrape, value

M = 1_000_000  # one USD per 1M tokens, in micro-USD per 1M
CATALOG = version("genai-prices")


@pytest.fixture
def priced_hub(home, cli, upstream, monkeypatch):
    """A gateway whose models are priced from the catalog, each provider on the fake upstream."""
    configure(cli, upstream, native=True)
    base = upstream.base_url
    key = ["--api-key-env", "UPSTREAM_KEY", "--no-models"]
    origin = base.removesuffix("/v1")  # a Messages base URL is the origin, as api.anthropic.com's
    cli("providers", "add", "anth", "--preset", "anthropic", "--base-url", origin, "--api", "messages", *key)
    cli("providers", "add", "oa", "--preset", "openai", "--base-url", base, "--api", "responses", *key)
    cli("providers", "add", "grok", "--preset", "xai", "--base-url", base, *key)
    cli("providers", "add", "ds", "--preset", "deepseek", "--base-url", base, *key)
    for model, provider in (
        ("claude-sonnet-4-5", "anth"),
        ("gpt-5.4-mini", "oa"),
        ("grok-4.7", "grok"),
        ("deepseek-v4-flash", "ds"),
    ):
        cli("models", "add", model, "--provider", provider)
    yield from serving(home, cli, upstream)


def last_cost(gateway, model: str) -> tuple[int, str]:
    with gateway.db() as db:
        return db.execute(
            "SELECT cost, price_id FROM usage WHERE model = ? ORDER BY id DESC LIMIT 1", (model,)
        ).fetchone()


def wait_served(gateway, model: str) -> None:
    """Until the running server lists `model` (it reads config.toml changes within a second)."""
    wait_for(lambda: model in {m.id for m in gateway.client().models.list()})


def claude(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gateway.port}", api_key=gateway.key, max_retries=0)


ANTHROPIC_CACHES = {  # 1,000 plain, 2,000 read from the cache, 3,000 written (1,000 of them for an hour)
    "input_tokens": 1000,
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000},
    "output_tokens": 500,
}


def test_models_add_takes_the_catalog_price_and_says_where_it_came_from(cli, upstream):
    cli("init")
    cli("providers", "add", "anth", "--preset", "anthropic", "--base-url", upstream.base_url, "--no-models")
    shown = cli("models", "add", "claude-sonnet-4-5", "--provider", "anth").stdout
    origin = f"prices from genai-prices {CATALOG}: anthropic/claude-sonnet-4-5 (https://www.anthropic.com/pricing"
    assert origin in shown
    model = {m["name"]: m for m in cli.json("models", "list")}["claude-sonnet-4-5"]
    # https://platform.claude.com/docs/en/about-claude/pricing: $3 in, $15 out, cache hits 0.1x, 5-minute
    # writes 1.25x, 1-hour writes 2x; over 200k prompt tokens $6 / $22.50 and the same multiples
    assert (model["input_price"], model["output_price"], model["cached_input_price"]) == ("3", "15", "0.3")
    assert (model["cache_write_price"], model["cache_write_1h_price"]) == ("3.75", "6")
    assert model["web_search_price"] == "10000", "$10 per 1,000 searches, in USD per 1M as every price"
    assert model["tiers"] == [
        {
            "above_prompt_tokens": 200000,
            "input_price": "6",
            "output_price": "22.5",
            "cached_input_price": "0.6",
            "cache_write_price": "7.5",
            "cache_write_1h_price": "12",
        }
    ]
    unknown = cli("models", "add", "no-such-model", "--provider", "anth", ok=False)
    assert unknown.exit_code == 1 and unknown.output.count("\n") == 1
    assert "has no price for 'no-such-model'" in unknown.output and "--input-price" in unknown.output
    assert "no-such-model" not in {m["name"] for m in cli.json("models", "list")}, "never served at $0"
    typed = cli.json(
        "models", "add", "claude-haiku-4-5", "--provider", "anth", "--input-price", "9", "--output-price", "9"
    )
    assert typed["input_price"] == "9" and typed["price_source"] == "typed", "explicit prices win"
    cli("providers", "add", "mine", "--base-url", "http://127.0.0.1:9/v1")
    nowhere = cli("models", "add", "m", "--provider", "mine", ok=False)
    assert "does not know provider 'mine'" in nowhere.output


def test_prices_check_apply_and_history(cli, upstream):
    cli("init")
    cli("providers", "add", "anth", "--preset", "anthropic", "--base-url", upstream.base_url, "--no-models")
    cli("models", "add", "claude-haiku-4-5", "--provider", "anth")
    assert cli("prices", "check").exit_code == 0
    cli(
        "models",
        "add",
        "claude-haiku-4-5",
        "--provider",
        "anth",
        "--input-price",
        "0.5",
        "--output-price",
        "5",
        "--replace",
    )
    check = cli("prices", "check", "--json", ok=False)
    assert check.exit_code == 1
    differences = {
        (d["price"], d["configured"], d["catalog"]) for d in cli.json("prices", "check", ok=False)["differences"]
    }
    assert ("input_price", "0.5", "1") in differences and ("cache_write_1h_price", None, "2") in differences
    cli("prices", "apply", "--yes")
    assert cli("prices", "check").exit_code == 0
    history = cli.json("prices", "history")
    catalog = f"genai-prices {CATALOG}"
    assert [h["source"].split(":")[0] for h in history] == [catalog, "typed", catalog]
    assert history[0]["old"]["input_price"] == "0.5" and history[0]["new"]["input_price"] == "1"
    assert history[1]["source"] == "typed: hubproxy models add" and history[1]["actor"]
    table = cli("prices", "history").stdout
    assert "    input_price 0.5 → 1\n" in table and "  from typed: hubproxy models add\n" in table


def test_an_edit_of_config_toml_is_recorded_when_the_server_reads_it(gateway):
    config = gateway.home / "config.toml"
    config.write_text(
        config.read_text().replace('[models.ds]\ninput_price = "0.27"', '[models.ds]\ninput_price = "0.29"')
    )
    wait_for(
        lambda: any(
            h["model"] == "ds" and h["source"].startswith("config.toml")
            for h in gateway.cli.json("prices", "history", "ds")
        )
    )
    edit = gateway.cli.json("prices", "history", "ds")[0]
    assert edit["actor"] == "config.toml" and edit["new"]["input_price"] == "0.29"


def test_anthropic_cache_classes_each_at_their_price_from_every_client(priced_hub):
    priced_hub.upstream.usage["messages"] = ANTHROPIC_CACHES
    # 1000 x 3 + 2000 x 0.30 + 2000 x 3.75 + 1000 x 6 + 500 x 15 = 24,600 micro-USD
    expected = 1000 * 3 * M + 2000 * 300_000 + 2000 * 3_750_000 + 1000 * 6 * M + 500 * 15 * M
    wait_served(priced_hub, "claude-sonnet-4-5")
    claude(priced_hub).messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HELLO)
    assert last_cost(priced_hub, "claude-sonnet-4-5")[0] == expected
    priced_hub.client().chat.completions.create(model="claude-sonnet-4-5", messages=HELLO)  # translated to Messages
    assert last_cost(priced_hub, "claude-sonnet-4-5")[0] == expected
    list(priced_hub.client().responses.create(model="claude-sonnet-4-5", input="hi", stream=True))
    assert last_cost(priced_hub, "claude-sonnet-4-5")[0] == expected
    # each class counted where the calls are counted: the usage rows' daily totals and /metrics
    report = {r["group"]: r for r in priced_hub.cli.json("usage", "report")}["claude-sonnet-4-5"]
    assert (report["cache_write_tokens"], report["cache_write_1h_tokens"], report["cached_tokens"]) == (
        9000,
        3000,
        6000,
    )
    text = scrape(priced_hub).body.decode()
    assert value(text, "hubproxy_cache_write_tokens_total", model="claude-sonnet-4-5") == 9000
    assert value(text, "hubproxy_cache_write_1h_tokens_total", model="claude-sonnet-4-5") == 3000
    assert value(text, "hubproxy_cached_tokens_total", model="claude-sonnet-4-5") == 6000
    admin = raw_request("GET", admin_link(priced_hub.cli, priced_hub)).headers["set-cookie"].split(";")[0]
    exported = raw_request("GET", base(priced_hub) + "/usage.csv?model=claude-sonnet-4-5", headers={"Cookie": admin})
    rows = list(csv.DictReader(io.StringIO(exported.body.decode())))
    listed = {m["name"]: m for m in priced_hub.cli.json("models", "list")}["claude-sonnet-4-5"]
    assert [(r["cache_write_tokens"], r["cache_write_1h_tokens"], r["price_id"]) for r in rows] == [
        ("3000", "1000", listed["price_id"])
    ] * 3


def test_a_long_context_tier_counts_cached_and_written_tokens_and_prices_the_whole_call(priced_hub):
    # 100 + 150,000 read + 60,000 written = 210,100 prompt tokens > 200,000: every token at the tier's
    # price (https://platform.claude.com/docs/en/about-claude/pricing, long context)
    priced_hub.upstream.usage["messages"] = {
        "input_tokens": 100,
        "cache_read_input_tokens": 150_000,
        "cache_creation_input_tokens": 60_000,
        "output_tokens": 1000,
    }
    wait_served(priced_hub, "claude-sonnet-4-5")
    claude(priced_hub).messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HELLO)
    expected = 100 * 6 * M + 150_000 * 600_000 + 60_000 * 7_500_000 + 1000 * 22_500_000
    assert last_cost(priced_hub, "claude-sonnet-4-5")[0] == expected


def test_openai_cached_and_reasoning_tokens_native_and_translated(priced_hub):
    # https://developers.openai.com/api/docs/pricing, gpt-5.4-mini: $0.75 in, $0.075 cached, $4.50 out;
    # reasoning tokens are output tokens (`output_tokens` includes them): billed once
    priced_hub.upstream.usage["responses"] = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 400},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 200},
        "total_tokens": 1300,
    }
    expected = 600 * 750_000 + 400 * 75_000 + 300 * 4_500_000
    wait_served(priced_hub, "gpt-5.4-mini")
    priced_hub.client().responses.create(model="gpt-5.4-mini", input="hi")
    assert last_cost(priced_hub, "gpt-5.4-mini")[0] == expected
    priced_hub.client().chat.completions.create(model="gpt-5.4-mini", messages=HELLO)  # translated to Responses
    assert last_cost(priced_hub, "gpt-5.4-mini")[0] == expected
    claude(priced_hub).messages.create(model="gpt-5.4-mini", max_tokens=50, messages=HELLO)
    assert last_cost(priced_hub, "gpt-5.4-mini")[0] == expected


def test_reasoning_reported_beside_completion_is_billed_as_output_once(priced_hub):
    # xAI: reasoning_tokens "separated from the completion_tokens", "charged at completion token price"
    # (https://docs.x.ai/developers/rate-limits); grok-4.7 $2 in, $6 out (https://docs.x.ai/docs/models)
    priced_hub.upstream.usage["chat"] = {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 350,
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    wait_served(priced_hub, "grok-4.7")
    priced_hub.client().chat.completions.create(model="grok-4.7", messages=HELLO)
    assert last_cost(priced_hub, "grok-4.7")[0] == 100 * 2 * M + (50 + 200) * 6 * M
    claude(priced_hub).messages.create(model="grok-4.7", max_tokens=50, messages=HELLO)  # translated
    assert last_cost(priced_hub, "grok-4.7")[0] == 100 * 2 * M + (50 + 200) * 6 * M
    # the same usage from a provider that counts reasoning within its completion tokens (the default rule)
    priced_hub.upstream.usage["chat"] = {**priced_hub.upstream.usage["chat"], "completion_tokens": 250}
    priced_hub.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert last_cost(priced_hub, "deepseek-chat")[0] == 100 * 270_000 + 250 * 1_100_000
    # thoughts left out of completion_tokens but counted in total_tokens, as reported for Gemini through
    # OpenAI-compatible APIs (https://github.com/mozilla-ai/any-llm/issues/1290: prompt 20, completion
    # 151, total 553): the 382 tokens the total counts beyond are output the provider bills
    priced_hub.upstream.usage["chat"] = {"prompt_tokens": 20, "completion_tokens": 151, "total_tokens": 553}
    priced_hub.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert last_cost(priced_hub, "deepseek-chat")[0] == 20 * 270_000 + 533 * 1_100_000
    with priced_hub.db() as db:
        assert db.execute(
            "SELECT completion_tokens, reasoning_tokens FROM usage WHERE model = 'deepseek-chat' ORDER BY id DESC"
        ).fetchone() == (533, 382)


def test_a_reasoning_price_bills_reasoning_apart_from_the_rest_of_the_output(priced_hub):
    priced_hub.cli(
        *("models", "add", "thinker", "--provider", "fake", "--upstream-model", "deepseek-chat"),
        *("--input-price", "1", "--output-price", "2", "--price", "reasoning=5"),
    )
    priced_hub.upstream.usage["chat"] = {
        "prompt_tokens": 10,
        "completion_tokens": 300,
        "total_tokens": 310,
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    wait_served(priced_hub, "thinker")
    priced_hub.client().chat.completions.create(model="thinker", messages=HELLO)
    assert last_cost(priced_hub, "thinker")[0] == 10 * M + 100 * 2 * M + 200 * 5 * M


def test_prices_by_hour_bill_the_price_in_force_and_hold_the_dearest(priced_hub):
    # DeepSeek V4 Flash (https://api-docs.deepseek.com/quick_start/pricing): peak 01:00-04:00 and 06:00-10:00
    # UTC at $0.30 / $1.20 (cache hit $0.006), off-peak $0.15 / $0.60 ($0.003)
    priced_hub.upstream.usage["chat"] = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "total_tokens": 1100,
        "prompt_tokens_details": {"cached_tokens": 600},
    }
    wait_served(priced_hub, "deepseek-v4-flash")
    before = time.gmtime()
    priced_hub.client().chat.completions.create(model="deepseek-v4-flash", messages=HELLO)
    peak = [
        60 <= t.tm_hour * 60 + t.tm_min < 240 or 360 <= t.tm_hour * 60 + t.tm_min < 600 for t in (before, time.gmtime())
    ]
    costs = {
        400 * 300_000 + 600 * 6_000 + 100 * 1_200_000 if at_peak else 400 * 150_000 + 600 * 3_000 + 100 * 600_000
        for at_peak in peak
    }
    cost, price_id = last_cost(priced_hub, "deepseek-v4-flash")
    assert cost in costs
    listed = {m["name"]: m for m in priced_hub.cli.json("models", "list")}["deepseek-v4-flash"]
    assert price_id == listed["price_id"], "the usage row names the prices it was billed at"
    report = priced_hub.cli.json("usage", "report")
    assert {r["group"]: r["billed_at_price_of"] for r in report}["deepseek-v4-flash"] == time.strftime(
        "%Y-%m-%d", time.gmtime()
    )


def test_the_hold_of_a_model_with_hours_is_at_its_dearest_prices():
    found = list_price(providers()["deepseek"], "deepseek-v4-flash")
    model = found.model("f", "ds", "deepseek-v4-flash")
    assert model.in_force(2 * 60).input_price == 300_000 and model.in_force(12 * 60).input_price == 150_000
    assert hold_cost(model.dearest, 1000, 100) == 1000 * 300_000 + 100 * 1_200_000


def billable(provider_id: str, info) -> bool:
    """A catalog model hubproxy can price (not deprecated; no audio, image or per-request prices)."""
    try:
        priced_info(providers()[provider_id], info, datetime.now(tz=UTC))
    except ConfigError:
        return False
    return not info.deprecated


BILLABLE = [(p, info) for p, provider in providers().items() for info in provider.models if billable(p, info)]


def catalog_cost(provider_id: str, info, usage: Usage, at: datetime) -> Decimal:
    calc = info.calc_price(
        CatalogUsage(
            input_tokens=usage.input,
            cache_read_tokens=usage.cached,
            cache_write_tokens=usage.cache_write,
            cache_write_1h_tokens=usage.cache_write_1h,
            output_tokens=usage.output,
            output_reasoning_tokens=usage.reasoning,
        ),
        providers()[provider_id],
        genai_request_timestamp=at,
    )
    return calc.total_price


def hubproxy_cost(provider_id: str, info, usage: Usage, at: datetime) -> int:
    model = priced_info(providers()[provider_id], info, at).model("m", "p", info.id)
    return usage_cost(model.in_force(at.hour * 60 + at.minute), usage)


def usage_of(draw_int) -> Usage:
    cached, written, written_1h = draw_int(0, 150_000), draw_int(0, 150_000), 0
    written_1h = draw_int(0, written)
    output = draw_int(0, 50_000)
    return Usage(cached + written + draw_int(0, 150_000), output, cached, written, draw_int(0, output), written_1h)


def exact_or_just_above(hubproxy: int, catalog: Decimal, usage: Usage) -> bool:
    """hubproxy bills in whole pico-USD from prices rounded up to the micro-USD per 1M (config/listprices.py):
    equal to the catalog's cost where its prices have 6 decimals or fewer, else above by under a pico-USD
    per token."""
    exact = catalog * 10**12
    return exact <= hubproxy < exact + usage.input + usage.output + 1


def test_every_billable_catalog_model_costs_what_genai_prices_says():
    rng = random.Random(26)
    at = datetime(2026, 12, 7, rng.randrange(24), rng.randrange(60), tzinfo=UTC)
    assert len(BILLABLE) > 1500
    for provider_id, info in BILLABLE:
        usage = usage_of(rng.randint)
        assert exact_or_just_above(
            hubproxy_cost(provider_id, info, usage, at), catalog_cost(provider_id, info, usage, at), usage
        ), (provider_id, info.id, usage)


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(min_value=0),
    numbers=st.lists(st.integers(min_value=0, max_value=300_000), min_size=8, max_size=8),
    minute=st.integers(min_value=0, max_value=24 * 60 - 1),
)
def test_random_usage_of_a_random_catalog_model_costs_what_genai_prices_says(which, numbers, minute):
    provider_id, info = BILLABLE[which % len(BILLABLE)]
    left = iter(numbers)
    usage = usage_of(lambda low, high: low + next(left) % (high - low + 1))
    at = datetime(2026, 12, 7, minute // 60, minute % 60, tzinfo=UTC)
    assert exact_or_just_above(
        hubproxy_cost(provider_id, info, usage, at), catalog_cost(provider_id, info, usage, at), usage
    )


def test_the_catalog_is_never_fetched():
    """genai-prices can fetch a newer price file in the background (update_prices); hubproxy reads only the
    installed release, so a bill never changes without `prices apply`."""
    import threading

    import genai_prices.data_snapshot as snapshot

    list_price(providers()["anthropic"], "claude-sonnet-4-5")
    assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]
    assert snapshot._custom_snapshot is None


def test_prices_catalog_shows_each_presets_models_and_the_readme_carries_its_table(cli):
    shown = cli.json("prices", "catalog", "xai")
    grok = {m["model"]: m for m in shown["models"]}["grok-4.7"]
    assert grok["prices"]["input_price"] == "2" and grok["more"] == ["over 199,999 prompt tokens: 4 / 12"]
    assert grok["source"] == "https://docs.x.ai/docs/models" and shown["catalog_version"] == CATALOG
    table = cli("prices", "catalog", "--markdown").stdout.replace("| source |", "| prices page |", 1)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert table in readme, "README's preset price table is `hubproxy prices catalog --markdown`'s"
    unknown = cli("prices", "catalog", "nope", ok=False)
    assert unknown.exit_code == 1 and "no preset 'nope'" in unknown.output


def test_cache_writes_reported_by_openai_compatible_providers_are_billed_at_the_write_price(priced_hub):
    # Qwen's explicit cache: creation billed at 125% of input, hits at 10%; the chat answer's usage
    # (https://www.alibabacloud.com/help/en/model-studio/context-cache) puts the written tokens in
    # prompt_tokens_details.cache_creation_input_tokens. qwen-plus at $0.40 / $1.20 (example figures)
    priced_hub.cli(
        *("models", "add", "qwen-plus", "--provider", "fake", "--upstream-model", "deepseek-chat"),
        *("--input-price", "0.4", "--output-price", "1.2", "--cached-input-price", "0.04"),
        *("--cache-write-price", "0.5"),
    )
    priced_hub.upstream.usage["chat"] = {
        "prompt_tokens": 18628,
        "completion_tokens": 344,
        "total_tokens": 18972,
        "prompt_tokens_details": {
            "text_tokens": 18628,
            "cache_creation_input_tokens": 18613,
            "cache_creation": {"ephemeral_5m_input_tokens": 18613},
            "cache_type": "ephemeral",
            "cached_tokens": 0,
        },
    }
    expected = 15 * 400_000 + 18613 * 500_000 + 344 * 1_200_000
    wait_served(priced_hub, "qwen-plus")
    priced_hub.client().chat.completions.create(model="qwen-plus", messages=HELLO)
    assert last_cost(priced_hub, "qwen-plus")[0] == expected
    claude(priced_hub).messages.create(model="qwen-plus", max_tokens=50, messages=HELLO)  # translated
    assert last_cost(priced_hub, "qwen-plus")[0] == expected
    # OpenRouter's shape (https://openrouter.ai/docs/use-cases/usage-accounting): cache_write_tokens
    priced_hub.upstream.usage["chat"] = {
        "prompt_tokens": 194,
        "completion_tokens": 2,
        "total_tokens": 196,
        "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 100, "audio_tokens": 0},
    }
    priced_hub.client().chat.completions.create(model="qwen-plus", messages=HELLO)
    assert last_cost(priced_hub, "qwen-plus")[0] == 44 * 400_000 + 50 * 40_000 + 100 * 500_000 + 2 * 1_200_000
    with priced_hub.db() as db:
        assert db.execute(
            "SELECT cache_write_tokens, cached_tokens FROM usage WHERE model = 'qwen-plus' ORDER BY id DESC LIMIT 1"
        ).fetchone() == (100, 50)


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


def test_web_searches_are_billed_per_search_and_held_at_max_uses(priced_hub):
    # https://platform.claude.com/docs/en/agents-and-tools/tool-use/web-search-tool: $10 per 1,000
    # searches, counted in usage.server_tool_use.web_search_requests; the tool's max_uses bounds them
    priced_hub.upstream.usage["messages"] = {
        "input_tokens": 100,
        "output_tokens": 50,
        "server_tool_use": {"web_search_requests": 2},
    }
    expected = 100 * 3 * M + 50 * 15 * M + 2 * 10_000 * M
    wait_served(priced_hub, "claude-sonnet-4-5")
    search = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": HELLO, "tools": [WEB_SEARCH]}
    claude(priced_hub).messages.create(**search)
    assert last_cost(priced_hub, "claude-sonnet-4-5")[0] == expected
    with claude(priced_hub).messages.stream(**search) as stream:
        stream.until_done()
    assert last_cost(priced_hub, "claude-sonnet-4-5")[0] == expected
    with priced_hub.db() as db:
        assert db.execute("SELECT sum(web_search_requests) FROM usage").fetchone()[0] == 4
    report = {r["group"]: r for r in priced_hub.cli.json("usage", "report")}["claude-sonnet-4-5"]
    assert report["web_search_requests"] == 4
    # no max_uses: no bound to hold, so refused in Anthropic's shape, and nothing billed
    unbounded = {**search, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude(priced_hub).messages.create(**unbounded)
    assert refused.value.body["error"]["type"] == "invalid_request_error" and "max_uses" in str(refused.value)
    with priced_hub.db() as db:
        assert db.execute("SELECT count(*) FROM usage").fetchone()[0] == 2
    # the hold counts max_uses searches: $0.02 covers a call that may search once, not five times
    key = priced_hub.new_user("searcher@example.com", "0.02")
    wait_for(lambda: priced_hub.key_works(key))
    poor = anthropic.Anthropic(base_url=f"http://127.0.0.1:{priced_hub.port}", api_key=key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as short:
        poor.messages.create(**{**search, "tools": [{**WEB_SEARCH, "max_uses": 5}]})
    assert short.value.status_code == 402
    priced_hub.upstream.usage["messages"] = {**priced_hub.upstream.usage["messages"], "server_tool_use": {}}
    poor.messages.create(**{**search, "tools": [{**WEB_SEARCH, "max_uses": 1}]})
