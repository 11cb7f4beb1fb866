"""`hubproxy users …` and `hubproxy balance`."""

from __future__ import annotations

import sys
import time

import typer

from hubproxy.cli.context import CliError, WholeTable, console, database, load_config, print_json
from hubproxy.money import format_usd, parse_usd
from hubproxy.passwords import MIN_LENGTH, hash_password
from hubproxy.store import Store
from hubproxy.store.records import AccountError, UserRow
from hubproxy.store.sql import accounts

app = typer.Typer(help="Users and their balances.", no_args_is_help=True)


def user_json(user: UserRow) -> dict:
    return {
        "id": user.id,
        "email": user.email,
        "balance": format_usd(user.balance),
        "balance_pico_usd": user.balance,
        "status": user.status,
        "plan": user.plan,
        "created_at": user.created_at,
    }


def checked_plan(ctx: typer.Context, plan: str | None) -> str | None:
    """A plan name that config.toml defines (or None)."""
    if plan is None:
        return None
    plans = load_config(ctx).plans
    if plan not in plans:
        known = ", ".join(sorted(plans)) or "none defined; add [plans.NAME] to config.toml"
        raise CliError(f"no plan {plan!r} (plans: {known})")
    return plan


def with_plan_credit(ctx: typer.Context, store: Store, user: UserRow) -> UserRow:
    """Give a user newly on a plan this month's included credit at once (the server would within 10 min)."""
    if not user.plan:
        return user
    credits = {p.name: p.monthly_credit for p in load_config(ctx).plans.values()}
    store.run(accounts.grant_monthly_credits, credits, time.strftime("%Y-%m", time.gmtime()))
    return store.run(accounts.get_user, user.email)


@app.command("add")
def add(
    ctx: typer.Context,
    email: str,
    balance: str = typer.Option("0", "--balance", metavar="USD", help="Starting balance in USD (recorded as a grant)."),
    plan: str | None = typer.Option(None, "--plan", metavar="PLAN", help="A plan from config.toml (\\[plans.NAME])."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add a user."""
    amount = parse_usd(balance, what="--balance")
    plan = checked_plan(ctx, plan)
    with database(ctx) as store:
        user = with_plan_credit(ctx, store, store.run(accounts.add_user, email, amount, plan))
    if json:
        print_json(user_json(user))
    else:
        console.print(f"added {user.email} with balance ${format_usd(user.balance)}")


@app.command("list")
def list_(ctx: typer.Context, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List users and balances."""
    with database(ctx) as store:
        users = store.run(accounts.list_users)
    if json:
        print_json([user_json(u) for u in users])
        return
    table = WholeTable("email", "balance (USD)", "plan", "status", "created", whole=("email",))
    for u in users:
        table.add_row(u.email, format_usd(u.balance), u.plan or "", u.status, u.created_at[:19])
    console.print(table, crop=False)


@app.command("topup", context_settings={"ignore_unknown_options": True})
def topup(
    ctx: typer.Context,
    email: str,
    amount: str = typer.Argument(..., help="USD to add; negative with --adjust to correct a balance."),
    note: str = typer.Option(None, "--note", metavar="TEXT", help="Why (kept in the ledger)."),
    adjust: bool = typer.Option(False, "--adjust", help="Record as an adjustment (may be negative)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add to a user's balance (a ledger row records it). `topup EMAIL -5 --adjust` corrects it down."""
    value = parse_usd(amount, what="amount", allow_negative=True)
    if value < 0 and not adjust:
        raise CliError(f"{amount} takes money away: record it as an adjustment with --adjust")
    if value == 0:
        raise AccountError("amount must not be zero")
    with database(ctx) as store:
        user = store.run(accounts.topup, email, value, kind="adjustment" if adjust else "topup", note=note)
    if json:
        print_json(user_json(user))
    else:
        console.print(f"{user.email}: balance ${format_usd(user.balance)}")


def _set_status(ctx: typer.Context, email: str, status: str, json: bool) -> None:
    with database(ctx) as store:
        user = store.run(accounts.set_user_status, email, status)
    if json:
        print_json(user_json(user))
    else:
        console.print(f"{user.email} is now {user.status}")


@app.command("update")
def update(
    ctx: typer.Context,
    email: str,
    plan: str | None = typer.Option(None, "--plan", metavar="PLAN", help="Move the user to this plan."),
    no_plan: bool = typer.Option(False, "--no-plan", help="Take the user off any plan."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Change a user's plan (limits and price apply within a second on a running server)."""
    if (plan is None) == (not no_plan):
        raise CliError("give either --plan NAME or --no-plan")
    plan = checked_plan(ctx, plan)
    with database(ctx) as store:
        user = with_plan_credit(ctx, store, store.run(accounts.set_user_plan, email, plan))
    if json:
        print_json(user_json(user))
    else:
        console.print(f"{user.email}: plan {user.plan or 'none'}, balance ${format_usd(user.balance)}")


@app.command("set-password")
def set_password(
    ctx: typer.Context, email: str, json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Set the password this user logs in to the account API with, read from stdin; every login
    token the user holds ends."""
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_LENGTH:
        raise CliError(f"give the new password on stdin, at least {MIN_LENGTH} characters")
    with database(ctx) as store:
        user = store.run(accounts.set_password, email, hash_password(password))
    if json:
        print_json(user_json(user))
    else:
        console.print(f"{user.email}: password set; earlier login tokens have ended")


@app.command("disable")
def disable(ctx: typer.Context, email: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Refuse every key and login token of this user (within a second on a running server)."""
    _set_status(ctx, email, "disabled", json)


@app.command("enable")
def enable(ctx: typer.Context, email: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Re-enable a disabled user."""
    _set_status(ctx, email, "active", json)


def balance(ctx: typer.Context, email: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show a user's balance."""
    with database(ctx) as store:
        user = store.run(accounts.get_user, email)
    if json:
        print_json(user_json(user))
    else:
        console.print(f"{user.email}: ${format_usd(user.balance)}")
