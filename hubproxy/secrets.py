"""Provider credentials: the OS keyring, a 0600 file where no keyring exists, or an env var reference.

config.toml records only *where* a secret is (`api_key_stored = true` or `api_key_env = "VAR"`),
never the secret itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, urlsplit, urlunsplit

from hubproxy.config import Paths, Provider
from hubproxy.filemodes import write_private

SERVICE = "hubproxy"


class SecretError(RuntimeError):
    """A credential could not be stored or found; the message says which and why."""


def _keyring() -> ModuleType:
    """The keyring package, loaded when a secret is first wanted: it and the backends it finds take
    ~20 MB, which a server whose providers read their keys from the environment never needs."""
    import keyring
    import keyring.errors

    return keyring


def keyring_available() -> bool:
    from keyring.backends import fail

    backend = _keyring().get_keyring()
    return not isinstance(backend, fail.Keyring) and getattr(backend, "priority", 0) > 0


def _account(name: str) -> str:
    return name if name == JWT_SECRET or name.startswith(DATABASE_ACCOUNT) else f"provider:{name}"


DATABASE_ACCOUNT = "database:"


def database_account(url: str) -> str:
    """Where a PostgreSQL URL's password is kept: by user, host, port and database, never the URL."""
    parts = urlsplit(url)
    return f"{DATABASE_ACCOUNT}{parts.username or ''}@{parts.hostname or ''}:{parts.port or 5432}{parts.path}"


def with_stored_password(paths: Paths, url: str) -> str:
    """A PostgreSQL URL with the password `hubproxy db set-password` stored for it, if it has none
    of its own and libpq has none in the environment (PGPASSWORD); else the URL as it is."""
    parts = urlsplit(url)
    if parts.password is not None or os.environ.get("PGPASSWORD"):
        return url
    password = load_secret(paths, database_account(url))
    if not password:
        return url
    user = quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def store_secret(paths: Paths, provider: str, secret: str) -> str:
    """Store a provider key; returns where it went ("OS keyring" or the fallback file's path)."""
    if keyring_available():
        keyring = _keyring()
        try:
            keyring.set_password(SERVICE, _account(provider), secret)
            return "OS keyring"
        except keyring.errors.KeyringError:
            pass
    data = _read_file(paths.credentials)
    data[_account(provider)] = secret
    _write_file(paths.credentials, data)
    return str(paths.credentials)


def load_secret(paths: Paths, provider: str) -> str | None:
    if keyring_available():
        keyring = _keyring()
        try:
            found = keyring.get_password(SERVICE, _account(provider))
        except keyring.errors.KeyringError:
            found = None
        if found:
            return found
    return _read_file(paths.credentials).get(_account(provider))


def delete_secret(paths: Paths, provider: str) -> None:
    if keyring_available():
        keyring = _keyring()
        with contextlib.suppress(keyring.errors.KeyringError):
            keyring.delete_password(SERVICE, _account(provider))
    data = _read_file(paths.credentials)
    if data.pop(_account(provider), None) is not None:
        _write_file(paths.credentials, data)


def provider_api_key(provider: Provider, stored: dict[str, str]) -> str | None:
    """The key to send upstream: env vars are read at call time, stored keys come from `stored`."""
    if provider.api_key_env:
        return os.environ.get(provider.api_key_env) or None
    return stored.get(provider.name)


def key_variable_unset(provider: Provider) -> bool:
    """The provider's key comes from an environment variable that this process does not have: its
    calls would fail with a 503 until the variable is set where `hubproxy serve` runs."""
    variable = provider.api_key_env
    return variable is not None and variable != "" and not os.environ.get(variable)


def load_stored_secrets(paths: Paths, providers: dict[str, Provider]) -> dict[str, str]:
    """Read every stored provider key once (keyring calls can be slow: never on the hot path)."""
    found = {}
    for p in providers.values():
        if p.api_key_stored:
            secret = load_secret(paths, p.name)
            if secret:
                found[p.name] = secret
    return found


def _read_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SecretError(f"{path} is not valid JSON; fix or delete it and add the provider keys again") from None
    return data if isinstance(data, dict) else {}


def _write_file(path: Path, data: dict[str, str]) -> None:
    write_private(path, json.dumps(data, indent=2))


def admin_token(paths: Paths) -> str:
    """The token that shows a running server's detail on /health to its operator: made at the first
    start, kept in a 0600 file beside the database, where the CLI on the same machine reads it."""
    try:
        return paths.admin_token.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = "hp-admin-" + secrets.token_urlsafe(32)
        write_private(paths.admin_token, token)
        return token


JWT_SECRET = "jwt-secret"


def jwt_secret(paths: Paths) -> str:
    """The account API's token-signing secret: made once, kept where provider keys are kept."""
    found = load_secret(paths, JWT_SECRET)
    if found:
        return found
    secret = secrets.token_urlsafe(48)
    store_secret(paths, JWT_SECRET, secret)
    return secret
