"""The `hubproxy` command: one Typer app per command group, joined here."""

from __future__ import annotations

from pathlib import Path

import typer

from hubproxy import __version__
from hubproxy.audit import ACTOR, os_user
from hubproxy.cli import (
    alerts,
    audit,
    connect,
    dashboard,
    db,
    doctor,
    keys,
    models,
    prices,
    providers,
    serve,
    setup,
    statusline,
    usage,
    users,
)
from hubproxy.cli.context import GuardedGroup, warn_password_in_url
from hubproxy.cli.help import use_plain_metavars
from hubproxy.config import HOME_ENV, Paths
from hubproxy.config.paths import DATABASE_ENV

use_plain_metavars()
app = typer.Typer(
    cls=GuardedGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="hubproxy: an OpenAI-compatible gateway with keys, balances and exact per-token billing.",
)


def print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"hubproxy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=print_version, is_eager=True, help="Print the version and exit."
    ),
    home: Path | None = typer.Option(
        None,
        "--home",
        metavar="DIR",
        envvar=HOME_ENV,
        help="Directory for config.toml and the database (default: per-user dirs).",
    ),
    database: str | None = typer.Option(
        None,
        "--database",
        metavar="URL",
        envvar=DATABASE_ENV,
        help="A postgresql:// URL to keep users, keys and money in (several instances share it); "
        "default: \\[store] url in config.toml, else hubproxy.db in the home.",
    ),
) -> None:
    ctx.obj = Paths.resolve(home, database)
    ACTOR.set(os_user())  # the audit log names who ran the command
    source = ctx.get_parameter_source("database")
    if database and source is not None and source.name == "COMMANDLINE":
        warn_password_in_url(database)


app.command("init")(setup.init)
app.command("serve")(serve.serve)
app.command("balance")(users.balance)
app.command("connect")(connect.connect)
app.command("disconnect")(connect.disconnect)
app.command("statusline")(statusline.statusline)
app.command("doctor")(doctor.doctor)
app.command("dashboard")(dashboard.dashboard)
app.add_typer(users.app, name="users")
app.add_typer(keys.app, name="keys")
app.add_typer(providers.app, name="providers")
app.add_typer(models.app, name="models")
app.add_typer(prices.app, name="prices")
app.add_typer(usage.app, name="usage")
app.add_typer(db.app, name="db")
app.add_typer(audit.app, name="audit")
app.add_typer(alerts.app, name="alerts")


def main() -> None:
    app()
