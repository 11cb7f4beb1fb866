"""`hubproxy keys …`: create (shown once), list (masked), revoke."""

from __future__ import annotations

import typer
from rich.table import Table

from hubproxy.cli.context import console, database, print_json
from hubproxy.store import accounts

app = typer.Typer(help="API keys for users.", no_args_is_help=True)


def key_json(key: accounts.KeyRow) -> dict:
    return {
        "id": key.id,
        "user": key.email,
        "name": key.name,
        "key": key.masked,
        "status": key.status,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


@app.command("create")
def create(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", help="Email of the key's owner."),
    name: str = typer.Option("default", "--name", help="A label for the key."),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a key. The full key is printed once; only its hash is kept."""
    with database(ctx) as conn:
        key, full = accounts.create_key(conn, user, name)
    if json:
        print_json({**key_json(key), "key": full})
        return
    console.print(f"created {key.id} ({key.name}) for {key.email}")
    console.print("this is the only time the full key is shown:")
    console.print(full, soft_wrap=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    user: str = typer.Option(None, "--user", help="Only this user's keys."),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """List keys, masked."""
    with database(ctx) as conn:
        keys = accounts.list_keys(conn, user)
    if json:
        print_json([key_json(k) for k in keys])
        return
    table = Table("id", "user", "name", "key", "status", "last used")
    for k in keys:
        table.add_row(k.id, k.email, k.name, k.masked, k.status, k.last_used_at or "never")
    console.print(table)


@app.command("revoke")
def revoke(ctx: typer.Context, key_id: str, json: bool = typer.Option(False, "--json")) -> None:
    """Revoke a key (a running server refuses it within a second)."""
    with database(ctx) as conn:
        key = accounts.revoke_key(conn, key_id)
    if json:
        print_json(key_json(key))
    else:
        console.print(f"revoked {key.id} ({key.name}) of {key.email}")
