"""A consistent online copy of the SQLite store (SQLite's backup API, page by page while the server
writes), and the checks a copy passes before it is kept or restored: SQLite's integrity check, and
every balance the sum of its ledger."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

from hubproxy.store.sql.accounts import ledger_mismatches
from hubproxy.store.sqlite.db import BUSY_TIMEOUT_MS, SQLiteConnection


def problems_of(path: Path) -> str:
    """What is wrong with a copy of the store at `path` ("": nothing)."""
    try:
        uri = f"file:{path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, factory=SQLiteConnection)) as conn:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                return f"integrity check: {verdict}"
            wrong = [email for email, _, _ in ledger_mismatches(conn)]
    except sqlite3.Error as exc:  # not a database, or no users or ledger table
        return f"not a hubproxy store ({exc})"
    return f"balance differs from the ledger for {', '.join(wrong[:5])}" if wrong else ""


def back_up(source: Path, target: Path) -> str:
    """Copy the live store at `source` to the new file `target`, checked; what was wrong ("": kept)."""
    partial = target.with_name(target.name + ".partial")
    try:
        with (
            contextlib.closing(sqlite3.connect(source, timeout=BUSY_TIMEOUT_MS / 1000)) as live,
            contextlib.closing(sqlite3.connect(partial)) as copy,
        ):
            live.backup(copy)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        return f"the copy failed: {exc}"
    problems = problems_of(partial)
    if problems:
        partial.unlink(missing_ok=True)
        return problems
    os.chmod(partial, 0o600)
    os.replace(partial, target)
    return ""


def restore(backup: Path, target: Path) -> str:
    """Put a checked backup in place as the store at `target` (which must not exist)."""
    problems = problems_of(backup)
    if problems:
        return problems
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backup, target)
    os.chmod(target, 0o600)
    return ""
