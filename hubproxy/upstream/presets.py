"""Provider presets, kept as data in presets.toml beside this module, and the prices they carry."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources

from hubproxy.config import ConfigError, Model, PriceTier, parse_tiers
from hubproxy.money import MoneyError, parse_price


@dataclass(frozen=True)
class Prices:
    """Micro-USD per 1M tokens, as on a Model."""

    input: int
    output: int
    cached_input: int | None = None
    tiers: tuple[PriceTier, ...] = ()
    cache_write: int | None = None

    def model(self, name: str, provider: str) -> Model:
        """A model served as `name` through `provider` at these prices."""
        return Model(name, provider, name, self.input, self.output, (), self.cached_input, self.tiers, self.cache_write)


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
    listing_prices: str | None = None
    apis: tuple[str, ...] = ("chat",)
    messages_base_url: str | None = None
    messages_source: str | None = None  # the vendor's page for its Anthropic-compatible API, and when read
    limit_field: str = "max_tokens"  # what its chat API limits output with (Provider.limit_field)
    models: dict[str, Prices] = field(default_factory=dict)

    def price_of(self, model_id: str, listing: dict | None = None) -> tuple[Prices | None, str]:
        """The price for a model this provider lists, and where it came from; (None, "") when unknown."""
        if model_id in self.models:
            return self.models[model_id], f"preset {self.name}"
        if self.local:
            return FREE, "local"
        if self.listing_prices and listing is not None:
            found = listed_prices(listing, self.listing_prices)
            if found is not None:
                return found, "listing"
        return None, ""


def _prices(name: str, model: str, raw: dict) -> Prices:
    where = f"preset {name} model {model}"
    cached, written = raw.get("cached_input"), raw.get("cache_write")
    try:
        return Prices(
            parse_price(raw["input"], what=f"{where} input"),
            parse_price(raw["output"], what=f"{where} output"),
            None if cached is None else parse_price(cached, what=f"{where} cached_input"),
            parse_tiers(raw.get("tiers", []), where),
            None if written is None else parse_price(written, what=f"{where} cache_write"),
        )
    except (KeyError, MoneyError) as exc:
        raise ConfigError(f"{where}: bad price {exc}") from None


def load_presets() -> dict[str, Preset]:
    text = resources.files("hubproxy.upstream").joinpath("presets.toml").read_text(encoding="utf-8")
    presets = {}
    for name, entry in tomllib.loads(text).items():
        models = {model: _prices(name, model, raw) for model, raw in entry.pop("models", {}).items()}
        entry["apis"] = tuple(entry.get("apis", ("chat",)))
        presets[name] = Preset(name=name, models=models, **entry)
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


def listed_prices(item: dict, style: str) -> Prices | None:
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
        prices = Prices(
            parse_price(per_million[input_key]),
            parse_price(per_million[output_key]),
            parse_price(per_million[cached_key]) if cached_key in per_million else None,
        )
    except (KeyError, InvalidOperation, MoneyError):
        return None
    if not zero_is_a_price and (prices.input == 0 or prices.output == 0):
        return None
    return prices
