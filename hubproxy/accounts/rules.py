"""Per-key rules: which models, from which addresses, until when, how much spend. Pure functions.

A key's policy is stored as plain columns on `api_keys` and parsed once into a `KeyPolicy` when the
server loads the key, so the checks on the hot path are set lookups and comparisons.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from hubproxy.config import Model, Plan
from hubproxy.money import parse_usd

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PERIODS = ("day", "week", "month")
DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class PolicyError(ValueError):
    """A key rule a user typed that cannot be understood."""


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    models: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    spend_limit: int | None = None
    budget_period: str | None = None
    expires_at: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_parallel)


NO_LIMITS = Limits()


def effective_limits(policy: KeyPolicy, plan: Plan | None) -> Limits:
    """A key's own limits, else its user's plan's."""
    if plan is None:
        if not (policy.rpm or policy.tpm or policy.max_parallel):
            return NO_LIMITS  # most keys: no frozen dataclass built per call
        return Limits(policy.rpm, policy.tpm, policy.max_parallel)
    return Limits(policy.rpm or plan.rpm, policy.tpm or plan.tpm, policy.max_parallel or plan.max_parallel)


def parse_models(text: str | None) -> tuple[str, ...]:
    """ "a,b,deepseek/*" → ("a", "b", "deepseek/*"); empty means every model."""
    if not text:
        return ()
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    for item in items:
        if not re.match(r"^[A-Za-z0-9._:/@*?-]+$", item):
            raise PolicyError(f"--models entry {item!r} is not a model name or pattern")
    return items


def parse_networks(values: list[str] | tuple[str, ...] | None) -> tuple[IPNetwork, ...]:
    """IPs and CIDRs, IPv4 or IPv6 ("10.0.0.0/8", "127.0.0.1", "::1")."""
    networks = []
    for value in values or ():
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise PolicyError(f"{value!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def parse_expiry(text: str, now: float | None = None) -> str:
    """ "30d", "12h", "90s" or a date/time ("2027-01-01") → an ISO-8601 UTC instant in the future."""
    now = time.time() if now is None else now
    match = DURATION_RE.match(text.strip())
    if match:
        when = now + int(match.group(1)) * SECONDS[match.group(2)]
    else:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise PolicyError(f"--expires must look like 30d, 12h or 2027-01-01, got {text!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        when = parsed.timestamp()
    if when <= now:
        raise PolicyError(f"--expires {text!r} is already in the past")
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def expiry_timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def check_period(period: str | None) -> str | None:
    if period is not None and period not in PERIODS:
        raise PolicyError(f"--budget-period must be one of {', '.join(PERIODS)}, got {period!r}")
    return period


MAX_LIMIT = 10**12  # far past any real rate; keeps a typed number inside the database's 64-bit integers


def check_positive(name: str, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_LIMIT:
        raise PolicyError(f"{name} must be a whole number from 1 to {MAX_LIMIT:,}, got {value}")
    return value


def model_allowed(policy: KeyPolicy, model: Model) -> bool:
    """Exact public ids (aliases included), `provider/*`, or any shell-style pattern on either."""
    if not policy.models:
        return True
    qualified = f"{model.provider}/{model.upstream_model}"
    return any(
        pattern == model.name or fnmatch.fnmatchcase(model.name, pattern) or fnmatch.fnmatchcase(qualified, pattern)
        for pattern in policy.models
    )


def ip_allowed(policy: KeyPolicy, address: str | None) -> bool:
    if not policy.networks:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in policy.networks)


def collect_rules(
    models: str | None,
    allow_ip: list[str],
    spend_limit: str | None,
    budget_period: str | None,
    expires: str | None,
    rpm: int | None,
    tpm: int | None,
    max_parallel: int | None,
) -> dict:
    """The CLI's flags or the dashboard's form → validated policy column values (only those given)."""
    rules: dict = {}
    if models is not None:
        rules["models"] = ",".join(parse_models(models)) or None
    if allow_ip:
        rules["allow_ips"] = json.dumps([str(n) for n in parse_networks(allow_ip)])
    if spend_limit is not None:
        rules["spend_limit"] = parse_usd(spend_limit, what="--spend-limit")
    if budget_period is not None:
        rules["budget_period"] = check_period(budget_period)
    if expires is not None:
        rules["expires_at"] = parse_expiry(expires)
    for name, value in (("--rpm", rpm), ("--tpm", tpm), ("--max-parallel", max_parallel)):
        if value is not None:
            rules[name[2:].replace("-", "_")] = check_positive(name, value)
    return rules
