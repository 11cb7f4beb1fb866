"""`hubproxy db`: the store itself: copy a laptop's SQLite store up to PostgreSQL."""

from __future__ import annotations

import typer

from hubproxy.cli.context import CliError, console, load_config, paths, print_json
from hubproxy.store import is_postgres, redacted

app = typer.Typer(help="The store itself: copy it from SQLite to PostgreSQL, keep its password.", no_args_is_help=True)


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
