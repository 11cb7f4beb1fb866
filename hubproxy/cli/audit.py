"""`hubproxy audit`: who changed what — users, keys, money, providers, models, plans — from the CLI, the
dashboard and the account API; and `audit verify`, which finds a row edited or deleted behind the
log's back (each row's hash covers it and the row before)."""

from __future__ import annotations

import typer

from hubproxy.cli.context import CliError, WholeTable, console, database, print_json
from hubproxy.store.sql import audit

app = typer.Typer(
    help="The audit log: who changed what, and a check that nobody edited it.", invoke_without_command=True
)


@app.callback()
def entries(
    ctx: typer.Context,
    since: str = typer.Option(None, "--since", metavar="DATE", help="From this date or time on (UTC)."),
    actor: str = typer.Option(None, "--actor", metavar="WHO", help="Only changes by this actor."),
    target: str = typer.Option(
        None, "--target", metavar="WHAT", help="Only changes to this (email, key id, model:NAME…)."
    ),
    limit: int = typer.Option(200, "--limit", metavar="N", help="At most this many, newest first."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The newest changes first (with `verify`: check the chain instead)."""
    if ctx.invoked_subcommand is not None:
        return
    if limit < 1:
        raise CliError("--limit must be at least 1")
    with database(ctx) as store:
        rows = store.run(audit.entries, since, actor, target, limit)
    if json:
        print_json(rows)
        return
    if not rows:
        console.print("no changes recorded" + (" that match" if since or actor or target else ""))
        return
    table = WholeTable("at", "actor", "action", "target", "before", "after", whole=("target",))
    for row in rows:
        table.add_row(row["at"], row["actor"], row["action"], row["target"], row["before"] or "", row["after"] or "")
    console.print(table)


@app.command("verify")
def verify(ctx: typer.Context) -> None:
    """Recompute the chain of hashes: exit 1, naming the first row that does not hold, if any was edited."""
    with database(ctx) as store:
        checked, broken = store.run(audit.verify)
    if broken is not None:
        raise CliError(
            f"the audit log was changed: row {broken} does not match its hash ({checked} rows before it hold)"
        )
    console.print(f"the audit log holds: {checked} rows, each chained to the one before")
