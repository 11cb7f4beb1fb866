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
from hubproxy.store.sql import accounts, usage
from hubproxy.store.sql.prices import prices_billed
from hubproxy.tokens import EXTRA_CLASSES

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
        if user is not None:
            store.run(accounts.get_user, user)  # an unknown email is a one-line error, not an empty report
        rows = store.run(usage.usage_report, by.value, since=since, user=user)
        names = {k.id: k.name for k in store.run(accounts.list_keys, user)} if by is GroupBy.key else {}
        billed = store.run(prices_billed, since, user) if by is GroupBy.model else {}
        pruned = store.run(usage.pruned_before)
    costs = [row.pop("cost") or 0 for row in rows]
    places = max((decimal_places(cost) for cost in costs), default=2)
    for row, cost in zip(rows, costs, strict=True):
        row["cost_usd"] = format_usd(cost, min_places=places)  # every format gives the same figure
        if by is GroupBy.key:
            row["name"] = names.get(row["group"])
        if by is GroupBy.model:
            row["billed_at_price_of"] = ", ".join(billed.get(row["group"], []))
    if not rows and not json and fmt is Format.table:
        scope = (f" for {user}" if user else "") + (f" since {since}" if since else "")
        console.print(f"no calls{scope} yet")
        return
    if json or fmt is Format.json:
        print_json(rows)
    elif fmt is Format.csv:
        writer = csv.DictWriter(
            sys.stdout,
            fieldnames=[
                *("group", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "estimated"),
                *(c.column for c in EXTRA_CLASSES),
                *(("name",) if by is GroupBy.key else ()),
                *(("billed_at_price_of",) if by is GroupBy.model else ()),
            ],
        )
        writer.writeheader()
        writer.writerows({name: safe_cell(value) for name, value in row.items()} for row in rows)
    else:
        table = WholeTable(
            *(by.value, "requests", "prompt tokens", "completion tokens", "cost (USD)", "estimated"),
            *(c.label for c in EXTRA_CLASSES),
            *(("billed at the price of",) if by is GroupBy.model else ()),
            whole=(by.value,),
        )
        for r in rows:
            table.add_row(
                f"{r['group']} ({r['name']})" if r.get("name") else str(r["group"]),
                str(r["requests"]),
                str(r["prompt_tokens"]),
                str(r["completion_tokens"]),
                r["cost_usd"],
                str(r["estimated"]),
                *(str(r[c.column]) for c in EXTRA_CLASSES),
                *((r["billed_at_price_of"],) if by is GroupBy.model else ()),
            )
        console.print(table, crop=False)
        if pruned and (since is None or since < pruned):
            console.print(
                f"calls before {pruned} are counted from the daily totals (their rows were pruned: [store] "
                "keep_days); their prices' dates are not shown",
                soft_wrap=True,
                markup=False,
            )
