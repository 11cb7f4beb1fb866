"""`hubproxy usage report`: requests, tokens and cost, grouped."""

from __future__ import annotations

import csv
import sys
from datetime import date
from enum import StrEnum

import typer
from rich.table import Table

from hubproxy.cli.context import CliError, console, database, print_json
from hubproxy.money import format_usd
from hubproxy.store.usage import usage_report

app = typer.Typer(help="Usage and cost reports.", no_args_is_help=True)


class GroupBy(StrEnum):
    model = "model"
    user = "user"
    key = "key"
    provider = "provider"
    day = "day"


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command("report")
def report(
    ctx: typer.Context,
    by: GroupBy = typer.Option(GroupBy.model, "--by"),
    since: str = typer.Option(None, "--since", help="Only calls at or after this date, e.g. 2026-11-01."),
    user: str = typer.Option(None, "--user", help="Only this user's calls."),
    fmt: Format = typer.Option(Format.table, "--format"),
    json: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """Requests, tokens and cost grouped by model, user, key, provider or day."""
    if since is not None:
        try:
            since = date.fromisoformat(since).isoformat()
        except ValueError:
            raise CliError(f"--since must be a date like 2026-11-01, got {since!r}") from None
    with database(ctx) as conn:
        rows = usage_report(conn, by.value, since=since, user=user)
    for row in rows:
        row["cost_usd"] = format_usd(row.pop("cost") or 0)
    if json or fmt is Format.json:
        print_json(rows)
    elif fmt is Format.csv:
        writer = csv.DictWriter(
            sys.stdout,
            fieldnames=["group", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "estimated"],
        )
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table(by.value, "requests", "prompt tokens", "completion tokens", "cost (USD)", "estimated")
        for r in rows:
            table.add_row(
                str(r["group"]),
                str(r["requests"]),
                str(r["prompt_tokens"]),
                str(r["completion_tokens"]),
                r["cost_usd"],
                str(r["estimated"]),
            )
        console.print(table)
