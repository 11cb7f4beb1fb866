"""`hubproxy init`: write config.toml and create the database."""

from __future__ import annotations

from pathlib import Path

import typer

from hubproxy.cli.context import console, make_home_private, paths, print_json
from hubproxy.config import Config
from hubproxy.store import open_store, redacted


def init(ctx: typer.Context, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Create config.toml and the database (keeps what already exists)."""
    where = paths(ctx)
    created_config = not where.config.exists()
    config = Config.load(where.config)
    if created_config:
        config.save(where.config)
    open_store(where.store, create=True).close()
    if not json:
        make_home_private(where)
    database = where.store if isinstance(where.store, Path) else redacted(where.store)
    if json:
        print_json({"config": str(where.config), "database": str(database), "created_config": created_config})
        return
    console.print(f"config:   {where.config}{'' if created_config else '  (kept existing)'}")
    console.print(f"database: {database}")
    console.print("next: hubproxy providers add …, hubproxy models add …, hubproxy users add …")
