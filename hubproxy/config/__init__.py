"""Configuration: `paths` (where files live), `catalog` (providers, models, prices, plans: the priced
domain types), `prices` (tiers, hours of day, price ids), `listprices` (the genai-prices catalog, read
at config time), `settings` (config.toml as a whole: load, validate, save). The names most code needs
are importable from here."""

from hubproxy.config.catalog import (
    ENV_VAR_RE,
    WIRE_APIS,
    Deployment,
    Model,
    Plan,
    Provider,
    check_base_url,
    check_model_name,
    check_provider_name,
    price_settings,
    priced_model,
)
from hubproxy.config.errors import ConfigError
from hubproxy.config.paths import HOME_ENV, Paths
from hubproxy.config.prices import PriceTier, ordered_tiers, parse_tiers, tier_dict
from hubproxy.config.settings import BillingSettings, Config, RoutingSettings, ServerSettings, StoreSettings, Timeouts

__all__ = [
    "ENV_VAR_RE",
    "HOME_ENV",
    "WIRE_APIS",
    "BillingSettings",
    "Config",
    "ConfigError",
    "Deployment",
    "Model",
    "Paths",
    "Plan",
    "PriceTier",
    "Provider",
    "RoutingSettings",
    "ServerSettings",
    "StoreSettings",
    "Timeouts",
    "check_base_url",
    "check_model_name",
    "check_provider_name",
    "ordered_tiers",
    "parse_tiers",
    "price_settings",
    "priced_model",
    "tier_dict",
]
