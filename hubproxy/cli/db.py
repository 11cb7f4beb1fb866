"""`hubproxy db`: the store itself: copy a laptop's SQLite store up to PostgreSQL."""

from __future__ import annotations

import typer

from hubproxy.cli.context import CliError, console, paths, print_json
from hubproxy.store import is_postgres, redacted

app = typer.Typer(help="The store itself: copy it from SQLite to PostgreSQL.", no_args_is_help=True)


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
    )
