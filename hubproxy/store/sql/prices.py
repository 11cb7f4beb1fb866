"""The price history: every change of a model's prices, with who made it, when, from where, and the
prices before and after (`config.catalog.price_settings`, as JSON). A usage row's `price_id` names the
prices it was billed at; the first change to that id says since when they were in force."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hubproxy.store.sql import Connection, transaction


@dataclass(frozen=True)
class PriceChange:
    model: str
    price_id: str  # "" where the model was removed or left unpriced
    actor: str
    source: str
    old: dict | None
    new: dict | None


def record_price_changes(conn: Connection, changes: list[PriceChange], at: str) -> None:
    with transaction(conn):
        conn.executemany(
            "INSERT INTO price_changes (at, model, price_id, actor, source, old, new) VALUES (?,?,?,?,?,?,?)",
            [(at, c.model, c.price_id, c.actor, c.source, _json(c.old), _json(c.new)) for c in changes],
        )


def _json(prices: dict | None) -> str | None:
    return None if prices is None else json.dumps(prices, sort_keys=True)


def latest_prices(conn: Connection) -> dict[str, tuple[str, dict | None]]:
    """Each model's price id and prices as last recorded."""
    rows = conn.execute(
        "SELECT model, price_id, new FROM price_changes WHERE id IN (SELECT max(id) FROM price_changes GROUP BY model)"
    ).fetchall()
    return {model: (price_id, None if new is None else json.loads(new)) for model, price_id, new in rows}


def price_history(conn: Connection, model: str | None = None, limit: int = 200) -> list[dict]:
    """The newest changes first (of one model, or all)."""
    where, args = ("WHERE model = ?", (model,)) if model else ("", ())
    rows = conn.execute(
        f"SELECT id, at, model, price_id, actor, source, old, new FROM price_changes {where} ORDER BY id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [
        {
            "id": row[0],
            "at": row[1],
            "model": row[2],
            "price_id": row[3],
            "actor": row[4],
            "source": row[5],
            "old": None if row[6] is None else json.loads(row[6]),
            "new": None if row[7] is None else json.loads(row[7]),
        }
        for row in rows
    ]


def price_since(conn: Connection, price_ids: list[str]) -> dict[str, str]:
    """When each price id first came in (the time of its first change), for the usage report."""
    if not price_ids:
        return {}
    marks = ",".join("?" * len(price_ids))
    rows = conn.execute(
        f"SELECT price_id, min(at) FROM price_changes WHERE price_id IN ({marks}) GROUP BY price_id", price_ids
    ).fetchall()
    return dict(rows)


def prices_billed(conn: Connection, since: str | None = None, user: str | None = None) -> dict[str, list[str]]:
    """For each model, the days (UTC) the prices its calls were billed at came in, oldest first:
    what `usage report` shows as "billed at the price of"."""
    where, args = ["price_id IS NOT NULL", "price_id <> ''"], []
    if since:
        where.append("created_at >= ?")
        args.append(since)
    if user:
        where.append("user_id = (SELECT id FROM users WHERE email = ?)")
        args.append(user)
    pairs = conn.execute(f"SELECT DISTINCT model, price_id FROM usage WHERE {' AND '.join(where)}", args).fetchall()
    since_of = price_since(conn, sorted({price_id for _, price_id in pairs}))
    billed: dict[str, list[str]] = {}
    for model, price_id in pairs:
        billed.setdefault(model, []).append(since_of.get(price_id, "")[:10] or "unrecorded")
    return {model: sorted(set(days)) for model, days in billed.items()}
