"""`hubproxy dashboard`: a one-time login link to the web dashboard for the admin on this machine."""

from __future__ import annotations

import typer

from hubproxy.cli.context import CliError, console, load_config, paths
from hubproxy.running import server_url
from hubproxy.secrets import admin_token


def dashboard(
    ctx: typer.Context,
    base_url: str = typer.Option(
        None,
        "--base-url",
        metavar="URL",
        help="The dashboard's address as your browser reaches it (default: the running server's, else config).",
    ),
) -> None:
    """Print a one-time admin login link (valid 10 minutes); team members log in with email and password."""
    from hubproxy.dashboard.sessions import LINK_SECONDS, login_link_token  # the web stack: only when asked

    config = load_config(ctx)
    if not config.dashboard.enabled:
        raise CliError("the dashboard is off ([dashboard] enabled = false in config.toml)")
    url = (base_url or server_url(paths(ctx), config)).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--base-url must be an http(s) URL, got {base_url!r}")
    token = login_link_token(admin_token(ctx.obj))
    console.print(f"{url}/login/link?token={token}", soft_wrap=True)
    console.print(f"(one use, within {LINK_SECONDS // 60} minutes; `hubproxy serve` must be running)", style="dim")
