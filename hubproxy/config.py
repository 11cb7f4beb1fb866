"""config.toml: where it lives, what it may say, and how it is written back.

config.toml holds declarative things only (server settings, providers, models, prices) and is safe
to keep in git: it never holds a secret. State (users, keys, balances, usage) is in SQLite.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import tomli_w

from hubproxy.filemodes import fix_modes, write_private
from hubproxy.money import MoneyError, format_price, format_usd, parse_price, parse_usd

HOME_ENV = "HUBPROXY_HOME"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")
PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CORS_ORIGIN_RE = re.compile(r"^(\*|https?://[A-Za-z0-9.\-\[\]:]+?(:(\d{1,5}|\*))?)$")
LOCAL_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*")


class ConfigError(ValueError):
    """config.toml or a value meant for it is wrong; the message says what and where."""


@dataclass(frozen=True)
class Paths:
    """Where config, database and the fallback credentials file live."""

    config_dir: Path
    data_dir: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Paths:
        """--home wins, then HUBPROXY_HOME, then platformdirs' per-user directories."""
        chosen = home or os.environ.get(HOME_ENV)
        if chosen:
            root = Path(chosen).expanduser().resolve()
            return cls(root, root)
        return cls(Path(platformdirs.user_config_dir("hubproxy")), Path(platformdirs.user_data_dir("hubproxy")))

    @property
    def config(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def database(self) -> Path:
        return self.data_dir / "hubproxy.db"

    @property
    def credentials(self) -> Path:
        return self.config_dir / "credentials.json"

    @property
    def journal(self) -> Path:
        return self.data_dir / "journal"

    @property
    def admin_token(self) -> Path:
        return self.data_dir / "admin-token"

    def make_private(self) -> list[Path]:
        """Tighten the home's directories and files that others can read; returns those changed."""
        db = str(self.database)
        files = [self.config, self.credentials, self.admin_token, self.database, Path(db + "-wal"), Path(db + "-shm")]
        return fix_modes(sorted({self.config_dir, self.data_dir}), files)


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_mb: int = 16
    drain_seconds: float = 20.0
    access_log: bool = True
    trusted_proxies: list = field(default_factory=list)
    accounts_api: bool = False
    allow_registration: bool = True
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections_per_address: int = 256
    cors_origins: list = field(default_factory=lambda: list(LOCAL_ORIGINS))


@dataclass
class Timeouts:
    connect: float = 10.0
    first_byte: float = 300.0
    idle: float = 120.0


@dataclass
class BillingSettings:
    default_max_tokens: int = 4096
    bytes_per_token: int = 3
    signup_grant: str = "0"


@dataclass
class Provider:
    name: str
    base_url: str
    api_key_env: str | None = None
    api_key_stored: bool = False
    api_style: str = "openai"
    headers: dict[str, str] = field(default_factory=dict)
    stream_usage: bool = True
    timeout: float | None = None
    max_concurrent: int | None = None
    preset: str | None = None


@dataclass
class RoutingSettings:
    max_attempts: int = 3
    backoff_ms: int = 50
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0


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

    def prices_for(self, prompt_tokens: int) -> tuple[int | None, int | None, int | None]:
        """(input, output, cached input) prices for a call with this many prompt tokens: the highest
        tier the prompt passes, else the model's own prices."""
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above:
                return tier.input_price, tier.output_price, tier.cached_input_price
        return self.input_price, self.output_price, self.cached_input_price

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


@dataclass
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    timeouts: Timeouts = field(default_factory=Timeouts)
    billing: BillingSettings = field(default_factory=BillingSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    providers: dict[str, Provider] = field(default_factory=dict)
    models: dict[str, Model] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read and validate config.toml; a missing file is the defaults."""
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(data, origin=str(path))

    @classmethod
    def from_dict(cls, data: dict, origin: str = "config") -> Config:
        cfg = cls(
            server=_section(ServerSettings, data.get("server", {}), f"{origin} [server]"),
            timeouts=_section(Timeouts, data.get("timeouts", {}), f"{origin} [timeouts]"),
            billing=_section(BillingSettings, data.get("billing", {}), f"{origin} [billing]"),
            routing=_section(RoutingSettings, data.get("routing", {}), f"{origin} [routing]"),
        )
        for name, raw in _table(data, "providers", origin).items():
            cfg.providers[name] = _provider(name, raw, origin)
        for name, raw in _table(data, "models", origin).items():
            cfg.models[name] = _model(name, raw, origin)
        for name, raw in _table(data, "plans", origin).items():
            cfg.plans[name] = _plan(name, raw, origin)
        cfg.validate(origin)
        return cfg

    def validate(self, origin: str = "config") -> None:
        for model in self.models.values():
            for target in model.targets:
                if target.provider not in self.providers:
                    raise ConfigError(f"{origin}: model {model.name!r} uses unknown provider {target.provider!r}")
        r = self.routing
        if r.max_attempts < 1 or r.backoff_ms < 0 or r.breaker_failures < 1 or r.breaker_cooldown <= 0:
            raise ConfigError(f"{origin} [routing] values must be positive")
        if not 0 < self.server.port < 65536:
            raise ConfigError(f"{origin} [server] port must be 1-65535")
        for proxy in self.server.trusted_proxies:
            try:
                ipaddress.ip_network(str(proxy), strict=False)
            except ValueError:
                raise ConfigError(f"{origin} [server] trusted_proxies: {proxy!r} is not an IP or CIDR") from None
        server = self.server
        if server.header_timeout < 0 or server.body_timeout < 0 or server.max_connections_per_address < 0:
            raise ConfigError(
                f"{origin} [server] header_timeout, body_timeout and max_connections_per_address must be 0 (no limit) "
                "or positive"
            )
        for origin_url in server.cors_origins:
            if not isinstance(origin_url, str) or not CORS_ORIGIN_RE.match(origin_url):
                raise ConfigError(
                    f"{origin} [server] cors_origins: {origin_url!r} is not an origin like 'https://app.example.com', "
                    "'http://localhost:*' or '*'"
                )
        if self.billing.default_max_tokens < 1 or self.billing.bytes_per_token < 1:
            raise ConfigError(f"{origin} [billing] values must be positive")
        try:
            parse_usd(self.billing.signup_grant, what="signup_grant")
        except MoneyError as exc:
            raise ConfigError(f"{origin} [billing] {exc}") from None
        for name in ("connect", "first_byte", "idle"):
            if getattr(self.timeouts, name) <= 0:
                raise ConfigError(f"{origin} [timeouts] {name} must be positive")

    def to_dict(self) -> dict:
        providers = {}
        for p in self.providers.values():
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
            providers[p.name] = entry
        models = {m.name: _model_dict(m) for m in self.models.values()}
        return {
            "server": {
                **vars(self.server),
                "trusted_proxies": list(self.server.trusted_proxies),
                "cors_origins": list(self.server.cors_origins),
            },
            "timeouts": vars(self.timeouts).copy(),
            "billing": vars(self.billing).copy(),
            "routing": vars(self.routing).copy(),
            "providers": providers,
            "models": models,
            "plans": {p.name: _plan_dict(p) for p in self.plans.values()},
        }

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a running server never reads half a file."""
        write_private(path, HEADER + tomli_w.dumps(self.to_dict()))


HEADER = (
    "# hubproxy configuration. Safe to keep in git: secrets live in the OS keyring or the environment.\n"
    "# Every setting is documented in config.example.toml. Prices are USD per 1M tokens.\n\n"
)


def _table(data: dict, key: str, origin: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: [{key}] must be a table")
    return value


def _section(kind: type, raw: object, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    defaults = kind()
    values = {}
    for key, value in raw.items():
        if not hasattr(defaults, key):
            raise ConfigError(f"{where}: unknown setting {key!r}")
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key} must be {expected.__name__}, got {value!r}")
        values[key] = value
    return kind(**values)


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
        "tiers",
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
    except MoneyError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    tiers = parse_tiers(raw.get("tiers", []), where)
    if tiers and input_price is None:
        raise ConfigError(f"{where}: tiers need the model's own input_price and output_price too")
    deployments = tuple(_deployment(item, name, where) for item in raw.get("deployments", []))
    if deployments:
        first = deployments[0]
        return Model(
            name, first.provider, first.upstream_model, input_price, output_price, deployments, cached_price, tiers
        )
    provider = raw.get("provider")
    if not isinstance(provider, str):
        raise ConfigError(f"{where}: provider (or a deployments list) is required")
    upstream = raw.get("upstream_model", name)
    if not isinstance(upstream, str) or not upstream:
        raise ConfigError(f"{where}: upstream_model must be a non-empty string")
    return Model(name, provider, upstream, input_price, output_price, (), cached_price, tiers)


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
    if m.priced:
        entry.update(input_price=format_price(m.input_price), output_price=format_price(m.output_price))
    if m.cached_input_price is not None:
        entry["cached_input_price"] = format_price(m.cached_input_price)
    if m.tiers:
        entry["tiers"] = [tier_dict(t) for t in m.tiers]
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


def check_base_url(url: object, where: str = "base_url") -> str:
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
        raise ConfigError(f"{where}: base_url must be an http(s) URL, got {url!r}")
    return url.rstrip("/")
