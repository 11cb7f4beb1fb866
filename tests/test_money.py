"""Money is exact: integer pico-USD, integer micro-USD prices, no floats."""

import pytest

from hubproxy.billing.pricing import cost_of, hold_cost, usage_cost
from hubproxy.config import Model, PriceTier
from hubproxy.money import MoneyError, format_price, format_usd, parse_price, parse_usd, token_cost
from hubproxy.protocols import Usage
from hubproxy.protocols.openai_chat import read_usage


def test_prices_times_tokens_are_exact_pico_usd():
    price = parse_price("0.27")
    assert price == 270_000
    assert token_cost(1_000_000, price) == parse_usd("0.27")
    assert token_cost(3, price) == 810_000
    assert format_usd(token_cost(3, price)) == "0.00000081"


def test_many_small_costs_add_up_exactly():
    cost = token_cost(1, parse_price("0.1"))
    assert sum([cost] * 10**6) == token_cost(10**6, parse_price("0.1")) == parse_usd("0.1")


@pytest.mark.parametrize("text,pico", [("5", 5 * 10**12), ("$2.50", 2_500_000_000_000), ("0.000000000001", 1)])
def test_parse_usd(text, pico):
    assert parse_usd(text) == pico


@pytest.mark.parametrize("text", ["abc", "1e400", "nan", "0.0000000000001", "-1", "99999999"])
def test_parse_usd_refuses_inexact_or_silly_amounts(text):
    with pytest.raises(MoneyError):
        parse_usd(text)


def test_negative_only_when_allowed():
    assert parse_usd("-1.5", allow_negative=True) == -1_500_000_000_000


@pytest.mark.parametrize("text", ["0.0000001", "-0.1", "x"])
def test_parse_price_refuses_bad_prices(text):
    with pytest.raises(MoneyError):
        parse_price(text)


def test_format_round_trips():
    for text in ["0.27", "1.1", "15", "0.000001"]:
        assert format_price(parse_price(text)) == text
    assert format_usd(-1_230_000_000_000) == "-1.23"
    assert format_usd(0) == "0.00"


def test_cost_of_a_call():
    model = Model("m", "p", "m", parse_price("0.27"), parse_price("1.10"))
    assert cost_of(model, 1000, 500) == 1000 * 270_000 + 500 * 1_100_000


def test_read_usage_accepts_openai_and_anthropic_shapes_and_rejects_junk():
    assert read_usage({"prompt_tokens": 3, "completion_tokens": 4}) == Usage(3, 4)
    assert read_usage({"input_tokens": 3, "output_tokens": 4}) == Usage(3, 4)
    assert read_usage({"prompt_tokens": 3, "total_tokens": 3}) == Usage(3, 0)
    assert read_usage({"prompt_tokens": 9, "completion_tokens": 1, "prompt_cache_hit_tokens": 5}) == Usage(9, 1, 5)
    assert read_usage({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 50}}) == Usage(9, 0, 9)
    reasoning = {"prompt_tokens": 2, "completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 5}}
    assert read_usage(reasoning) == Usage(2, 7, reasoning=5)
    assert read_usage({"prompt_tokens": True, "completion_tokens": 1}) is None
    assert read_usage({"prompt_tokens": "3"}) is None
    assert read_usage({"prompt_tokens": -1, "completion_tokens": 0}) is None
    assert read_usage(None) is None


def test_cached_prompt_tokens_use_the_cached_price_only_where_one_is_set():
    plain = Model("m", "p", "m", parse_price("0.27"), parse_price("1.10"))
    cached = Model("m", "p", "m", parse_price("0.27"), parse_price("1.10"), cached_input_price=parse_price("0.07"))
    assert usage_cost(plain, Usage(100, 10, cached=60)) == 100 * 270_000 + 10 * 1_100_000
    assert usage_cost(cached, Usage(100, 10, cached=60)) == 40 * 270_000 + 60 * 70_000 + 10 * 1_100_000


def test_a_prompt_over_a_tier_bills_the_whole_call_at_that_tier():
    tiers = (
        PriceTier(200_000, parse_price("2.50"), parse_price("15"), parse_price("0.25")),
        PriceTier(100_000, parse_price("2"), parse_price("12")),
    )
    model = Model(
        "m", "p", "m", parse_price("1.25"), parse_price("10"), tiers=tuple(sorted(tiers, key=lambda t: t.above))
    )
    assert cost_of(model, 100_000, 10) == 100_000 * 1_250_000 + 10 * 10_000_000, "at the threshold: base"
    assert cost_of(model, 100_001, 10) == 100_001 * 2_000_000 + 10 * 12_000_000
    assert usage_cost(model, Usage(300_000, 10, cached=100_000)) == (
        200_000 * 2_500_000 + 100_000 * 250_000 + 10 * 15_000_000
    )


def test_a_token_class_without_its_own_price_is_billed_at_the_price_of_the_class_it_is_within():
    """1-hour cache writes are cache writes: unpriced, they cost the cache-write price; priced, their
    own, and never again as cache writes or as input."""
    usage = Usage(100, 10, cached=20, cache_write=30, cache_write_1h=12)
    plain = Model("m", "p", "m", 3_000_000, 15_000_000, cached_input_price=300_000, cache_write_price=3_750_000)
    base = 50 * 3_000_000 + 20 * 300_000 + 10 * 15_000_000
    assert usage_cost(plain, usage) == base + 30 * 3_750_000
    hourly = Model(
        "m", "p", "m", 3_000_000, 15_000_000, cached_input_price=300_000, cache_write_price=3_750_000,
        rates={"cache_write_1h_price": 6_000_000},
    )  # fmt: skip
    assert usage_cost(hourly, usage) == base + 18 * 3_750_000 + 12 * 6_000_000
    assert usage_cost(hourly, Usage(10, 0, cache_write=10, cache_write_1h=50)) == 10 * 6_000_000  # never past its class


def test_the_hold_prices_a_prompt_at_the_dearest_class_it_may_be_billed_as():
    """A prompt may be written to a cache at more than the input price (Anthropic: 1.25 times for five
    minutes, twice for an hour): the hold takes the dearest; without such prices it is `cost_of`."""
    plain = Model("m", "p", "m", 3_000_000, 15_000_000, cached_input_price=300_000)
    assert hold_cost(plain, 1000, 10) == cost_of(plain, 1000, 10) == 1000 * 3_000_000 + 10 * 15_000_000
    odd = Model("m", "p", "m", 3_000_000, 15_000_000, cached_input_price=4_000_000)  # a cached price above input
    assert hold_cost(odd, 1000, 10) == 1000 * 4_000_000 + 10 * 15_000_000
    five = Model("m", "p", "m", 3_000_000, 15_000_000, cache_write_price=3_750_000)
    assert hold_cost(five, 1000, 10) == 1000 * 3_750_000 + 10 * 15_000_000
    hour = Model(
        "m", "p", "m", 3_000_000, 15_000_000, cache_write_price=3_750_000, rates={"cache_write_1h_price": 6_000_000}
    )
    assert hold_cost(hour, 1000, 10) == 1000 * 6_000_000 + 10 * 15_000_000
    assert hold_cost(hour, 1000, 10) >= usage_cost(hour, Usage(1000, 10, cache_write=1000, cache_write_1h=1000))
