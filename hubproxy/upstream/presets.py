"""Provider presets, kept as data in presets.toml beside this module: where a provider lives, which
models it serves, and where their prices come from (the genai-prices catalog, a listing, or 0)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from hubproxy.config import ConfigError, Model, priced_model
from hubproxy.config.listprices import catalog_provider, list_price
from hubproxy.money import MoneyError, parse_price


@dataclass(frozen=True)
class Listed:
    """Prices that did not come from the catalog (a provider's own listing, or 0 for a local one)."""

    prices: dict[str, int]
    origin: str

    def model(self, name: str, provider: str, upstream: str, **more: Any) -> Model:
        return priced_model(name, provider, upstream, self.prices, **more)

    @property
    def source(self) -> str:
        return self.origin


FREE = Listed({"input_price": 0, "output_price": 0}, "local: runs on your machine")


@dataclass(frozen=True)
class Preset:
    name: str
    base_url: str
    source: str
    api_key_env: str | None = None
    catalog: str | None = None  # the provider's id in genai-prices
    models: tuple[str, ...] = ()  # the ids `providers add --preset` serves
    local: bool = False
    listing_prices: str | None = None
    apis: tuple[str, ...] = ("chat",)
    messages_base_url: str | None = None
    messages_source: str | None = None  # the vendor's page for its Anthropic-compatible API, and when read
    gemini_base_url: str | None = None  # where its Gemini API lives (Google's own), the origin before /v1beta
    limit_field: str = "max_tokens"  # what its chat API limits output with (Provider.limit_field)
    reasoning: str = "within"  # how it reports reasoning tokens (Provider.reasoning)

    def price_of(self, model_id: str, listing: dict | None = None) -> Any:
        """The price for a model this provider serves (a `ListPrice` or `Listed`: `.model()`,
        `.origin`), or None when nothing can price it."""
        if self.catalog is not None:
            try:
                return list_price(catalog_provider(self.catalog, self.base_url), model_id)
            except ConfigError:
                pass
        if self.local:
            return FREE
        if self.listing_prices and listing is not None:
            return listed_prices(listing, self.listing_prices)
        return None


def load_presets() -> dict[str, Preset]:
    text = resources.files("hubproxy.upstream").joinpath("presets.toml").read_text(encoding="utf-8")
    presets = {}
    for name, entry in tomllib.loads(text).items():
        entry["apis"] = tuple(entry.get("apis", ("chat",)))
        entry["models"] = tuple(entry.get("models", ()))
        presets[name] = Preset(name=name, **entry)
    return presets


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise ConfigError(f"no preset {name!r}; see `hubproxy providers presets`")
    return presets[name]


# How a provider's GET /models entry carries prices: (input key, output key, cached-input key, the
# factor from its unit to USD per 1M tokens, whether 0 is a real price).
LISTING_FORMATS = {
    "per-token": ("prompt", "completion", "input_cache_read", 1_000_000, True),  # OpenRouter
    "per-million": ("input", "output", None, 1, False),  # Together: 0 stands for "not sold per token"
}


def listed_prices(item: dict, style: str) -> Listed | None:
    """The `pricing` on a GET /models entry, converted exactly to micro-USD per 1M tokens.

    Anything else (missing, negative, "-1" for "varies", a 0 where 0 means "not sold per token", more
    precision than we bill in) leaves the model unpriced.
    """
    pricing = item.get("pricing")
    input_key, output_key, cached_key, factor, zero_is_a_price = LISTING_FORMATS[style]
    if not isinstance(pricing, dict):
        return None
    try:
        per_million = {k: Decimal(str(v)) * factor for k, v in pricing.items() if v is not None}
        prices = {
            "input_price": parse_price(per_million[input_key]),
            "output_price": parse_price(per_million[output_key]),
        }
        if cached_key in per_million:
            prices["cached_input_price"] = parse_price(per_million[cached_key])
    except (KeyError, InvalidOperation, MoneyError):
        return None
    if not zero_is_a_price and (prices["input_price"] == 0 or prices["output_price"] == 0):
        return None
    return Listed(prices, "the provider's own model listing")
