"""`hubproxy alerts test`: send a sample budget alert to every receiver `[alerts]` configures, now,
and say how each went."""

from __future__ import annotations

import asyncio

import typer

from hubproxy.cli.context import CliError, console, database, load_config
from hubproxy.config.catalog import check_thresholds
from hubproxy.config.errors import ConfigError
from hubproxy.store.sql import alerts as alert_rows

app = typer.Typer(help="Budget alerts: send a sample to check the receivers.", no_args_is_help=True)


@app.command("test")
def test(ctx: typer.Context) -> None:
    """Send a sample alert to the webhook and by email, as configured in [alerts]; exit 1 if one fails."""
    from hubproxy import alerts as alerting  # the network stack: only for the command that calls out

    settings = load_config(ctx).alerts
    targets = [r for r in alerting.receivers(settings) if r != "log"]
    if not targets:
        raise CliError("no receiver is configured: set [alerts] webhook and/or smtp_host in config.toml")

    async def send_all() -> list[tuple[str, str | None]]:
        async with alerting.session() as client:
            return [(r, await alerting.deliver({**alerting.SAMPLE, "receiver": r}, settings, client)) for r in targets]

    failed = False
    for receiver, problem in asyncio.run(send_all()):
        console.print(f"{receiver}: " + (f"failed ({problem})" if problem else "sent"), markup=False)
        failed = failed or bool(problem)
    if failed:
        raise typer.Exit(1)


@app.command("set")
def set_thresholds(
    ctx: typer.Context,
    thresholds: str = typer.Argument(None, metavar="[PERCENTS]", help="e.g. 50,90 (none with --clear)."),
    user: str = typer.Option(None, "--user", metavar="EMAIL", help="This user's balance alerts."),
    key: str = typer.Option(None, "--key", metavar="KEY_ID", help="This key's spend-cap alerts."),
    clear: bool = typer.Option(False, "--clear", help="Back to the plan's, or [alerts] thresholds."),
) -> None:
    """A user's or a key's own alert thresholds, instead of its plan's or [alerts] thresholds."""
    if (user is None) == (key is None):
        raise CliError("give --user EMAIL or --key KEY_ID")
    if clear == (thresholds is not None):
        raise CliError("give the percents (e.g. 50,90) or --clear")
    marks = None
    if thresholds is not None:
        try:
            marks = list(check_thresholds([int(t) for t in thresholds.split(",") if t.strip()], "the thresholds"))
        except (ValueError, ConfigError):
            raise CliError(f"the thresholds must be percents from 1 to 100, like 50,90; got {thresholds!r}") from None
    table, column, target = ("users", "email", user) if user else ("api_keys", "id", key)
    with database(ctx) as store:
        changed = store.run(alert_rows.set_thresholds, table, column, target, marks)
    if not changed:
        raise CliError(f"no {'user' if user else 'key'} {target!r}")
    said = ", ".join(f"{m}%" for m in marks) if marks else "its plan's or [alerts] thresholds"
    console.print(f"{target}: alerts at {said}", markup=False)
