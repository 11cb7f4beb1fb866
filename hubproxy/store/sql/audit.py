"""The audit log: an append-only table of every change to users, keys, money, providers, models and
plans — when, who (`hubproxy.audit.ACTOR`), what, on what, before and after (never a secret: no key, no
password hash) — each row's hash covering the row and the hash before it, so that a row edited or
deleted behind the log's back breaks the chain (`verify`). Written in the transaction of the change
it records."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from hubproxy.audit import ACTOR
from hubproxy.store.sql import Connection, transaction

GENESIS = "0" * 64
COLUMNS = "id, at, actor, action, target, before, after, hash"


def _digest(previous: str, at: str, actor: str, action: str, target: str, before: str | None, after: str | None) -> str:
    content = orjson.dumps([previous, at, actor, action, target, before, after])
    return hashlib.sha256(content).hexdigest()


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def record(conn: Connection, action: str, target: str, before: Any = None, after: Any = None) -> None:
    """Append one change, by the current actor, chained to the last row."""
    from hubproxy.store.sql.accounts import utc_now

    last = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    at, actor = utc_now(), ACTOR.get()
    old, new = _json(before), _json(after)
    digest = _digest(last[0] if last else GENESIS, at, actor, action, target, old, new)
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, before, after, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (at, actor, action, target, old, new, digest),
    )


def record_now(conn: Connection, action: str, target: str, before: Any = None, after: Any = None) -> None:
    """`record` in a transaction of its own (a change made outside the store: config.toml's)."""
    with transaction(conn):
        record(conn, action, target, before, after)


def entries(
    conn: Connection,
    since: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    limit: int = 200,
) -> list[dict]:
    """The newest entries first, filtered by time (`since`: a date or time), actor and target."""
    where, params = [], []
    for column, value, op in (("at", since, ">="), ("actor", actor, "="), ("target", target, "=")):
        if value:
            where.append(f"{column} {op} ?")
            params.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(f"SELECT {COLUMNS} FROM audit {clause} ORDER BY id DESC LIMIT ?", (*params, limit))
    names = COLUMNS.split(", ")
    return [dict(zip(names, row, strict=True)) for row in rows]


def verify(conn: Connection) -> tuple[int, int | None]:
    """Walk the chain: (rows checked, the id of the first row whose hash does not hold, or None)."""
    previous, checked = GENESIS, 0
    for row_id, at, actor, action, target, before, after, digest in conn.execute(
        f"SELECT {COLUMNS} FROM audit ORDER BY id"
    ):
        if _digest(previous, at, actor, action, target, before, after) != digest:
            return checked, row_id
        previous, checked = digest, checked + 1
    return checked, None
