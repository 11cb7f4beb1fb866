"""A model's price settings beyond its flat prices: tiers by prompt size, prices by hour of day, and
the price id a usage row records.

Prices are integer micro-USD per 1M tokens (`money.py`), by setting name (`tokens.TOKEN_CLASSES`:
`input_price`, `output_price`, `cached_input_price`, `cache_write_price`, …). config.toml writes
them as USD strings; these functions read and write that form.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hubproxy.config.errors import ConfigError
from hubproxy.money import MoneyError, format_price, parse_price
from hubproxy.tokens import PART_PRICES

PRICE_SETTINGS = ("input_price", "output_price", *PART_PRICES)
HOUR_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class PriceTier:
    """Prices for a call whose prompt is longer than `above` tokens: providers such as Gemini 2.5 Pro
    (over 200k) and Claude's long context bill the whole call at a higher rate then. `rates`: the
    other classes' prices in the tier (cache writes), by setting."""

    above: int
    input_price: int
    output_price: int
    cached_input_price: int | None = None
    rates: Mapping[str, int] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class HourPrices:
    """Prices in force from `start` to `end` (minutes after midnight UTC; an `end` before `start`
    wraps past midnight): DeepSeek's peak hours. `prices`: by setting, input and output at least."""

    start: int
    end: int
    prices: Mapping[str, int] = field(hash=False)

    def covers(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def read_prices(raw: Mapping, where: str, allowed: Iterable[str] = PRICE_SETTINGS) -> dict[str, int]:
    """The price settings present in a table, as integers (an unknown key is the caller's to refuse)."""
    try:
        return {s: parse_price(raw[s], what=f"{where} {s}") for s in allowed if raw.get(s) is not None}
    except MoneyError as exc:
        raise ConfigError(str(exc)) from None


def parse_tiers(raw: object, where: str) -> tuple[PriceTier, ...]:
    """A `tiers` list as config.toml writes it, checked and in ascending order."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: tiers must be a list of tables")
    tiers = []
    for item in raw:
        if (
            not isinstance(item, dict)
            or set(item) - {"above_prompt_tokens", *PRICE_SETTINGS}
            or not {"above_prompt_tokens", "input_price", "output_price"} <= set(item)
        ):
            raise ConfigError(
                f"{where}: each tier is {{ above_prompt_tokens, input_price, output_price[, "
                f"{', '.join(PART_PRICES)}] }}"
            )
        above = item["above_prompt_tokens"]
        if isinstance(above, bool) or not isinstance(above, int) or above < 1:
            raise ConfigError(f"{where}: tier above_prompt_tokens must be a positive integer")
        prices = read_prices(item, f"{where} tier")
        tiers.append(tier_of(above, prices))
    return ordered_tiers(tiers, where)


def tier_of(above: int, prices: dict[str, int]) -> PriceTier:
    """A tier from its prices by setting (input and output present)."""
    rates = {s: p for s, p in prices.items() if s not in ("input_price", "output_price", "cached_input_price")}
    return PriceTier(above, prices["input_price"], prices["output_price"], prices.get("cached_input_price"), rates)


def ordered_tiers(tiers: Iterable[PriceTier], where: str) -> tuple[PriceTier, ...]:
    """Tiers in ascending order of prompt size, refusing two that start at the same size."""
    ordered = tuple(sorted(tiers, key=lambda t: t.above))
    if len({t.above for t in ordered}) != len(ordered):
        raise ConfigError(f"{where}: two tiers start above the same prompt size")
    return ordered


def tier_prices(t: PriceTier) -> dict[str, int]:
    prices = {"input_price": t.input_price, "output_price": t.output_price, **t.rates}
    if t.cached_input_price is not None:
        prices["cached_input_price"] = t.cached_input_price
    return prices


def tier_dict(t: PriceTier) -> dict:
    return {"above_prompt_tokens": t.above, **{s: format_price(p) for s, p in tier_prices(t).items()}}


def minute_of(text: object, where: str) -> int:
    match = HOUR_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f'{where}: hours take times as "HH:MM" (UTC), got {text!r}')
    return int(match[1]) * 60 + int(match[2])


def parse_hours(raw: object, where: str) -> tuple[HourPrices, ...]:
    """An `hours` list: `{ from = "01:00", to = "04:00", input_price = …, output_price = … }`, UTC."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: hours must be a list of tables")
    hours = []
    for item in raw:
        if (
            not isinstance(item, dict)
            or set(item) - {"from", "to", *PRICE_SETTINGS}
            or not {"from", "to", "input_price", "output_price"} <= set(item)
        ):
            raise ConfigError(
                f'{where}: each hours entry is {{ from = "HH:MM", to = "HH:MM", input_price, output_price, … }}'
            )
        start, end = minute_of(item["from"], where), minute_of(item["to"], where)
        if start == end:
            raise ConfigError(f"{where}: an hours entry from {item['from']} to the same time covers nothing")
        hours.append(HourPrices(start, end, read_prices(item, f"{where} hours")))
    return tuple(hours)


def clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def hours_dict(h: HourPrices) -> dict:
    return {"from": clock(h.start), "to": clock(h.end), **{s: format_price(p) for s, p in h.prices.items()}}


def price_version(settings: Mapping) -> str:
    """A short id for a set of prices (a model's `price_settings`): equal prices, equal id. A usage row
    records it, and the price history says when it came in."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
