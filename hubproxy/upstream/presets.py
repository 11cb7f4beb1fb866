"""Provider presets, kept as data in presets.toml beside this module, and the prices they carry."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources

from hubproxy.config import ConfigError
from hubproxy.money import MoneyError, parse_price


@dataclass(frozen=True)
class Prices:
    """Micro-USD per 1M tokens, as on a Model."""

    input: int
    output: int
    cached_input: int | None = None


FREE = Prices(0, 0)


@dataclass(frozen=True)
class Preset:
    name: str
    base_url: str
    source: str
    api_key_env: str | None = None
    prices_source: str | None = None
    prices_read: str | None = None
    prices_note: str | None = None
    local: bool = False
    listing_prices: bool = False
    models: dict[str, Prices] = field(default_factory=dict)

    def price_of(self, model_id: str, listing: dict | None = None) -> tuple[Prices | None, str]:
        """The price for a model this provider lists, and where it came from; (None, "") when unknown."""
        if model_id in self.models:
            return self.models[model_id], f"preset {self.name}"
        if self.local:
            return FREE, "local"
        if self.listing_prices and listing is not None and (found := listed_prices(listing)) is not None:
            return found, "listing"
        return None, ""


def _prices(name: str, model: str, raw: dict) -> Prices:
    where = f"preset {name} model {model}"
    cached = raw.get("cached_input")
    return Prices(
        parse_price(raw["input"], what=f"{where} input"),
        parse_price(raw["output"], what=f"{where} output"),
        None if cached is None else parse_price(cached, what=f"{where} cached_input"),
    )


def load_presets() -> dict[str, Preset]:
    text = resources.files("hubproxy.upstream").joinpath("presets.toml").read_text(encoding="utf-8")
    presets = {}
    for name, entry in tomllib.loads(text).items():
        models = {model: _prices(name, model, raw) for model, raw in entry.pop("models", {}).items()}
        presets[name] = Preset(name=name, models=models, **entry)
    return presets


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise ConfigError(f"no preset {name!r}; see `hubproxy providers presets`")
    return presets[name]


def listed_prices(item: dict) -> Prices | None:
    """OpenRouter-style `pricing` on a GET /models entry: USD per token as decimal strings.

    Only an exact conversion to micro-USD per 1M tokens is accepted; anything else (missing, negative,
    "-1" for "varies", more precision than we bill in) leaves the model unpriced.
    """
    pricing = item.get("pricing")
    if not isinstance(pricing, dict):
        return None
    try:
        per_million = {k: Decimal(str(v)) * 1_000_000 for k, v in pricing.items() if v is not None}
        prices = Prices(
            parse_price(per_million["prompt"]),
            parse_price(per_million["completion"]),
            parse_price(per_million["input_cache_read"]) if "input_cache_read" in per_million else None,
        )
    except (KeyError, InvalidOperation, MoneyError):
        return None
    return prices
