"""What every command needs: the resolved paths, config, store, output and the error contract.

Every error a user can cause is printed as one line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click
import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from hubproxy.accounts.rules import PolicyError
from hubproxy.audit import os_user
from hubproxy.billing.history import changes_between, now_text
from hubproxy.config import Config, ConfigError, Paths, Provider
from hubproxy.config.catalog import _model_dict, _plan_dict, provider_dict
from hubproxy.money import MoneyError
from hubproxy.secrets import SecretError
from hubproxy.store import Store, open_store, store_errors
from hubproxy.store.records import AccountError, DatabaseError
from hubproxy.store.sql import audit
from hubproxy.store.sql.prices import record_price_changes

try:  # Typer 0.2x carries its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:
    from click.exceptions import UsageError  # type: ignore[assignment]  # the same class, before Typer 0.2x

USER_ERRORS = (AccountError, ConfigError, MoneyError, DatabaseError, SecretError, PolicyError)
console = Console(highlight=False, soft_wrap=True)  # a path, URL or key is never broken across lines


class CliError(Exception):
    """A user-caused problem detected by the CLI itself."""


class GuardedGroup(TyperGroup):
    """Turns every known user error raised by any subcommand into one line and exit code 1, and a
    mistyped command line into one line and exit code 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            usage_error(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            usage_error(exc)
        except (*USER_ERRORS, CliError) as exc:
            click.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        except Exception as exc:
            if not isinstance(exc, store_errors()):
                raise
            click.echo(f"Error: database problem: {exc}", err=True)
            raise typer.Exit(1) from None


def usage_error(exc: UsageError) -> None:
    """One line: what was wrong, and where help is (Typer would draw a box around several)."""
    message = exc.format_message().replace("Value error, ", "")
    where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
    click.echo(f"Error: {message}{where}", err=True)
    raise typer.Exit(exc.exit_code)


def warn_password_in_url(url: str) -> None:
    """A password typed into a command line shows in `ps` and stays in the shell's history."""
    if urllib.parse.urlsplit(url).password:
        typer.echo(
            "warning: the password in --database shows in `ps` and your shell history; keep it with "
            "`hubproxy db set-password URL` (or PGPASSWORD) and give the URL without it",
            err=True,
        )


def paths(ctx: typer.Context) -> Paths:
    root = ctx.find_root()
    if not isinstance(root.obj, Paths):
        root.obj = Paths.resolve(root.params.get("home"))
    return root.obj


def load_config(ctx: typer.Context) -> Config:
    return Config.load(paths(ctx).config)


def save_config(
    ctx: typer.Context, config: Config, *, source: str = "typed: hubproxy", sources: Mapping[str, str] | None = None
) -> None:
    """Write config.toml; each model whose prices it changes goes into the price history, from
    `sources[model]` (else `source`: where the price came from), by the OS user running the command."""
    where = paths(ctx)
    old = Config.load(where.config)
    before = old.models
    config.save(where.config)
    command = ctx.command_path.partition(" ")[2]
    changes = changes_between(before, config.models, os_user(), sources or {}, f"{source} {command}")
    audited = config_changes(old, config)
    if changes or audited:
        with database(ctx) as store:
            if changes:
                store.run(record_price_changes, changes, now_text())
            for action, target, was, now in audited:
                store.run(audit.record_now, action, target, was, now)


def config_changes(old: Config, new: Config) -> list[tuple[str, str, dict | None, dict | None]]:
    """Each provider, model and plan that config.toml gains, loses or changes: (action, target, before,
    after) for the audit log; a provider's headers by name only (their values may be credentials)."""

    def provider(p: Provider) -> dict:
        return {**provider_dict(p), "headers": sorted(p.headers)}

    found: list[tuple[str, str, dict | None, dict | None]] = []

    def compare(kind: str, before: Mapping[str, Any], after: Mapping[str, Any], shown: Callable[[Any], dict]) -> None:
        for name in sorted(set(before) | set(after)):
            was = shown(before[name]) if name in before else None
            now = shown(after[name]) if name in after else None
            if was != now:
                action = "add" if was is None else ("remove" if now is None else "change")
                found.append((f"{kind}.{action}", f"{kind}:{name}", was, now))

    compare("provider", old.providers, new.providers, provider)
    compare("model", old.models, new.models, _model_dict)
    compare("plan", old.plans, new.plans, _plan_dict)
    return found


@contextmanager
def database(ctx: typer.Context) -> Iterator[Store]:
    store = open_store(paths(ctx).store)
    try:
        yield store
    finally:
        store.close()


def make_home_private(where: Paths) -> None:
    """Tighten modes an earlier version left loose, and say so in one line."""
    fixed = where.make_private()
    if fixed:
        names = ", ".join(str(path) for path in fixed)
        console.print(f"made private (they were readable by other users of this machine): {names}")


class WholeTable(Table):
    """A rich table whose `whole` columns (ids, keys, URLs: things a user copies) are never cut at a
    narrow terminal or in a pipe: the other columns wrap around them, and where even that leaves
    them no room, each row is printed as a block of `header: value` lines instead."""

    NARROWEST = 6  # a wrapped column narrower than this is unreadable

    def __init__(self, *headers: str, whole: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.records: list[tuple[Any, ...]] = []
        for header in headers:
            if header in whole:
                self.add_column(header, no_wrap=True, min_width=cell_len(header))
            else:
                self.add_column(header, overflow="fold")

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*cells, **kwargs)
        self.records.append(cells)
        for column, cell in zip(self.columns, cells, strict=False):
            if column.no_wrap and isinstance(cell, str):
                column.min_width = max(column.min_width or 0, cell_len(cell))

    def __rich_console__(self, console: Console, options: Any) -> Any:
        needed = (
            sum((c.min_width or 0) if c.no_wrap else self.NARROWEST for c in self.columns) + 3 * len(self.columns) + 1
        )
        if needed <= options.max_width:
            yield from super().__rich_console__(console, options)
            return
        width = max(cell_len(str(c.header)) for c in self.columns)
        for cells in self.records:
            yield Text(str(cells[0]), style="bold", no_wrap=True, overflow="ignore")
            for column, cell in zip(self.columns[1:], cells[1:], strict=False):
                line = Text.assemble(f"  {str(column.header) + ':':<{width + 1}} ", Text.from_markup(str(cell)))
                line.no_wrap, line.overflow = True, "ignore"
                yield line


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
