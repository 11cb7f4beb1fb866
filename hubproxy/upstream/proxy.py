"""Which egress proxy an upstream is reached through: `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (and
their lowercase forms) as curl and the Python and Go standard libraries read them, or a provider's own
`proxy` setting ("none": never; `env:VAR`: the URL in that variable; else an http:// URL without
credentials, which belong in the environment, not config.toml).

A proxy is named by its host and port only: its credentials go into the `Proxy-Authorization` header
and nowhere else (no log line, no error message, no `repr`).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from hubproxy.config.errors import ConfigError


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False, compare=True)  # "Basic …", never shown

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_proxy(url: str, where: str) -> Proxy:
    """An http:// proxy URL (`user:pass@` allowed); `where` names it in an error, never the URL itself."""
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"{where}: the proxy must be an http://host:port URL (a CONNECT tunnel carries https)")
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(f"{where}: the proxy's port is not a number") from None
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return Proxy(parts.hostname, port, authorization)


def _variable(env: Mapping[str, str], name: str) -> str:
    return env.get(name.lower()) or env.get(name.upper()) or ""


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY names this host: `*`; a host or domain (a leading dot or not: the domain and
    its subdomains); an optional `:port`; an IP address or CIDR range."""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, wanted = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if wanted and wanted != str(port):
            continue
        name = name.strip("[]")
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = name.lstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def proxy_for(base_url: str, setting: str | None, env: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy an upstream at `base_url` is reached through, or None (directly)."""
    env = os.environ if env is None else env
    parts = urllib.parse.urlsplit(base_url)
    if setting == "none":
        return None
    if setting is not None:
        url = env.get(setting[4:], "") if setting.startswith("env:") else setting
        return parse_proxy(url, f"the proxy of {parts.hostname}") if url else None
    url = _variable(env, "https_proxy" if parts.scheme == "https" else "http_proxy")
    if not url:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if bypassed(parts.hostname or "", port, _variable(env, "no_proxy")):
        return None
    return parse_proxy(url, "HTTPS_PROXY" if parts.scheme == "https" else "HTTP_PROXY")
