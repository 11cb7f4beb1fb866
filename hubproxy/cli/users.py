"""`hubproxy users …` and `hubproxy balance`."""

from __future__ import annotations

import typer
from rich.table import Table

from hubproxy.cli.context import console, database, print_json
from hubproxy.money import format_usd, parse_usd
from hubproxy.store import accounts

app = typer.Typer(help="Users and their balances.", no_args_is_help=True)


def user_json(user: accounts.UserRow) -> dict:
    return {
        "id": user.id,
        "email": user.email,
        "balance": format_usd(user.balance),
        "balance_pico_usd": user.balance,
        "status": user.status,
        "created_at": user.created_at,
    }


@app.command("add")
def add(
    ctx: typer.Context,
    email: str,
    balance: str = typer.Option("0", "--balance", help="Starting balance in USD (recorded as a grant)."),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Add a user."""
    amount = parse_usd(balance, what="--balance")
    with database(ctx) as conn:
        user = accounts.add_user(conn, email, amount)
    if json:
        print_json(user_json(user))
    else:
        console.print(f"added {user.email} with balance ${format_usd(user.balance)}")


@app.command("list")
def list_(ctx: typer.Context, json: bool = typer.Option(False, "--json")) -> None:
    """List users and balances."""
    with database(ctx) as conn:
        users = accounts.list_users(conn)
    if json:
        print_json([user_json(u) for u in users])
        return
    table = Table("email", "balance (USD)", "status", "created")
    for u in users:
        table.add_row(u.email, format_usd(u.balance), u.status, u.created_at[:19])
    console.print(table)


@app.command("topup")
def topup(
    ctx: typer.Context,
    email: str,
    amount: str = typer.Argument(..., help="USD to add; negative with --adjust to correct a balance."),
    note: str = typer.Option(None, "--note", help="Why (kept in the ledger)."),
    adjust: bool = typer.Option(False, "--adjust", help="Record as an adjustment (may be negative)."),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Add to a user's balance (a ledger row records it)."""
    value = parse_usd(amount, what="amount", allow_negative=adjust)
    if value == 0:
        raise accounts.AccountError("amount must not be zero")
    with database(ctx) as conn:
        user = accounts.topup(conn, email, value, kind="adjustment" if adjust else "topup", note=note)
    if json:
        print_json(user_json(user))
    else:
        console.print(f"{user.email}: balance ${format_usd(user.balance)}")


def _set_status(ctx: typer.Context, email: str, status: str, json: bool) -> None:
    with database(ctx) as conn:
        user = accounts.set_user_status(conn, email, status)
    if json:
        print_json(user_json(user))
    else:
        console.print(f"{user.email} is now {user.status}")


@app.command("disable")
def disable(ctx: typer.Context, email: str, json: bool = typer.Option(False, "--json")) -> None:
    """Refuse every key of this user (takes effect within a second on a running server)."""
    _set_status(ctx, email, "disabled", json)


@app.command("enable")
def enable(ctx: typer.Context, email: str, json: bool = typer.Option(False, "--json")) -> None:
    """Re-enable a disabled user."""
    _set_status(ctx, email, "active", json)


def balance(ctx: typer.Context, email: str, json: bool = typer.Option(False, "--json")) -> None:
    """Show a user's balance."""
    with database(ctx) as conn:
        user = accounts.get_user(conn, email)
    if json:
        print_json(user_json(user))
    else:
        console.print(f"{user.email}: ${format_usd(user.balance)}")
