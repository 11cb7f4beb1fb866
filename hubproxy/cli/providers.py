"""`hubproxy providers …`: upstream base URLs and where their keys are kept."""

from __future__ import annotations

import asyncio
import ssl
import sys

import typer

from hubproxy.cli.context import CliError, WholeTable, console, load_config, paths, print_json, save_config
from hubproxy.config import ENV_VAR_RE, WIRE_APIS, Config, Provider, check_base_url, check_provider_name
from hubproxy.config.catalog import REASONING_RULES, check_proxy
from hubproxy.config.errors import ConfigError
from hubproxy.errors import GatewayError
from hubproxy.running import running_server
from hubproxy.secrets import (
    admin_token,
    delete_secret,
    key_variable_unset,
    keyring_available,
    load_secret,
    provider_api_key,
    store_secret,
)
from hubproxy.upstream.presets import Preset, get_preset, load_presets
from hubproxy.upstream.proxy import proxy_for

app = typer.Typer(help="Upstream providers (DeepSeek, Qwen, OpenAI, Ollama…).", no_args_is_help=True)


def provider_json(p: Provider) -> dict:
    where = f"env:{p.api_key_env}" if p.api_key_env else ("stored" if p.api_key_stored else "none")
    return {
        "name": p.name,
        "base_url": p.base_url,
        "api_style": p.api_style,
        "api_key": where,
        "api_key_env_unset": key_variable_unset(p),
        "headers": sorted(p.headers),
        "stream_usage": p.stream_usage,
        "timeout": p.timeout,
        "max_concurrent": p.max_concurrent,
        "preset": p.preset,
        "apis": list(p.apis),
        "messages_base_url": p.messages_base_url,
        "gemini_base_url": p.gemini_base_url,
        "responses_socket": p.responses_socket,
        "proxy": p.proxy,
        "reasoning": p.reasoning,
    }


def checked_proxy(value: str) -> str:
    try:
        return check_proxy(value, "--proxy")
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def parse_headers(values: list[str]) -> dict[str, str]:
    headers = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError(f"--header must look like 'Name: value', got {item!r}")
        if "\r" in item or "\n" in item:
            raise CliError("--header cannot contain line breaks")
        headers[name.strip()] = value.strip()
    return headers


@app.command("add")
def add(
    ctx: typer.Context,
    name: str,
    base_url: str = typer.Option(None, "--base-url", metavar="URL", help="e.g. https://api.deepseek.com/v1"),
    preset: str = typer.Option(
        None,
        "--preset",
        metavar="PRESET",
        help="Fill base URL, key variable and priced models: see `providers presets`.",
    ),
    no_models: bool = typer.Option(False, "--no-models", help="With --preset: add no models from its catalog."),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", metavar="VAR", help="Read the key from this env var at call time."
    ),
    api_key_stdin: bool = typer.Option(False, "--api-key-stdin", help="Read the key from stdin; store it safely."),
    header: list[str] = typer.Option(
        [], "--header", metavar="'NAME: VALUE'", help="Extra header sent upstream, 'Name: value'."
    ),
    no_stream_usage: bool = typer.Option(
        False, "--no-stream-usage", help="Upstream rejects stream_options; estimate streamed usage instead."
    ),
    timeout: float = typer.Option(
        None, "--timeout", metavar="SECONDS", help="Seconds to wait for its answer (overrides first_byte)."
    ),
    max_concurrent: int = typer.Option(None, "--max-concurrent", metavar="N", help="Calls in flight to it at once."),
    api: list[str] = typer.Option(
        [],
        "--api",
        metavar="API",
        help="A wire API it serves (repeatable): chat (OpenAI, the default), messages (Anthropic), "
        "responses (OpenAI's Responses), gemini (Google's generateContent).",
    ),
    messages_base_url: str = typer.Option(
        None, "--messages-base-url", metavar="URL", help="Where its Messages API lives, if not at --base-url."
    ),
    gemini_base_url: str = typer.Option(
        None,
        "--gemini-base-url",
        metavar="URL",
        help="Where its Gemini API lives (the origin before /v1beta), if not at --base-url.",
    ),
    proxy: str = typer.Option(
        None,
        "--proxy",
        metavar="URL|none|env:VAR",
        help="Its egress proxy (default: HTTPS_PROXY / HTTP_PROXY / NO_PROXY); none: never; env:VAR: the URL in VAR.",
    ),
    responses_socket: bool = typer.Option(
        False,
        "--responses-socket",
        help="Send its streamed Responses calls over its WebSocket (OpenAI's WebSocket mode), kept open between calls.",
    ),
    reasoning: str = typer.Option(
        None,
        "--reasoning",
        metavar="RULE",
        help="How its usage counts reasoning tokens: within (the completion tokens; the default) or added "
        "(beside them, as xAI's).",
    ),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing provider of this name."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add a provider: OpenAI-compatible (chat), Anthropic-compatible (messages), or both."""
    check_provider_name(name)
    if api_key_env and api_key_stdin:
        raise CliError("use either --api-key-env or --api-key-stdin, not both")
    found = None if preset is None else get_preset(preset)
    if found is not None:
        base_url = base_url or found.base_url
        if not api_key_stdin:
            api_key_env = api_key_env or found.api_key_env
    if base_url is None:
        raise CliError("give --base-url URL or --preset NAME")
    if (timeout is not None and timeout <= 0) or (max_concurrent is not None and max_concurrent < 1):
        raise CliError("--timeout and --max-concurrent must be positive")
    url = check_base_url(base_url, "--base-url")
    unknown = [a for a in api if a not in WIRE_APIS]
    if unknown:
        raise CliError(f"--api {unknown[0]!r} is not a wire API hubproxy speaks ({', '.join(WIRE_APIS)})")
    apis = tuple(dict.fromkeys(api)) or (found.apis if found is not None else ("chat",))
    if messages_base_url is not None:
        messages_base_url = check_base_url(messages_base_url, "--messages-base-url")
    elif found is not None and base_url == found.base_url:
        # a preset's Messages address belongs to its own base URL: with another --base-url (a proxy, a
        # test server) calls must not go to the vendor behind the user's back
        messages_base_url = found.messages_base_url
    if gemini_base_url is not None:
        gemini_base_url = check_base_url(gemini_base_url, "--gemini-base-url")
    elif found is not None and base_url == found.base_url:
        gemini_base_url = found.gemini_base_url
    reasoning = reasoning or (found.reasoning if found is not None else "within")
    if reasoning not in REASONING_RULES:
        raise CliError(f"--reasoning must be one of {', '.join(REASONING_RULES)}, got {reasoning!r}")
    if api_key_env and not ENV_VAR_RE.match(api_key_env):
        raise CliError(f"--api-key-env must be an environment variable name, got {api_key_env!r}")
    config = load_config(ctx)
    if name in config.providers and not replace:
        raise CliError(f"provider {name!r} already exists (use --replace to overwrite)")
    secret = None
    if api_key_stdin:
        secret = sys.stdin.readline().strip()
        if not secret:
            raise CliError("--api-key-stdin was given but stdin had no key")
    provider = Provider(
        name,
        url,
        api_key_env=api_key_env,
        api_key_stored=secret is not None,
        headers=parse_headers(header),
        stream_usage=not no_stream_usage,
        timeout=timeout,
        max_concurrent=max_concurrent,
        preset=preset,
        apis=apis,
        messages_base_url=messages_base_url,
        gemini_base_url=gemini_base_url,
        responses_socket=responses_socket,
        proxy=None if proxy is None else checked_proxy(proxy),
        limit_field=found.limit_field if found is not None else "max_tokens",
        reasoning=reasoning,
    )
    where = store_secret(paths(ctx), name, secret) if secret else None
    config.providers[name] = provider
    added = {} if found is None or no_models else add_catalog(config, name, found)
    save_config(ctx, config, sources=added)
    if json:
        print_json({**provider_json(provider), "secret_stored_in": where, "models_added": list(added)})
        return
    console.print(f"added provider {name} → {url}")
    if added:
        console.print(f"added {len(added)} priced models:")
        for model_id, origin in added.items():
            console.print(f"  {model_id}: {origin}")
    if where and not keyring_available():
        console.print(f"no OS keyring available: key stored in {where} (mode 0600)")
    elif where:
        console.print(f"key stored in the {where}")
    elif api_key_env:
        console.print(f"key read from ${api_key_env} when hubproxy calls {name}")
    elif any(h.lower() in ("authorization", "x-api-key", "api-key") for h in provider.headers):
        console.print(f"calls to {name} authenticate with the header given by --header")
    else:
        console.print(
            f"no key: calls to {name} carry no credentials (fine for a local Ollama or vLLM; otherwise add "
            f"--api-key-env VAR or --api-key-stdin with --replace)"
        )


def add_catalog(config: Config, provider: str, preset: Preset) -> dict[str, str]:
    """Serve the preset's models through `provider`, each at its catalog price; ids already served,
    and ids nothing prices, are left alone. Returns {model: where its price came from}."""
    added = {}
    for model_id in preset.models:
        price = preset.price_of(model_id)
        if model_id not in config.models and price is not None:
            config.models[model_id] = price.model(model_id, provider, model_id)
            added[model_id] = price.origin
    return added


def preset_json(p: Preset) -> dict:
    return {**vars(p), "models": list(p.models)}


def _prices_cell(p: Preset) -> str:
    if p.local:
        return "0 (local)"
    if p.catalog:
        return f"genai-prices ({p.catalog})" + (", or its /models" if p.listing_prices else "")
    if p.listing_prices:
        return "from its /models"
    return "none: sync adds unpriced"


@app.command("presets")
def presets(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Known providers: base URL, key variable, priced models, and where that was read."""
    found = load_presets()
    if json:
        print_json([preset_json(p) for p in found.values()])
        return
    table = WholeTable("preset", "base url", "key variable", "prices", "docs", whole=("preset", "base url", "docs"))
    for p in found.values():
        table.add_row(p.name, p.base_url, p.api_key_env or "(none: local)", _prices_cell(p), p.source)
    console.print(table, crop=False)


@app.command("list")
def list_(ctx: typer.Context, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List providers."""
    config = load_config(ctx)
    if json:
        print_json([provider_json(p) for p in config.providers.values()])
        return
    table = WholeTable("name", "base url", "apis", "key", "models", whole=("name", "base url"))
    for p in config.providers.values():
        used = sum(1 for m in config.models.values() if any(t.provider == p.name for t in m.targets))
        key = provider_json(p)["api_key"] + (" [bold yellow](not set here)[/]" if key_variable_unset(p) else "")
        table.add_row(p.name, p.base_url, ",".join(p.apis), key, str(used))
    console.print(table, crop=False)


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove a provider and its stored key (refused while models use it)."""
    config = load_config(ctx)
    if name not in config.providers:
        raise CliError(f"no provider {name!r}; see `hubproxy providers list`")
    used = [m.name for m in config.models.values() if any(t.provider == name for t in m.targets)]
    if used:
        raise CliError(f"provider {name!r} is used by models {', '.join(used)}; remove them first")
    del config.providers[name]
    save_config(ctx, config)
    delete_secret(paths(ctx), name)
    console.print(f"removed provider {name}")


@app.command("test")
def test(ctx: typer.Context, name: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check that the provider answers GET /models with its key."""
    models = upstream_models(ctx, name)
    provider = load_config(ctx).providers[name]
    try:
        proxy = proxy_for(provider.base_url, provider.proxy)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if json:
        through = None if proxy is None else str(proxy)
        print_json({"name": name, "status": 200, "models": [m["id"] for m in models], "proxy": through})
    else:
        console.print(f"{name}: OK, {len(models)} models" + (f", through the proxy {proxy}" if proxy else ""))


def upstream_models(ctx: typer.Context, name: str) -> list[dict]:
    """The model entries a configured provider lists at GET /models (with its key), or a one-line error."""
    config = load_config(ctx)
    provider = config.providers.get(name)
    if provider is None:
        raise CliError(f"no provider {name!r}; see `hubproxy providers list`")
    stored = {name: load_secret(paths(ctx), name) or ""} if provider.api_key_stored else {}
    key = provider_api_key(provider, stored)
    if provider.api_key_env and not key:
        raise CliError(f"environment variable {provider.api_key_env} is not set")
    status, models = asyncio.run(_probe(provider, key, config.timeouts.connect))
    if status != 200:
        path = {"messages": "GET /v1/models", "gemini": "GET /v1beta/models"}.get(
            provider.apis[0] if len(provider.apis) == 1 else "", "GET /models"
        )
        raise CliError(f"provider {name!r} answered HTTP {status} to {path}")
    return models


async def _probe(provider: Provider, key: str | None, connect: float) -> tuple[int, list[dict]]:
    """GET /models through the provider's adapter: its base URL, headers and key, as calls get them."""
    from hubproxy.upstream.http import Client  # the network stack: only for the commands that call out
    from hubproxy.upstream.pool import adapter_for

    client = Client(connect)
    try:
        status, data = await adapter_for(provider, client).list_models(key, connect + 20)
    except GatewayError as exc:
        raise CliError(exc.message) from None
    finally:
        client.close()
    if status != 200:
        return status, []
    items = data.get("data", []) if isinstance(data, dict) else data  # Together answers a bare list
    if not isinstance(items, list):
        return 200, []
    return 200, [m for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]


@app.command("status")
def status(
    ctx: typer.Context,
    url: str = typer.Option(
        None, "--url", metavar="URL", help="The running server (default: the one serving this home)."
    ),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Each deployment's breaker state, recent latency and error rate, from the running server."""
    where = paths(ctx)
    trust = None
    if url is None:
        running = running_server(where)
        if running is None:
            raise CliError("no `hubproxy serve` is running on this home; start it, or give --url of the server")
        url, trust = running.local_url, running.trust()
    deployments = asyncio.run(_health(url.rstrip("/"), admin_token(where), trust))
    if json:
        print_json(deployments)
        return
    if not deployments:
        console.print("no calls yet: deployments appear after their first call")
        return
    table = WholeTable("deployment", "state", "latency ms", "error rate", "last error", whole=("deployment",))
    for name, info in sorted(deployments.items()):
        error = info["last_error"] or ""
        loud = any(code in error for code in ("HTTP 401", "HTTP 402", "HTTP 403"))
        table.add_row(
            name,
            info["state"],
            str(info["latency_ms"] or "-"),
            f"{info['error_rate']:.0%}",
            f"[bold red]{error} (check this provider's key/credit)[/]" if loud else error,
        )
    console.print(table, crop=False)


async def _health(base: str, token: str, trust: ssl.SSLContext | None = None) -> dict:
    """The server's /health detail, asked with the admin token of this hubproxy home (over HTTPS,
    trusting `trust`'s certificate where given)."""
    import aiohttp  # only for the commands that call out

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(base + "/health", headers={"Authorization": f"Bearer {token}"}, ssl=trust or True) as resp,
        ):
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise CliError(f"no hubproxy server answering at {base}; is `hubproxy serve` running?") from None
    if resp.status == 401:
        raise CliError(f"the server at {base} does not know this home's admin token; give --home of that server")
    return data.get("deployments", {}) if isinstance(data, dict) else {}
