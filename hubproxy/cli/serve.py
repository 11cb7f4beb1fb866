"""`hubproxy serve`: print where to point tools, then run the gateway."""

from __future__ import annotations

import dataclasses
import os
import ssl
from pathlib import Path

import typer

from hubproxy.cli.context import CliError, console, load_config, make_home_private, paths, warn_password_in_url
from hubproxy.config import Config
from hubproxy.config.paths import REDIS_ENV
from hubproxy.running import Address, AlreadyServing, ServingMark, display_host
from hubproxy.secrets import key_variable_unset
from hubproxy.store import MissingExtra, is_postgres, open_store, redacted


def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        None, "--host", metavar="HOST", help="Interface to listen on (default from config: 127.0.0.1)."
    ),
    port: int = typer.Option(None, "--port", metavar="PORT", help="Port (default from config: 8080)."),
    workers: int = typer.Option(
        1, "--workers", metavar="N", help="Processes sharing the port (SO_REUSEPORT) and the database."
    ),
    tls_cert: str = typer.Option(
        None, "--tls-cert", metavar="FILE", help="Serve HTTPS with this PEM certificate (chain); needs --tls-key."
    ),
    tls_key: str = typer.Option(None, "--tls-key", metavar="FILE", help="The certificate's PEM private key."),
    redis: str = typer.Option(
        None,
        "--redis",
        metavar="URL",
        envvar=REDIS_ENV,
        help="redis:// URL: rate limits shared by every instance (default: \\[store] redis in config.toml).",
    ),
    database: str = typer.Option(
        None, "--database", metavar="URL", help="The same as `hubproxy --database URL serve`: a postgresql:// URL."
    ),
) -> None:
    """Run the gateway until Ctrl-C / SIGTERM (in-flight calls drain, every write is flushed)."""
    from hubproxy.server import run  # the server and its web stack: not for the other commands

    where = paths(ctx)
    if database:
        warn_password_in_url(database)
        where = ctx.find_root().obj = dataclasses.replace(where, database_url=database)
    config = load_config(ctx)
    if (tls_cert is None) != (tls_key is None):
        raise CliError("--tls-cert and --tls-key go together: give both or neither")
    if tls_cert is not None:
        config.server.tls_cert, config.server.tls_key = tls_cert, tls_key
    if redis:
        config.store.redis = redis
    redis_url = config.store.redis or os.environ.get(REDIS_ENV, "")
    if redis_url:
        try:
            import redis as redis_driver  # noqa: F401 - only to learn whether it is installed
        except ModuleNotFoundError as missing:
            raise MissingExtra("Rate limits in Redis", "postgres", missing) from None
        from hubproxy.ratelimit.resp import url_options

        try:
            url_options(redis_url)
        except ValueError as exc:
            raise CliError(f"--redis / [store] redis / {REDIS_ENV}: {exc}") from None
    try:
        tls = run.tls_context(config)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot serve HTTPS with {config.server.tls_cert} and {config.server.tls_key}: {exc}") from None
    if not where.config.exists():
        config.save(where.config)
    store = where.store  # read once: it may load config.toml and ask the keyring
    open_store(store, create=True).close()
    make_home_private(where)
    host = host or config.server.host
    port = port or config.server.port
    if not 0 < port < 65536:
        raise CliError("--port must be 1-65535")
    if not 1 <= workers <= 64:
        raise CliError("--workers must be 1-64")
    try:
        mark = ServingMark(where)
    except AlreadyServing as busy:
        raise CliError(already_serving(busy.address)) from None
    try:
        serve_marked(mark, config, store, host, port, workers, tls is not None)
    finally:
        mark.release()


def already_serving(address: Address | None) -> str:
    """One line for a second `serve` on a home that is being served."""
    where = f" (pid {address.pid}, {address.base_url})" if address else ""
    return (
        f"hubproxy is already serving this home{where}: two servers on one home would each hold the same "
        "balances. Stop it first; for more processes use `hubproxy serve --workers N`, and for instances on "
        "PostgreSQL give each its own --home"
    )


def serve_marked(
    mark: ServingMark, config: Config, store: Path | str, host: str, port: int, workers: int, tls: bool
) -> None:
    """Listen, say where, leave the address in the home, and run until stopped."""
    from hubproxy.server import run
    from hubproxy.upstream.proxy import proxy_for

    where = mark.paths
    try:
        if workers > 1:
            run.check_port(host, port)
            sock = None
        else:
            sock = run.listen(host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    loop_name = run.event_loop_policy()
    scheme = "https" if tls else "http"
    cert = os.path.abspath(config.server.tls_cert) if tls else None
    mark.announce(Address(os.getpid(), scheme, host, port, workers, cert))
    base = f"{scheme}://{display_host(host)}:{port}/v1"
    if not tls and host in ("0.0.0.0", "::"):
        console.print(
            "[bold yellow]warning[/]: listening on every interface over plain HTTP: keys and prompts cross the "
            "network readable; serve with --tls-cert/--tls-key, or behind a TLS proxy or tunnel"
        )
    plural = f", {workers} workers" if workers > 1 else ""
    console.print(f"[bold]hubproxy[/bold] on {base}  ({loop_name}{plural}, config {where.config})")
    if is_postgres(store):
        limits = "rate limits shared through Redis" if config.store.redis else "rate limits per instance (no --redis)"
        console.print(f"store: {redacted(str(store))}, shared with other instances; {limits}", soft_wrap=True)
    if config.dashboard.oidc_discovery:
        try:
            import authlib  # noqa: F401 - checked here so that a sign-in never finds it missing
        except ImportError:
            raise CliError("[dashboard] single sign-on needs authlib: pip install 'hubproxy[sso]'") from None
    for provider in config.providers.values():
        proxy = proxy_for(provider.base_url, provider.proxy)  # a malformed proxy URL: one line, no start
        if proxy is not None:
            console.print(f"provider {provider.name} is reached through the proxy {proxy}", soft_wrap=True)
        if key_variable_unset(provider):
            console.print(
                f"[bold yellow]warning[/]: provider {provider.name}'s key variable {provider.api_key_env} is not set: "
                "its calls get 503 until it is set where `hubproxy serve` runs",
                soft_wrap=True,
            )
    if config.models:
        console.print("models: " + ", ".join(sorted(config.models)))
    else:
        console.print("no models yet: hubproxy providers add …; hubproxy models add …")
    console.print(f"point tools at it:  OPENAI_BASE_URL={base}  OPENAI_API_KEY=<a key from `hubproxy keys create`>")
    if config.dashboard.enabled:
        console.print(f"dashboard: {base.removesuffix('/v1')}/  (`hubproxy dashboard` prints an admin login link)")
    try:
        run.run(where, config, host, port, workers, sock)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
