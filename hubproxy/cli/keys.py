"""`hubproxy keys …`: create (shown once), list (masked), revoke."""

from __future__ import annotations

import json

import typer

from hubproxy.accounts.rules import KeyPolicy, collect_rules, model_allowed, parse_models
from hubproxy.cli.context import CliError, WholeTable, console, database, load_config, print_json
from hubproxy.money import format_usd
from hubproxy.store.records import KeyRow
from hubproxy.store.sql import accounts

app = typer.Typer(help="API keys for users.", no_args_is_help=True)


RULE_FLAGS = {
    "models": "models",
    "allow-ip": "allow_ips",
    "spend-limit": "spend_limit",
    "budget-period": "budget_period",
    "expires": "expires_at",
    "rpm": "rpm",
    "tpm": "tpm",
    "max-parallel": "max_parallel",
}


def key_json(key: KeyRow) -> dict:
    rules = key.rules()
    if "allow_ips" in rules:
        rules["allow_ips"] = json.loads(rules["allow_ips"])
    if "models" in rules:
        rules["models"] = list(parse_models(rules["models"]))
    if "spend_limit" in rules:
        rules["spend_limit"] = format_usd(rules["spend_limit"])
    return {
        "id": key.id,
        "user": key.email,
        "name": key.name,
        "key": key.masked,
        "status": key.status,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "rules": rules,
    }


MODELS_HELP = "Allowed models, comma-separated: exact ids, aliases, provider/* patterns (default: all)."


@app.command("create")
def create(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", metavar="EMAIL", help="Email of the key's owner."),
    name: str = typer.Option("default", "--name", metavar="NAME", help="A label for the key."),
    models: str = typer.Option(None, "--models", metavar="MODELS", help=MODELS_HELP),
    allow_ip: list[str] = typer.Option(
        [], "--allow-ip", metavar="IP|CIDR", help="Allowed client IP or CIDR (repeat; IPv4/IPv6)."
    ),
    spend_limit: str = typer.Option(None, "--spend-limit", metavar="USD", help="Most this key may spend, USD."),
    budget_period: str = typer.Option(
        None, "--budget-period", metavar="day|week|month", help="Reset the spend limit every day|week|month."
    ),
    expires: str = typer.Option(None, "--expires", metavar="WHEN", help="30d, 12h, or a date like 2027-01-01."),
    rpm: int = typer.Option(None, "--rpm", metavar="N", help="Requests per minute."),
    tpm: int = typer.Option(
        None, "--tpm", metavar="N", help="Tokens per minute (prompt + max_tokens, corrected to usage)."
    ),
    max_parallel: int = typer.Option(None, "--max-parallel", metavar="N", help="Calls in flight at once."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a key. The full key is printed once; only its hash is kept."""
    rules = collect_rules(models, allow_ip, spend_limit, budget_period, expires, rpm, tpm, max_parallel)
    warn_unmatched(ctx, rules.get("models"))
    with database(ctx) as store:
        key, full = store.run(accounts.create_key, user, name, rules)
    if json:
        print_json({**key_json(key), "key": full})
        return
    console.print(f"created {key.id} ({key.name}) for {key.email}")
    console.print("this is the only time the full key is shown:")
    console.print(full, soft_wrap=True)


@app.command("update")
def update(
    ctx: typer.Context,
    key_id: str,
    models: str = typer.Option(None, "--models", metavar="MODELS", help=MODELS_HELP),
    allow_ip: list[str] = typer.Option(
        [], "--allow-ip", metavar="IP|CIDR", help="Allowed client IP or CIDR (repeat; replaces the list)."
    ),
    spend_limit: str = typer.Option(None, "--spend-limit", metavar="USD", help="Most this key may spend, USD."),
    budget_period: str = typer.Option(None, "--budget-period", metavar="day|week|month", help="day|week|month."),
    expires: str = typer.Option(None, "--expires", metavar="WHEN", help="30d, 12h, or a date like 2027-01-01."),
    rpm: int = typer.Option(None, "--rpm", metavar="N", help="Requests per minute."),
    tpm: int = typer.Option(
        None, "--tpm", metavar="N", help="Tokens per minute (prompt + max_tokens, corrected to usage)."
    ),
    max_parallel: int = typer.Option(None, "--max-parallel", metavar="N", help="Calls in flight at once."),
    clear: list[str] = typer.Option([], "--clear", help=f"Remove a rule: {', '.join(RULE_FLAGS)} (repeat)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Change a key's rules; a running server applies them within a second."""
    rules = collect_rules(models, allow_ip, spend_limit, budget_period, expires, rpm, tpm, max_parallel)
    warn_unmatched(ctx, rules.get("models"))
    for flag in clear:
        if flag not in RULE_FLAGS:
            raise CliError(f"--clear takes one of {', '.join(RULE_FLAGS)}, got {flag!r}")
        rules[RULE_FLAGS[flag]] = None
    with database(ctx) as store:
        key = store.run(accounts.update_key, key_id, rules)
    if json:
        print_json(key_json(key))
    else:
        console.print(f"updated {key.id}: {describe_rules(key) or 'no rules'}")


def warn_unmatched(ctx: typer.Context, models: str | None) -> None:
    """A --models entry that matches no model served here is most likely a typo: say so (on stderr;
    the rule is kept, for a model added later)."""
    served = load_config(ctx).models.values()
    for entry in parse_models(models):
        if not any(model_allowed(KeyPolicy(models=(entry,)), model) for model in served):
            known = ", ".join(sorted(m.name for m in served)) or "none yet"
            typer.echo(f"warning: --models {entry!r} matches no model served here (models: {known})", err=True)


def describe_rules(key: KeyRow) -> str:
    """The rules as a person types them: `models=ds,deepseek/*; rpm=10`."""
    return "; ".join(
        f"{name}={','.join(value) if isinstance(value, list) else value}"
        for name, value in key_json(key)["rules"].items()
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    user: str = typer.Option(None, "--user", metavar="EMAIL", help="Only this user's keys."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List keys, masked."""
    with database(ctx) as store:
        keys = store.run(accounts.list_keys, user)
    if json:
        print_json([key_json(k) for k in keys])
        return
    table = WholeTable("id", "user", "name", "key", "status", "last used", "rules", whole=("id", "user", "key"))
    for k in keys:
        table.add_row(k.id, k.email, k.name, k.masked, k.status, k.last_used_at or "never", describe_rules(k))
    console.print(table, crop=False)


@app.command("revoke")
def revoke(ctx: typer.Context, key_id: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Revoke a key (a running server refuses it within a second)."""
    with database(ctx) as store:
        key = store.run(accounts.revoke_key, key_id)
    if json:
        print_json(key_json(key))
    else:
        console.print(f"revoked {key.id} ({key.name}) of {key.email}")
