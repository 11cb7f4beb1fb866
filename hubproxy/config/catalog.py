"""What is served and at what price: providers, models with their deployments and price tiers, plans.

These are the priced domain types the router and billing read; config.toml holds them, and this
module parses and writes their tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from hubproxy.money import MoneyError, format_price, format_usd, parse_price, parse_usd
from hubproxy.tokens import PART_PRICES

SET_APART = ("cached_input_price", "cache_write_price")  # Model fields of their own (tiers set the first)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")
PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WIRE_APIS = ("chat", "messages", "responses")


class ConfigError(ValueError):
    """config.toml or a value meant for it is wrong; the message says what and where."""


@dataclass
class Provider:
    name: str
    base_url: str
    api_key_env: str | None = None
    api_key_stored: bool = False
    api_style: str = "openai"
    apis: tuple[str, ...] = ("chat",)  # wire APIs it serves: "chat" (OpenAI), "messages" (Anthropic)
    messages_base_url: str | None = None  # where its Messages API lives, when not at base_url
    headers: dict[str, str] = field(default_factory=dict)
    stream_usage: bool = True
    timeout: float | None = None
    max_concurrent: int | None = None
    preset: str | None = None
    # the chat field that limits output when hubproxy sets one: OpenAI's reasoning models (GPT-5, o3)
    # refuse `max_tokens` and take `max_completion_tokens`; most other chat APIs know only `max_tokens`
    limit_field: str = "max_tokens"


LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class Deployment:
    """One provider + upstream model that can serve a public model id."""

    provider: str
    upstream_model: str
    priority: int = 0
    weight: int = 1


@dataclass(frozen=True)
class PriceTier:
    """Prices for a call whose prompt is longer than `above` tokens: providers such as Gemini 2.5 Pro
    (over 200k) and Qwen bill the whole call at a higher rate then."""

    above: int
    input_price: int
    output_price: int
    cached_input_price: int | None = None


@dataclass
class Model:
    name: str
    provider: str
    upstream_model: str
    input_price: int | None
    output_price: int | None
    deployments: tuple[Deployment, ...] = ()
    cached_input_price: int | None = None
    tiers: tuple[PriceTier, ...] = ()  # ascending by `above`
    cache_write_price: int | None = None  # prompt tokens written to the provider's cache (Anthropic bills them)
    max_output_tokens: int | None = None  # the most output the model can make in one answer, where known
    rates: dict[str, int] = field(default_factory=dict)  # other token classes' prices, by setting (tokens.py)

    def prices_for(self, prompt_tokens: int) -> tuple[int | None, int | None, int | None]:
        """(input, output, cached input) prices for a call with this many prompt tokens: the highest
        tier the prompt passes, else the model's own prices."""
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above:
                return tier.input_price, tier.output_price, tier.cached_input_price
        return self.input_price, self.output_price, self.cached_input_price

    def price_table(self, prompt_tokens: int) -> dict[str, int | None]:
        """Every token class's price for a call with this many prompt tokens, by its setting name
        (`tokens.TOKEN_CLASSES`): a tier's input, output and cached prices where the prompt passes it."""
        input_price, output_price, cached_price = self.prices_for(prompt_tokens)
        return {
            **self.rates,
            "input_price": input_price,
            "output_price": output_price,
            "cached_input_price": cached_price,
            "cache_write_price": self.cache_write_price,
        }

    @property
    def priced(self) -> bool:
        """Unpriced models (added by `models sync`) are never served: no billing at a guessed price."""
        return self.input_price is not None and self.output_price is not None

    @property
    def targets(self) -> tuple[Deployment, ...]:
        """Every deployment; a model without a `deployments` list has exactly one."""
        return self.deployments or (Deployment(self.provider, self.upstream_model),)


@dataclass(frozen=True)
class Plan:
    """Defaults for every user on the plan: limits (a key's own limits win), included monthly credit
    (pico-USD, granted once per calendar month), and a price multiplier in millionths (1.0 = 1_000_000)."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    monthly_credit: int = 0
    price_multiplier: int = 1_000_000

    def price(self, cost: int) -> int:
        """The plan's price for a cost; rounded down to the pico-USD, in integers."""
        return cost * self.price_multiplier // 1_000_000


def _provider(name: str, raw: dict, origin: str) -> Provider:
    where = f"{origin} [providers.{name}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    check_provider_name(name)
    if "api_key" in raw:
        raise ConfigError(f"{where}: secrets do not belong in config.toml; use api_key_env or --api-key-stdin")
    unknown = set(raw) - {
        "base_url",
        "api_key_env",
        "api_key_stored",
        "api_style",
        "headers",
        "stream_usage",
        "timeout",
        "max_concurrent",
        "preset",
        "apis",
        "messages_base_url",
        "limit_field",
    }
    timeout, max_concurrent = raw.get("timeout"), raw.get("max_concurrent")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigError(f"{where}: timeout must be a positive number of seconds")
    if max_concurrent is not None and (
        isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1
    ):
        raise ConfigError(f"{where}: max_concurrent must be a positive integer")
    if unknown:
        raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    base_url = check_base_url(raw.get("base_url", ""), where)
    env = raw.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not ENV_VAR_RE.match(env)):
        raise ConfigError(f"{where}: api_key_env must be an environment variable name")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{where}: headers must be a table of strings")
    if any(c in f"{name}{value}" for name, value in headers.items() for c in "\r\n"):
        raise ConfigError(f"{where}: header names and values cannot contain line breaks")
    preset = raw.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{where}: preset must be a preset name")
    apis = raw.get("apis", ["chat"])
    if not isinstance(apis, list) or not apis or any(api not in WIRE_APIS for api in apis):
        raise ConfigError(f"{where}: apis must be a non-empty list of {', '.join(map(repr, WIRE_APIS))}")
    messages_url = raw.get("messages_base_url")
    if messages_url is not None:
        messages_url = check_base_url(messages_url, f"{where} messages_base_url")
    limit_field = raw.get("limit_field", "max_tokens")
    if limit_field not in LIMIT_FIELDS:
        raise ConfigError(f"{where}: limit_field must be one of {', '.join(map(repr, LIMIT_FIELDS))}")
    style = raw.get("api_style", "openai")
    if style != "openai":
        raise ConfigError(f"{where}: api_style {style!r} is not supported (supported: 'openai')")
    return Provider(
        name=name,
        base_url=base_url,
        api_key_env=env,
        api_key_stored=bool(raw.get("api_key_stored", False)),
        api_style=style,
        headers=headers,
        stream_usage=bool(raw.get("stream_usage", True)),
        timeout=None if timeout is None else float(timeout),
        max_concurrent=max_concurrent,
        preset=preset,
        apis=tuple(dict.fromkeys(apis)),
        messages_base_url=messages_url,
        limit_field=limit_field,
    )


def _model(name: str, raw: dict, origin: str) -> Model:
    where = f"{origin} [models.{name}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    check_model_name(name)
    unknown = set(raw) - {
        "provider",
        "upstream_model",
        "input_price",
        "output_price",
        "deployments",
        "cached_input_price",
        *PART_PRICES,
        "tiers",
        "max_output_tokens",
    }
    if unknown:
        raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    if ("input_price" in raw) != ("output_price" in raw):
        raise ConfigError(f"{where}: give both input_price and output_price, or neither (unpriced)")
    try:
        input_price = parse_price(raw["input_price"], what="input_price") if "input_price" in raw else None
        output_price = parse_price(raw["output_price"], what="output_price") if "output_price" in raw else None
        cached = raw.get("cached_input_price")
        cached_price = None if cached is None else parse_price(cached, what="cached_input_price")
        written = raw.get("cache_write_price")
        write_price = None if written is None else parse_price(written, what="cache_write_price")
        rates = {
            setting: parse_price(raw[setting], what=setting)
            for setting in PART_PRICES
            if setting not in SET_APART and raw.get(setting) is not None
        }
    except MoneyError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    tiers = parse_tiers(raw.get("tiers", []), where)
    limit = raw.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10**9):
        raise ConfigError(f"{where}: max_output_tokens must be a positive integer")
    if tiers and input_price is None:
        raise ConfigError(f"{where}: tiers need the model's own input_price and output_price too")
    deployments = tuple(_deployment(item, name, where) for item in raw.get("deployments", []))
    if deployments:
        first = deployments[0]
        return Model(
            name,
            first.provider,
            first.upstream_model,
            input_price,
            output_price,
            deployments,
            cached_price,
            tiers,
            write_price,
            limit,
            rates,
        )
    provider = raw.get("provider")
    if not isinstance(provider, str):
        raise ConfigError(f"{where}: provider (or a deployments list) is required")
    upstream = raw.get("upstream_model", name)
    if not isinstance(upstream, str) or not upstream:
        raise ConfigError(f"{where}: upstream_model must be a non-empty string")
    return Model(
        name, provider, upstream, input_price, output_price, (), cached_price, tiers, write_price, limit, rates
    )


def parse_tiers(raw: object, where: str) -> tuple[PriceTier, ...]:
    """A `tiers` list as config.toml and presets.toml write it, checked and in ascending order."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: tiers must be a list of tables")
    tiers = []
    for item in raw:
        keys = {"above_prompt_tokens", "input_price", "output_price", "cached_input_price"}
        if (
            not isinstance(item, dict)
            or set(item) - keys
            or not {"above_prompt_tokens", "input_price", "output_price"} <= set(item)
        ):
            raise ConfigError(
                f"{where}: each tier is {{ above_prompt_tokens, input_price, output_price[, cached_input_price] }}"
            )
        above = item["above_prompt_tokens"]
        if isinstance(above, bool) or not isinstance(above, int) or above < 1:
            raise ConfigError(f"{where}: tier above_prompt_tokens must be a positive integer")
        try:
            cached = item.get("cached_input_price")
            tiers.append(
                PriceTier(
                    above,
                    parse_price(item["input_price"], what="tier input_price"),
                    parse_price(item["output_price"], what="tier output_price"),
                    None if cached is None else parse_price(cached, what="tier cached_input_price"),
                )
            )
        except MoneyError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return ordered_tiers(tiers, where)


def ordered_tiers(tiers: Iterable[PriceTier], where: str) -> tuple[PriceTier, ...]:
    """Tiers in ascending order of prompt size, refusing two that start at the same size."""
    ordered = tuple(sorted(tiers, key=lambda t: t.above))
    if len({t.above for t in ordered}) != len(ordered):
        raise ConfigError(f"{where}: two tiers start above the same prompt size")
    return ordered


def tier_dict(t: PriceTier) -> dict:
    entry = {"above_prompt_tokens": t.above, "input_price": format_price(t.input_price)}
    entry["output_price"] = format_price(t.output_price)
    if t.cached_input_price is not None:
        entry["cached_input_price"] = format_price(t.cached_input_price)
    return entry


def _deployment(item: object, model: str, where: str) -> Deployment:
    if not isinstance(item, dict) or not isinstance(item.get("provider"), str):
        raise ConfigError(f"{where}: each deployment needs a provider")
    upstream = item.get("upstream_model", model)
    priority, weight = item.get("priority", 0), item.get("weight", 1)
    if not isinstance(upstream, str) or not isinstance(priority, int) or not isinstance(weight, int) or weight < 1:
        raise ConfigError(f"{where}: deployment upstream_model is a string, priority an integer, weight >= 1")
    return Deployment(item["provider"], upstream, priority, weight)


def _model_dict(m: Model) -> dict:
    entry: dict = {}
    if m.input_price is not None and m.output_price is not None:
        entry.update(input_price=format_price(m.input_price), output_price=format_price(m.output_price))
    if m.cached_input_price is not None:
        entry["cached_input_price"] = format_price(m.cached_input_price)
    if m.cache_write_price is not None:
        entry["cache_write_price"] = format_price(m.cache_write_price)
    for setting, price in sorted(m.rates.items()):
        entry[setting] = format_price(price)
    if m.tiers:
        entry["tiers"] = [tier_dict(t) for t in m.tiers]
    if m.max_output_tokens is not None:
        entry["max_output_tokens"] = m.max_output_tokens
    if m.deployments:
        entry["deployments"] = [vars(d).copy() for d in m.deployments]
    else:
        entry.update(provider=m.provider, upstream_model=m.upstream_model)
    return entry


def _plan(name: str, raw: dict, origin: str) -> Plan:
    where = f"{origin} [plans.{name}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    if not PROVIDER_RE.match(name):
        raise ConfigError(f"{where}: plan names are lowercase letters, digits, '-' or '_'")
    unknown = set(raw) - {"rpm", "tpm", "max_parallel", "monthly_credit", "price_multiplier"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    limits = {}
    for key in ("rpm", "tpm", "max_parallel"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{where}: {key} must be a positive integer")
        limits[key] = value
    try:
        credit = parse_usd(raw.get("monthly_credit", "0"), what="monthly_credit")
        multiplier = parse_price(raw.get("price_multiplier", "1"), what="price_multiplier")
    except MoneyError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Plan(name, monthly_credit=credit, price_multiplier=multiplier, **limits)


def _plan_dict(plan: Plan) -> dict:
    entry: dict = {k: getattr(plan, k) for k in ("rpm", "tpm", "max_parallel") if getattr(plan, k) is not None}
    entry["monthly_credit"] = format_usd(plan.monthly_credit)
    entry["price_multiplier"] = format_price(plan.price_multiplier)
    return entry


def check_provider_name(name: str) -> str:
    if not PROVIDER_RE.match(name):
        raise ConfigError(f"provider name {name!r} must be lowercase letters, digits, '-' or '_'")
    return name


def check_model_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"model name {name!r} has characters a model id cannot have")
    return name


ENDPOINT_SUFFIXES = ("/chat/completions", "/completions", "/embeddings", "/messages", "/responses", "/models")


def check_base_url(url: object, where: str = "base_url") -> str:
    """An http(s) URL, without an endpoint's path: hubproxy adds `/chat/completions` (or
    `/v1/messages`, `/responses`) itself, so a URL that already ends in one would call it twice."""
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
        raise ConfigError(f"{where}: base_url must be an http(s) URL, got {url!r}")
    url = url.rstrip("/")
    for suffix in ENDPOINT_SUFFIXES:
        if url.endswith(suffix):
            raise ConfigError(
                f"{where}: give the base URL without {suffix!r} (hubproxy adds the endpoint's path): "
                f"{url[: -len(suffix)]!r}"
            )
    return url


def provider_dict(p: Provider) -> dict:
    entry: dict = {"base_url": p.base_url, "api_style": p.api_style}
    if p.api_key_env:
        entry["api_key_env"] = p.api_key_env
    if p.api_key_stored:
        entry["api_key_stored"] = True
    if p.headers:
        entry["headers"] = dict(p.headers)
    if not p.stream_usage:
        entry["stream_usage"] = False
    if p.timeout is not None:
        entry["timeout"] = p.timeout
    if p.max_concurrent is not None:
        entry["max_concurrent"] = p.max_concurrent
    if p.preset is not None:
        entry["preset"] = p.preset
    if p.apis != ("chat",):
        entry["apis"] = list(p.apis)
    if p.messages_base_url is not None:
        entry["messages_base_url"] = p.messages_base_url
    if p.limit_field != "max_tokens":
        entry["limit_field"] = p.limit_field
    return entry
