"""List prices from genai-prices (Pydantic's maintained catalog, shipped as data inside the package),
read at config time into hubproxy's integer prices. The server never imports this module: a price
is in config.toml before a call is billed at it. Nothing is fetched: the package's live update stays
off, and a newer catalog comes with `pip install -U genai-prices`.

How the catalog's prices become hubproxy's (`list_price`):

- Each price key becomes the price setting of its token class (`CLASS_OF`); a price is rounded up
  to a whole micro-USD per 1M tokens where the catalog has more decimals (never down: a bill may be
  up to 1e-12 USD per token over the catalog's, never under).
- The conditional prices: those dated (`start_date`) resolve to the one in force when it is read;
  those by time of day (`start_time`..`end_time`, UTC) become the model's `hours`.
- Tiers by prompt size become `tiers`, each with every class's price at that size; the threshold
  counts every prompt token, cached and cache-written ones included, as the catalog does.
- Web searches (a price per 1,000) become `web_search_price`, per 1M searches like every hubproxy
  price: billed where a provider reports its searches (Anthropic's Messages usage).
- A model priced in a unit hubproxy does not bill (audio or image tokens apart, a fee per request)
  is refused: it stays unpriced until priced by hand. File searches are the exception: they are
  billed only when a caller uses a file search tool, which hubproxy does not meter, so they are named
  (`ListPrice.unbilled`) wherever the price is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from functools import cache
from importlib.metadata import version
from typing import Any

from hubproxy.config.catalog import Model, priced_model
from hubproxy.config.errors import ConfigError
from hubproxy.config.prices import HourPrices, PriceTier, ordered_tiers, tier_of

CLASS_OF = {
    "input_mtok": "input_price",
    "output_mtok": "output_price",
    "cache_read_mtok": "cached_input_price",
    "cache_write_mtok": "cache_write_price",
    "cache_write_5m_mtok": "cache_write_price",
    "cache_write_1h_mtok": "cache_write_1h_price",
    "output_reasoning_mtok": "reasoning_price",
    "web_searches_kcount": "web_search_price",  # per 1,000 searches: x1000 to hubproxy's per 1M (`PER_MILLION`)
}
"""The catalog's price keys hubproxy bills, and the price setting each becomes."""

PER_MILLION = {"web_searches_kcount": 1000}
"""Keys the catalog prices per 1,000 requests, and the factor to hubproxy's unit (per 1M)."""

NOT_METERED = {"storage_searches_kcount": "file searches"}
"""Keys billed only for a tool hubproxy does not meter: named, not refused."""


def catalog_version() -> str:
    return version("genai-prices")


@cache
def providers() -> dict[str, Any]:
    """The catalog's providers by id (the bundled data only: importing it takes ~0.5 s)."""
    from genai_prices.data import providers as bundled

    return {p.id: p for p in bundled}


def catalog_provider(catalog: str | None, base_url: str) -> Any:
    """The catalog's provider for a hubproxy provider: the preset's `catalog` id, else the one whose
    API URL pattern the base URL matches; None when the catalog has none."""
    found = providers()
    if catalog is not None:
        return found.get(catalog)
    for provider in found.values():
        if provider.api_pattern and re.match(provider.api_pattern, base_url):
            return provider
    return None


@dataclass(frozen=True)
class ListPrice:
    """A catalog model's prices in hubproxy's terms (micro-USD per 1M tokens by setting)."""

    catalog_model: str
    catalog_provider: str
    prices: dict[str, int]
    tiers: tuple[PriceTier, ...]
    hours: tuple[HourPrices, ...]
    source: str
    unbilled: tuple[str, ...]

    def model(self, name: str, provider: str, upstream: str, **more: Any) -> Model:
        return priced_model(name, provider, upstream, self.prices, tiers=self.tiers, hours=self.hours, **more)

    @property
    def origin(self) -> str:
        """Where the price came from, as the CLI and the price history say it."""
        return f"genai-prices {catalog_version()}: {self.catalog_provider}/{self.catalog_model} ({self.source})"


def micro(price: Decimal) -> int:
    """USD per 1M tokens → micro-USD per 1M, rounded up (module docstring)."""
    return int((price * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


def flat(model_price: Any, where: str) -> tuple[dict[str, int], dict[str, Any], tuple[str, ...]]:
    """(flat prices by setting, tiered prices by setting, keys not metered) of one catalog price set."""
    prices: dict[str, int] = {}
    tiered: dict[str, Any] = {}
    unbilled = []
    for key, value in vars(model_price).items():
        if value is None:
            continue
        if key in NOT_METERED:
            unbilled.append(NOT_METERED[key])
            continue
        setting = CLASS_OF.get(key)
        if setting is None or (key in PER_MILLION and not isinstance(value, Decimal)):
            raise ConfigError(f"{where}: the catalog prices {key!r}, which hubproxy does not bill; price it by hand")
        if isinstance(value, Decimal):
            prices[setting] = micro(value * PER_MILLION.get(key, 1))
        else:
            prices[setting] = micro(value.base)
            tiered[setting] = value
    if "input_price" not in prices or "output_price" not in prices:
        raise ConfigError(f"{where}: the catalog has no input and output price per token for it")
    return prices, tiered, tuple(unbilled)


def tiers_of(base: dict[str, int], tiered: dict[str, Any]) -> tuple[PriceTier, ...]:
    """One hubproxy tier per prompt size where any class's price changes, with every tiered class's
    price at that size (and the cached price, which a tier otherwise leaves at its input price)."""
    starts = sorted({t.start for value in tiered.values() for t in value.tiers})
    tiers = []
    for start in starts:
        prices = dict(base)
        for setting, value in tiered.items():
            reached = [t for t in value.tiers if t.start <= start]
            if reached:
                prices[setting] = micro(reached[-1].price)
        kept = {
            s: p for s, p in prices.items() if s in tiered or s in ("input_price", "output_price", "cached_input_price")
        }
        tiers.append(tier_of(start, kept))
    return ordered_tiers(tiers, "catalog tiers")


def list_price(provider: Any, model_ref: str, now: datetime | None = None) -> ListPrice:
    """The catalog's price for `model_ref` at `provider` (a catalog provider), in force at `now`;
    ConfigError saying why when there is none hubproxy can bill."""
    now = now or datetime.now(tz=UTC)
    info = provider.find_model(model_ref, all_providers=list(providers().values()))
    if info is None:
        raise ConfigError(
            f"genai-prices {catalog_version()} has no price for {model_ref!r} at {provider.id}: "
            "give --input-price and --output-price"
        )
    return priced_info(provider, info, now)


def priced_info(provider: Any, info: Any, now: datetime) -> ListPrice:
    """A catalog model's prices in force at `now` (module docstring)."""
    where = f"genai-prices {catalog_version()} {provider.id}/{info.id}"
    conditional = info.prices if isinstance(info.prices, list) else None
    if conditional is None:
        base_price, timed = info.prices, []
    else:
        standing = [
            i
            for i, c in enumerate(conditional)
            if c.constraint is None or (hasattr(c.constraint, "start_date") and c.constraint.active(now))
        ]
        base_at = standing[-1] if standing else 0
        base_price = conditional[base_at].prices
        timed = [c for c in conditional[base_at + 1 :] if hasattr(c.constraint, "start_time")]
    prices, tiered, unbilled = flat(base_price, where)
    hours = []
    for c in timed:
        window, window_tiered, _ = flat(c.prices, where)
        start, end = c.constraint.start_time, c.constraint.end_time
        if window_tiered or tiered:
            raise ConfigError(f"{where}: prices both by hour and by prompt size; price it by hand")
        hours.append(HourPrices(start.hour * 60 + start.minute, end.hour * 60 + end.minute, window))
    source = (provider.pricing_urls or ["the catalog"])[0]
    return ListPrice(info.id, provider.id, prices, tiers_of(prices, tiered), tuple(hours), source, unbilled)
