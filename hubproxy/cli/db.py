"""`hubproxy db`: the store itself: its size, an online backup of the SQLite store and its restore, and
a copy of a laptop's SQLite store up to PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import typer

from hubproxy.cli.context import CliError, WholeTable, console, database, load_config, paths, print_json
from hubproxy.store import is_postgres, redacted

app = typer.Typer(
    help="The store itself: its size, backup and restore, a copy to PostgreSQL, its password.", no_args_is_help=True
)
PG_DUMP_HINT = (
    "on PostgreSQL, back up with its own tools: pg_dump --format=custom --file=hubproxy.dump URL "
    "(and pg_restore --dbname=URL hubproxy.dump into an empty database)"
)


@app.command("migrate-to")
def migrate_to(
    ctx: typer.Context,
    url: str = typer.Argument(..., metavar="URL", help="postgresql://user@host/db (password: PGPASSWORD)"),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Copy this home's SQLite store (users, keys, ledger, usage) into an empty PostgreSQL database."""
    from hubproxy.store.transfer import migrate_to as copy

    if not is_postgres(url):
        raise CliError(f"{url!r} is not a postgresql:// URL")
    source = paths(ctx).database
    if not source.exists():
        raise CliError(f"no SQLite store at {source} to copy")
    copied = copy(source, url)
    if json:
        print_json({"source": str(source), "target": redacted(url), "rows": copied})
        return
    rows = ", ".join(f"{n} {table}" for table, n in copied.items())
    console.print(f"copied {source} to {redacted(url)}: {rows}", soft_wrap=True)
    console.print(
        "balances match their ledgers there. Next: set [store] url in config.toml (or HUBPROXY_DATABASE_URL) "
        "and start `hubproxy serve` on it",
        soft_wrap=True,
        markup=False,
    )


@app.command("set-password")
def set_password(
    ctx: typer.Context,
    url: str = typer.Argument(None, metavar="[URL]", help="the database (default: the one this home uses)"),
) -> None:
    """Keep the PostgreSQL password (read from stdin) in the OS keyring, for a URL that has none."""
    import sys

    from hubproxy.secrets import database_account, store_secret

    where = paths(ctx)
    url = url or where.database_url or load_config(ctx).store.url
    if not url or not is_postgres(url):
        raise CliError("give the postgresql:// URL (or set [store] url) to keep a password for")
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise CliError('no password on stdin: echo "$PASSWORD" | hubproxy db set-password URL')
    kept = store_secret(where, database_account(url), password)
    console.print(f"password for {redacted(url)} kept in {kept}", soft_wrap=True)


@app.command("size")
def size(ctx: typer.Context, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Rows and bytes per table, the bytes a usage row costs, and how fast the store grows."""
    from hubproxy.store.sql import sizes

    with database(ctx) as store:
        tables = store.run(sizes.table_sizes)
        per_day = store.run(sizes.calls_per_day)
    by_name = {t["table"]: t for t in tables}
    usage, ledger = by_name["usage"], by_name["ledger"]
    per_row = usage["bytes"] / usage["rows"] if usage["rows"] else 0.0
    per_charge = ledger["bytes"] / ledger["rows"] if ledger["rows"] else 0.0  # each call also leaves a charge
    keep_days = load_config(ctx).store.keep_days
    if json:
        print_json(
            {
                "tables": tables,
                "bytes_per_usage_row": round(per_row),
                "bytes_per_ledger_row": round(per_charge),
                "calls_per_day": round(per_day, 1),
                "growth_bytes_per_day": round(per_day * (per_row + per_charge)),
                "keep_days": keep_days,
            }
        )
        return
    table = WholeTable("table", "rows", "bytes")
    for row in tables:
        table.add_row(row["table"], f"{row['rows']:,}", f"{row['bytes']:,}")
    console.print(table)
    kept = f"kept {keep_days} days ([store] keep_days)" if keep_days else "kept forever ([store] keep_days = 0)"
    console.print(
        f"a call costs {per_row:,.0f} bytes of usage row with its indexes ({kept}) and {per_charge:,.0f} of "
        f"ledger row (kept); {per_day:,.1f} calls a day over the last week add "
        f"{per_day * (per_row + per_charge) / 1e6:,.2f} MB a day",
        soft_wrap=True,
        markup=False,
    )


@app.command("backup")
def backup(ctx: typer.Context, path: Path = typer.Argument(..., metavar="PATH", help="The copy to write.")) -> None:
    """A consistent copy of this home's SQLite store, made while the server runs (SQLite's backup API),
    checked before it is kept: SQLite's integrity check, every balance the sum of its ledger."""
    from hubproxy.store.sqlite.backup import back_up

    where = paths(ctx)
    if is_postgres(where.store):
        raise CliError(PG_DUMP_HINT)
    source = where.database
    if not source.exists():
        raise CliError(f"no SQLite store at {source} to back up")
    if path.exists():
        raise CliError(f"{path} exists: give a new file (a backup never overwrites one)")
    problems = back_up(source, path)
    if problems:
        raise CliError(f"the backup does not check out ({problems}); nothing was kept")
    console.print(f"backed up {source} to {path} ({path.stat().st_size:,} bytes; every balance matches its ledger)")


@app.command("restore")
def restore(
    ctx: typer.Context, path: Path = typer.Argument(..., metavar="PATH", help="A file `db backup` wrote.")
) -> None:
    """Put a backup in place as this home's store: only into a home with no store yet (checked first)."""
    from hubproxy.store.sqlite.backup import restore as put_back

    where = paths(ctx)
    if is_postgres(where.store):
        raise CliError(PG_DUMP_HINT)
    if not path.is_file():
        raise CliError(f"no backup at {path}")
    target = where.database
    if target.exists():
        raise CliError(f"{target} exists: restore into an empty home (--home DIR), never over a store")
    problems = put_back(path, target)
    if problems:
        raise CliError(f"{path} does not check out ({problems}); nothing was restored")
    console.print(f"restored {path} as {target}; start `hubproxy serve` on this home")
