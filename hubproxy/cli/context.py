"""What every command needs: the resolved paths, config, database, output and the error contract.

Every error a user can cause is printed as one line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from hubproxy.config import Config, ConfigError, Paths
from hubproxy.money import MoneyError
from hubproxy.policy import PolicyError
from hubproxy.secrets import SecretError
from hubproxy.store.accounts import AccountError
from hubproxy.store.db import DatabaseError, connect

USER_ERRORS = (AccountError, ConfigError, MoneyError, DatabaseError, SecretError, PolicyError)
console = Console(highlight=False)


class CliError(Exception):
    """A user-caused problem detected by the CLI itself."""


class GuardedGroup(TyperGroup):
    """Turns every known user error raised by any subcommand into one line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (*USER_ERRORS, CliError) as exc:
            click.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        except sqlite3.Error as exc:
            click.echo(f"Error: database problem: {exc}", err=True)
            raise typer.Exit(1) from None


def paths(ctx: typer.Context) -> Paths:
    root = ctx.find_root()
    if not isinstance(root.obj, Paths):
        root.obj = Paths.resolve(root.params.get("home"))
    return root.obj


def load_config(ctx: typer.Context) -> Config:
    return Config.load(paths(ctx).config)


def save_config(ctx: typer.Context, config: Config) -> None:
    config.save(paths(ctx).config)


@contextmanager
def database(ctx: typer.Context) -> Iterator[sqlite3.Connection]:
    conn = connect(paths(ctx).database)
    try:
        yield conn
    finally:
        conn.close()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
