"""`hubproxy usage report`: requests, tokens and cost, grouped."""

from __future__ import annotations

import csv
import sys
from datetime import date
from enum import StrEnum

import typer

from hubproxy.cli.context import CliError, WholeTable, console, database, print_json
from hubproxy.money import format_usd
from hubproxy.spreadsheet import safe_cell

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


def decimal_places(pico: int) -> int:
    """Places `format_usd` needs for this amount; a report gives every cost the most any needs, so
    that a column reads 0.0000000 beside 0.0000005, not 0.00."""
    return max(len(format_usd(pico).partition(".")[2]), 2)


@app.command("report")
def report(
    ctx: typer.Context,
    by: GroupBy = typer.Option(GroupBy.model, "--by"),
    since: str = typer.Option(
        None, "--since", metavar="DATE", help="Only calls at or after this date, e.g. 2026-11-01."
    ),
    user: str = typer.Option(None, "--user", metavar="EMAIL", help="Only this user's calls."),
    fmt: Format = typer.Option(Format.table, "--format"),
    json: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """Requests, tokens (prompt, completion, cache read, cache write, reasoning) and cost grouped by
    model, user, key, provider or day."""
    if since is not None:
        try:
            since = date.fromisoformat(since).isoformat()
        except ValueError:
            raise CliError(f"--since must be a date like 2026-11-01, got {since!r}") from None
    with database(ctx) as store:
        rows = store.usage_report(by.value, since=since, user=user)
    costs = [row.pop("cost") or 0 for row in rows]
    for row, cost in zip(rows, costs, strict=True):
        row["cost_usd"] = format_usd(cost)
    if json or fmt is Format.json:
        print_json(rows)
    elif fmt is Format.csv:
        writer = csv.DictWriter(
            sys.stdout,
            fieldnames=[
                *("group", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "estimated"),
                *("cached_tokens", "cache_write_tokens", "reasoning_tokens"),
            ],
        )
        writer.writeheader()
        writer.writerows({name: safe_cell(value) for name, value in row.items()} for row in rows)
    else:
        places = max((decimal_places(cost) for cost in costs), default=2)
        table = WholeTable(
            *(by.value, "requests", "prompt tokens", "completion tokens", "cost (USD)", "estimated"),
            *("cache read", "cache write", "reasoning"),
            whole=(by.value,),
        )
        for r, cost in zip(rows, costs, strict=True):
            table.add_row(
                str(r["group"]),
                str(r["requests"]),
                str(r["prompt_tokens"]),
                str(r["completion_tokens"]),
                format_usd(cost, min_places=places),
                str(r["estimated"]),
                str(r["cached_tokens"]),
                str(r["cache_write_tokens"]),
                str(r["reasoning_tokens"]),
            )
        console.print(table, crop=False)
