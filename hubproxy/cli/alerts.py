"""`hubproxy alerts test`: send a sample budget alert to every receiver `[alerts]` configures, now,
and say how each went."""

from __future__ import annotations

import asyncio
import smtplib

import aiohttp
import typer

from hubproxy import alerts as alerting
from hubproxy.cli.context import CliError, console, load_config

app = typer.Typer(help="Budget alerts: send a sample to check the receivers.", no_args_is_help=True)


@app.command("test")
def test(ctx: typer.Context) -> None:
    """Send a sample alert to the webhook and by email, as configured in [alerts]; exit 1 if one fails."""
    settings = load_config(ctx).alerts
    targets = [r for r in alerting.receivers(settings) if r != "log"]
    if not targets:
        raise CliError("no receiver is configured: set [alerts] webhook and/or smtp_host in config.toml")

    async def send_all() -> list[tuple[str, str]]:
        results = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=alerting.SEND_TIMEOUT)) as session:
            for receiver in targets:
                try:
                    await alerting.deliver({**alerting.SAMPLE, "receiver": receiver}, settings, session)
                    results.append((receiver, ""))
                except (OSError, aiohttp.ClientError, TimeoutError, smtplib.SMTPException) as exc:
                    reason = f"{exc.__class__.__name__}: {exc}".replace(settings.webhook or "\0", "the webhook")
                    results.append((receiver, reason))
        return results

    failed = False
    for receiver, problem in asyncio.run(send_all()):
        console.print(f"{receiver}: " + (f"failed ({problem})" if problem else "sent"), markup=False)
        failed = failed or bool(problem)
    if failed:
        raise typer.Exit(1)
