"""The token classes a call is billed by: one table that the usage reader, the price, the usage row,
the daily totals and the report all follow, so that a class a provider starts billing apart (a
1-hour cache write, say) is a row here, a field of `Usage`, and the line of the wire format that
reads it.

Each token class but `input` and `output` is a part of another (`within`): Anthropic's cache writes
are prompt tokens, its 1-hour writes are cache writes, reasoning is output. A part with a price of its
own is billed at it and taken out of the class it is within; a part without one is billed at that
class's price. A fee (`FEES`: web searches) counts requests a server tool made, billed per request
at its own price, or not at all where the model has none. Prices are integer micro-USD per 1M tokens
(per 1M requests for a fee: `money.py`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import msgspec


class Usage(msgspec.Struct):
    """Tokens of one call as billed. `input` counts every prompt token, cached and cache-written ones
    included; `cache_write_1h` is the part of `cache_write` kept for an hour; `reasoning` is the part
    of `output` the model spent thinking."""

    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cache_write_1h: int = 0
    # output tokens a chat usage's `total_tokens` counts beyond its prompt and completion tokens (Gemini's
    # thoughts, xAI's reasoning): the meter bills them as output (billing/meter.py); never stored
    uncounted: int = 0
    web_searches: int = 0  # searches a server tool made (Anthropic's `server_tool_use.web_search_requests`)


@dataclass(frozen=True)
class TokenClass:
    name: str  # the `Usage` field
    column: str  # the usage row's and the daily totals' column
    price: str | None  # the model's price setting (config.toml; `models add --price NAME=USD`); None: never apart
    within: str | None  # the class these tokens are a part of
    label: str  # what a report calls it


TOKEN_CLASSES = (  # prompt and completion first: the daily totals add those two without a loop
    TokenClass("input", "prompt_tokens", "input_price", None, "prompt"),
    TokenClass("output", "completion_tokens", "output_price", None, "completion"),
    TokenClass("cached", "cached_tokens", "cached_input_price", "input", "cached"),
    TokenClass("cache_write", "cache_write_tokens", "cache_write_price", "input", "cache write"),
    TokenClass("cache_write_1h", "cache_write_1h_tokens", "cache_write_1h_price", "cache_write", "cache write 1h"),
    TokenClass("reasoning", "reasoning_tokens", "reasoning_price", "output", "reasoning"),
    TokenClass("web_searches", "web_search_requests", "web_search_price", None, "web searches"),
)
"""In an order where each class comes after the one it is within."""

FEES = tuple(c for c in TOKEN_CLASSES if c.within is None and c.name not in ("input", "output"))
"""The classes that count requests, not tokens: billed per request at their own price."""


def enclosing(token_class: TokenClass) -> tuple[str, ...]:
    """The classes this one is within, nearest first (`cache_write_1h`: `cache_write`, `input`)."""
    within = {c.name: c.within for c in TOKEN_CLASSES}
    names, name = [], token_class.within
    while name is not None:
        names.append(name)
        name = within[name]
    return tuple(names)


def depth(token_class: TokenClass) -> int:
    return len(enclosing(token_class))


PARTS = tuple(
    sorted((c for c in TOKEN_CLASSES if c.within is not None and c.price is not None), key=depth, reverse=True)
)
"""The classes priced apart, each before the one it is within, siblings in table order (the order
`billing.pricing.usage_cost` takes them in)."""

ENCLOSING = {c.name: enclosing(c) for c in PARTS}

EXTRA_CLASSES = TOKEN_CLASSES[2:]
"""Every class but prompt and completion: the parts and the fees, a report's columns after the cost."""

PART_PRICES = tuple(c.price for c in EXTRA_CLASSES if c.price is not None)
"""The price settings a model may have beyond `input_price` and `output_price`."""

COLUMNS = tuple(c.column for c in TOKEN_CLASSES)

counts: Callable[[Usage], tuple[int, ...]] = operator.attrgetter(*(c.name for c in TOKEN_CLASSES))
"""The usage's tokens in `COLUMNS` order (one C call: it runs for every usage row)."""

part_counts: Callable[[Usage], tuple[int, ...]] = operator.attrgetter(*(c.name for c in (*PARTS, *FEES)))
"""The usage's counts of the classes priced apart, in `PARTS` order, then the fees."""
