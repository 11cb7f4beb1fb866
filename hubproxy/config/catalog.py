"""What is served and at what price: providers, models with their deployments and price tiers, plans.

These are the priced domain types the router and billing read; config.toml holds them, and this
module parses and writes their tables.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hubproxy.config.errors import ConfigError
from hubproxy.config.prices import (
    HourPrices,
    PriceTier,
    hours_dict,
    parse_hours,
    parse_tiers,
    price_version,
    read_prices,
    tier_dict,
)
from hubproxy.money import MoneyError, format_price, format_usd, parse_price, parse_usd
from hubproxy.tokens import PART_PRICES

SET_APART = ("cached_input_price", "cache_write_price")  # Model fields of their own (tiers set the first)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")
PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WIRE_APIS = ("chat", "messages", "responses", "gemini")


@dataclass
class Provider:
    name: str
    base_url: str
    api_key_env: str | None = None
    api_key_stored: bool = False
    api_style: str = "openai"
    apis: tuple[str, ...] = (
        "chat",
    )  # wire APIs it serves: "chat", "responses" (OpenAI), "messages" (Anthropic), "gemini"
    messages_base_url: str | None = None  # where its Messages API lives, when not at base_url
    gemini_base_url: str | None = None  # where its Gemini API (/v1beta/models/…) lives, when not at base_url
    responses_socket: bool = False  # streamed Responses calls over its WebSocket (OpenAI's WebSocket mode)
    # its egress proxy: None: HTTPS_PROXY / HTTP_PROXY / NO_PROXY; "none": never; "env:VAR"; or a URL
    proxy: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stream_usage: bool = True
    timeout: float | None = None
    max_concurrent: int | None = None
    preset: str | None = None
    # the chat field that limits output when hubproxy sets one: OpenAI's reasoning models (GPT-5, o3)
    # refuse `max_tokens` and take `max_completion_tokens`; most other chat APIs know only `max_tokens`
    limit_field: str = "max_tokens"
    # how its usage counts reasoning: "within" the completion tokens (OpenAI, DeepSeek, Anthropic) or
    # "added" beside them (xAI): then the output billed is both
    reasoning: str = "within"


LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")
REASONING_RULES = ("within", "added")


@dataclass(frozen=True)
class Deployment:
    """One provider + upstream model that can serve a public model id."""

    provider: str
    upstream_model: str
    priority: int = 0
    weight: int = 1


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
    hours: tuple[HourPrices, ...] = ()  # prices in force at some hours of the day (UTC), last match wins
    price_id: str = field(init=False, repr=False, compare=False)  # what a usage row records (prices.price_id)
    dearest: Model = field(init=False, repr=False, compare=False)  # every price at its highest over `hours`
    windows: tuple[tuple[HourPrices, Model], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.price_id = price_version(price_settings(self)) if self.priced else ""
        self.windows = tuple((h, self.with_prices(h.prices)) for h in self.hours)
        self.dearest = self
        if self.hours:
            highest = self.flat_prices()
            for _, window in self.windows:
                for setting, price in window.flat_prices().items():
                    highest[setting] = max(highest.get(setting, price), price)
            self.dearest = self.with_prices(highest)

    def flat_prices(self) -> dict[str, int]:
        """The model's own prices (no tiers, no hours) by setting, those it has."""
        prices = {
            "input_price": self.input_price,
            "output_price": self.output_price,
            "cached_input_price": self.cached_input_price,
            "cache_write_price": self.cache_write_price,
            **self.rates,
        }
        return {s: p for s, p in prices.items() if p is not None}

    def with_prices(self, prices: Mapping[str, int]) -> Model:
        """This model at other flat prices (the settings given replace the model's), without hours,
        keeping this model's price id: an hour window's prices are part of the model's price."""
        rates = {**self.rates, **{s: p for s, p in prices.items() if s not in SET_APART and s not in FLAT}}
        model = replace(
            self,
            input_price=prices.get("input_price", self.input_price),
            output_price=prices.get("output_price", self.output_price),
            cached_input_price=prices.get("cached_input_price", self.cached_input_price),
            cache_write_price=prices.get("cache_write_price", self.cache_write_price),
            rates=rates,
            hours=(),
        )
        model.price_id = self.price_id
        return model

    def in_force(self, minute: int) -> Model:
        """The model at the prices in force `minute` minutes after midnight UTC (the last hour window
        that covers it, else its own)."""
        for hours, window in reversed(self.windows):
            if hours.covers(minute):
                return window
        return self

    def prices_for(self, prompt_tokens: int) -> tuple[int | None, int | None, int | None]:
        """(input, output, cached input) prices for a call with this many prompt tokens: the highest
        tier the prompt passes, else the model's own prices."""
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above:
                return tier.input_price, tier.output_price, tier.cached_input_price
        return self.input_price, self.output_price, self.cached_input_price

    def price_table(self, prompt_tokens: int) -> dict[str, int | None]:
        """Every token class's price for a call with this many prompt tokens, by its setting name
        (`tokens.TOKEN_CLASSES`): a tier's prices where the prompt passes it."""
        table: dict[str, int | None] = {**self.rates, "cache_write_price": self.cache_write_price}
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above:
                table.update(tier.rates)
                table.update(input_price=tier.input_price, output_price=tier.output_price)
                table["cached_input_price"] = tier.cached_input_price
                return table
        table.update(
            input_price=self.input_price, output_price=self.output_price, cached_input_price=self.cached_input_price
        )
        return table

    @property
    def priced(self) -> bool:
        """Unpriced models (added by `models sync`) are never served: no billing at a guessed price."""
        return self.input_price is not None and self.output_price is not None

    @property
    def targets(self) -> tuple[Deployment, ...]:
        """Every deployment; a model without a `deployments` list has exactly one."""
        return self.deployments or (Deployment(self.provider, self.upstream_model),)


FLAT = ("input_price", "output_price")


def price_settings(m: Model) -> dict:
    """A model's prices as config.toml writes them (USD strings, tiers, hours): what `prices check`
    compares, the price history records, and the price id is made from."""
    entry: dict = {s: format_price(p) for s, p in m.flat_prices().items()}
    if m.tiers:
        entry["tiers"] = [tier_dict(t) for t in m.tiers]
    if m.hours:
        entry["hours"] = [hours_dict(h) for h in m.hours]
    return entry


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
    alert_thresholds: tuple[int, ...] | None = None  # its users' balance alerts, instead of [alerts] thresholds

    def price(self, cost: int) -> int:
        """The plan's price for a cost; rounded down to the pico-USD, in integers."""
        return cost * self.price_multiplier // 1_000_000


def check_proxy(value: object, where: str) -> str:
    """A provider's `proxy`: "none", "env:VAR" or an http:// URL with no credentials (those belong in
    the environment: config.toml holds no secrets)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f'{where}: proxy must be "none", "env:VAR" or an http://host:port URL')
    if value == "none":
        return value
    if value.startswith("env:"):
        if not ENV_VAR_RE.match(value[4:]):
            raise ConfigError(f"{where}: proxy env:VAR must name an environment variable")
        return value
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f'{where}: proxy must be "none", "env:VAR" or an http://host:port URL')
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f'{where}: a proxy\'s credentials do not belong in config.toml; use proxy = "env:VAR"')
    return value


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
        "gemini_base_url",
        "responses_socket",
        "proxy",
        "limit_field",
        "reasoning",
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
    gemini_url = raw.get("gemini_base_url")
    if gemini_url is not None:
        gemini_url = check_base_url(gemini_url, f"{where} gemini_base_url")
    proxy = raw.get("proxy")
    if proxy is not None:
        proxy = check_proxy(proxy, where)
    if not isinstance(raw.get("responses_socket", False), bool):
        raise ConfigError(f"{where}: responses_socket must be true or false")
    limit_field = raw.get("limit_field", "max_tokens")
    if limit_field not in LIMIT_FIELDS:
        raise ConfigError(f"{where}: limit_field must be one of {', '.join(map(repr, LIMIT_FIELDS))}")
    reasoning = raw.get("reasoning", "within")
    if reasoning not in REASONING_RULES:
        raise ConfigError(f"{where}: reasoning must be one of {', '.join(map(repr, REASONING_RULES))}")
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
        gemini_base_url=gemini_url,
        responses_socket=bool(raw.get("responses_socket", False)),
        proxy=proxy,
        limit_field=limit_field,
        reasoning=reasoning,
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
        "hours",
        "max_output_tokens",
    }
    if unknown:
        raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    if ("input_price" in raw) != ("output_price" in raw):
        raise ConfigError(f"{where}: give both input_price and output_price, or neither (unpriced)")
    prices = read_prices(raw, where)
    tiers = parse_tiers(raw.get("tiers", []), where)
    hours = parse_hours(raw.get("hours", []), where)
    limit = raw.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10**9):
        raise ConfigError(f"{where}: max_output_tokens must be a positive integer")
    if (tiers or hours) and "input_price" not in prices:
        raise ConfigError(f"{where}: tiers and hours need the model's own input_price and output_price too")
    if tiers and hours:
        raise ConfigError(f"{where}: a model has tiers or hours, not both")
    deployments = tuple(_deployment(item, name, where) for item in raw.get("deployments", []))
    provider, upstream = raw.get("provider"), raw.get("upstream_model", name)
    if deployments:
        provider, upstream = deployments[0].provider, deployments[0].upstream_model
    elif not isinstance(provider, str):
        raise ConfigError(f"{where}: provider (or a deployments list) is required")
    if not isinstance(upstream, str) or not upstream:
        raise ConfigError(f"{where}: upstream_model must be a non-empty string")
    return priced_model(
        name, provider, upstream, prices, deployments=deployments, tiers=tiers, hours=hours, max_output_tokens=limit
    )


def priced_model(name: str, provider: str, upstream: str, prices: Mapping[str, int], **more: Any) -> Model:
    """A model at these prices by setting (`config.prices.PRICE_SETTINGS`; none: unpriced)."""
    return Model(
        name,
        provider,
        upstream,
        prices.get("input_price"),
        prices.get("output_price"),
        cached_input_price=prices.get("cached_input_price"),
        cache_write_price=prices.get("cache_write_price"),
        rates={s: p for s, p in prices.items() if s not in SET_APART and s not in FLAT},
        **more,
    )


def _deployment(item: object, model: str, where: str) -> Deployment:
    if not isinstance(item, dict) or not isinstance(item.get("provider"), str):
        raise ConfigError(f"{where}: each deployment needs a provider")
    upstream = item.get("upstream_model", model)
    priority, weight = item.get("priority", 0), item.get("weight", 1)
    if not isinstance(upstream, str) or not isinstance(priority, int) or not isinstance(weight, int) or weight < 1:
        raise ConfigError(f"{where}: deployment upstream_model is a string, priority an integer, weight >= 1")
    return Deployment(item["provider"], upstream, priority, weight)


def _model_dict(m: Model) -> dict:
    entry: dict = price_settings(m) if m.priced else {}
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
    unknown = set(raw) - {"rpm", "tpm", "max_parallel", "monthly_credit", "price_multiplier", "alert_thresholds"}
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
    marks = raw.get("alert_thresholds")
    if marks is not None:
        marks = check_thresholds(marks, f"{where}: alert_thresholds")
    return Plan(name, monthly_credit=credit, price_multiplier=multiplier, alert_thresholds=marks, **limits)


def check_thresholds(marks: object, where: str) -> tuple[int, ...]:
    """Alert thresholds: percents from 1 to 100, at least one."""
    if (
        not isinstance(marks, list | tuple)
        or not marks
        or any(isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 100 for t in marks)
    ):
        raise ConfigError(f"{where} must be a list of percents from 1 to 100, e.g. [50, 80, 100]")
    return tuple(sorted(set(marks)))


def _plan_dict(plan: Plan) -> dict:
    entry: dict = {k: getattr(plan, k) for k in ("rpm", "tpm", "max_parallel") if getattr(plan, k) is not None}
    entry["monthly_credit"] = format_usd(plan.monthly_credit)
    entry["price_multiplier"] = format_price(plan.price_multiplier)
    if plan.alert_thresholds is not None:
        entry["alert_thresholds"] = list(plan.alert_thresholds)
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
    if p.gemini_base_url is not None:
        entry["gemini_base_url"] = p.gemini_base_url
    if p.responses_socket:
        entry["responses_socket"] = True
    if p.proxy is not None:
        entry["proxy"] = p.proxy
    if p.limit_field != "max_tokens":
        entry["limit_field"] = p.limit_field
    if p.reasoning != "within":
        entry["reasoning"] = p.reasoning
    return entry
