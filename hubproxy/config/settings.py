"""config.toml: what it may say, how it is validated, and how it is written back.

config.toml holds declarative things only (server settings, providers, models, prices) and is safe
to keep in git: it never holds a secret. State (users, keys, balances, usage) is in the store.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import tomli_w

from hubproxy.config.catalog import (
    ENV_VAR_RE,
    ConfigError,
    Model,
    Plan,
    Provider,
    _model,
    _model_dict,
    _plan,
    _plan_dict,
    _provider,
    check_thresholds,
    provider_dict,
)
from hubproxy.filemodes import write_private
from hubproxy.money import MoneyError, parse_usd

CORS_ORIGIN_RE = re.compile(r"^(\*|https?://[A-Za-z0-9.\-\[\]:]+?(:(\d{1,5}|\*))?)$")
LOCAL_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*")


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
    tls_cert: str = ""
    tls_key: str = ""
    metrics_token: str = ""  # GET /metrics from other machines needs it as a bearer token; the machine itself does not
    websocket: bool = (
        True  # /v1/responses over a WebSocket (Codex's `supports_websockets`); off: a 426 sends it to HTTP
    )
    websocket_idle: float = 300.0  # seconds a socket may wait for its next call before it is closed


@dataclass
class Timeouts:
    connect: float = 10.0
    first_byte: float = 300.0
    idle: float = 120.0


@dataclass
class BillingSettings:
    default_max_tokens: int = 4096
    bytes_per_token: int = 3
    image_tokens: int = 2560
    signup_grant: str = "0"


@dataclass
class RoutingSettings:
    max_attempts: int = 3
    backoff_ms: int = 50
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0


@dataclass
class StoreSettings:
    """Where several instances share their state; empty: the SQLite file in the home, limits per process.
    No password here (config.toml is meant for git): PGPASSWORD or ~/.pgpass, or the whole URL in
    HUBPROXY_DATABASE_URL / HUBPROXY_REDIS_URL."""

    url: str = ""
    redis: str = ""
    keep_days: int = 400  # usage rows older than this are pruned (the daily and hourly totals stay); 0: forever


@dataclass
class AlertSettings:
    """Budget alerts (`hubproxy/alerts.py`): each threshold crossed, once per period, to each receiver."""

    thresholds: list = field(default_factory=lambda: [50, 80, 100])  # percent used: of a user's money since
    # the last top-up, and of a key's spend cap this period
    webhook: str = ""  # an http(s) URL: Slack-compatible JSON, or generic JSON signed with HMAC-SHA256
    webhook_format: str = "slack"  # "slack" ({"text": …}) or "json"
    webhook_secret_env: str = ""  # the environment variable holding the HMAC key of "json" alerts
    smtp_host: str = ""  # email: the SMTP server (none: no email)
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_to: list = field(default_factory=list)  # who gets every alert (the admins)
    smtp_user: str = ""
    smtp_password_env: str = ""  # the environment variable holding the SMTP password


@dataclass
class DashboardSettings:
    """The web dashboard at / on the server's port (off: its routes do not exist)."""

    enabled: bool = True
    # single sign-on (OpenID Connect, dashboard/sso.py): the provider's discovery URL ("": none), this
    # server's client id there, the environment variable holding its client secret, the email domains
    # allowed in ([]: any), the emails that get the admin's session; password_login false: SSO only
    oidc_discovery: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_env: str = ""
    oidc_domains: list = field(default_factory=list)
    oidc_admins: list = field(default_factory=list)
    password_login: bool = True


@dataclass
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
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
            store=_section(StoreSettings, data.get("store", {}), f"{origin} [store]"),
            dashboard=_section(DashboardSettings, data.get("dashboard", {}), f"{origin} [dashboard]"),
            alerts=_section(AlertSettings, data.get("alerts", {}), f"{origin} [alerts]"),
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
        check_store_url(self.store.url, f"{origin} [store] url", ("postgresql", "postgres"), "PGPASSWORD or ~/.pgpass")
        check_store_url(self.store.redis, f"{origin} [store] redis", ("redis", "rediss", "unix"), "HUBPROXY_REDIS_URL")
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
        keep = self.store.keep_days
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ConfigError(f"{origin} [store] keep_days must be a whole number of days (0: keep every call)")
        check_alerts(self.alerts, f"{origin} [alerts]")
        check_sign_on(self.dashboard, f"{origin} [dashboard]")
        if server.websocket_idle <= 0:
            raise ConfigError(f"{origin} [server] websocket_idle must be a positive number of seconds")
        if bool(server.tls_cert) != bool(server.tls_key):
            raise ConfigError(f"{origin} [server] tls_cert and tls_key go together: give both or neither")
        if self.billing.default_max_tokens < 1 or self.billing.bytes_per_token < 1 or self.billing.image_tokens < 0:
            raise ConfigError(f"{origin} [billing] values must be positive")
        try:
            parse_usd(self.billing.signup_grant, what="signup_grant")
        except MoneyError as exc:
            raise ConfigError(f"{origin} [billing] {exc}") from None
        for name in ("connect", "first_byte", "idle"):
            if getattr(self.timeouts, name) <= 0:
                raise ConfigError(f"{origin} [timeouts] {name} must be positive")

    def to_dict(self) -> dict:
        providers = {p.name: provider_dict(p) for p in self.providers.values()}
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
            **changed("dashboard", self.dashboard, DashboardSettings()),
            **changed("store", self.store, StoreSettings()),
            **changed("alerts", self.alerts, AlertSettings()),
            "providers": providers,
            "models": models,
            "plans": {p.name: _plan_dict(p) for p in self.plans.values()},
        }

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a running server never reads half a file: into the
        user's own file where there is one (its comments and layout kept: `config/edit.py`), else whole."""
        data = self.to_dict()
        if not path.exists():
            write_private(path, HEADER + tomli_w.dumps(data))
            return
        from hubproxy.config.edit import edited  # tomlkit: only for a command that changes config.toml

        write_private(path, edited(path.read_text(encoding="utf-8"), data))


HEADER = (
    "# hubproxy configuration. Safe to keep in git: secrets live in the OS keyring or the environment.\n"
    "# Every setting is documented in config.example.toml. Prices are USD per 1M tokens.\n\n"
)


def check_store_url(url: str, where: str, schemes: tuple[str, ...], instead: str) -> None:
    """A database or Redis URL in config.toml: the right scheme, and no password in it."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ConfigError(f"{where}: {url!r} is not a {schemes[0]}:// URL")
    if parts.password:
        raise ConfigError(f"{where}: keep the password out of config.toml (it is meant for git): use {instead}")


def _table(data: dict, key: str, origin: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: [{key}] must be a table")
    return value


def changed(name: str, section: object, defaults: object) -> dict:
    """A section with the settings that differ from their defaults (none: no section at all)."""
    values = {k: v for k, v in vars(section).items() if v != getattr(defaults, k)}
    return {name: values} if values else {}


def check_sign_on(dashboard: DashboardSettings, where: str) -> None:
    if not dashboard.oidc_discovery:
        if not dashboard.password_login:
            raise ConfigError(f"{where} password_login = false needs single sign-on (oidc_discovery)")
        return
    if not dashboard.oidc_discovery.startswith(("https://", "http://")):
        raise ConfigError(
            f"{where} oidc_discovery must be the provider's discovery URL (…/.well-known/openid-configuration)"
        )
    if not dashboard.oidc_client_id or not ENV_VAR_RE.match(dashboard.oidc_client_secret_env or "-"):
        raise ConfigError(f"{where} single sign-on needs oidc_client_id and oidc_client_secret_env (a variable name)")


def check_alerts(alerts: AlertSettings, where: str) -> None:
    check_thresholds(alerts.thresholds, f"{where} thresholds")
    if alerts.webhook and not alerts.webhook.startswith(("http://", "https://")):
        raise ConfigError(f"{where} webhook must be an http(s) URL")
    if alerts.webhook_format not in ("slack", "json"):
        raise ConfigError(f'{where} webhook_format must be "slack" or "json"')
    for name in ("webhook_secret_env", "smtp_password_env"):
        value = getattr(alerts, name)
        if value and not ENV_VAR_RE.match(value):
            raise ConfigError(f"{where} {name} must name an environment variable")
    if alerts.smtp_host and (not alerts.smtp_from or not alerts.smtp_to):
        raise ConfigError(f"{where} smtp_host needs smtp_from and smtp_to (who gets the alerts)")
    if not 0 < alerts.smtp_port < 65536:
        raise ConfigError(f"{where} smtp_port must be 1-65535")


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
