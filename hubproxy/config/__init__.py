"""Configuration: `paths` (where files live), `catalog` (providers, models, prices, plans: the priced
domain types), `settings` (config.toml as a whole: load, validate, save). The names most code needs
are importable from here."""

from hubproxy.config.catalog import (
    ENV_VAR_RE,
    WIRE_APIS,
    ConfigError,
    Deployment,
    Model,
    Plan,
    PriceTier,
    Provider,
    check_base_url,
    check_model_name,
    check_provider_name,
    ordered_tiers,
    parse_tiers,
    tier_dict,
)
from hubproxy.config.paths import HOME_ENV, Paths
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
    "tier_dict",
]
