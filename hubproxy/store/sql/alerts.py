"""Budget alerts in the store: which thresholds users and keys have crossed, one row per crossing,
period and receiver (the UNIQUE constraint makes a crossing raised by several workers or instances one
row), and the rows due to be sent, claimed by one sender at a time.

A user's percent is of the money they had after their last top-up or grant (`users.funded_balance`,
set by `accounts.add_ledger`), its period that top-up; a key's is of its spend cap in its budget
period (from the daily totals, as its cap is checked).
"""

from __future__ import annotations

import orjson

from hubproxy.periods import period_start
from hubproxy.store.sql import Connection, audit, transaction
from hubproxy.store.sql.accounts import key_spend_since

COLUMNS = "id, kind, target, email, threshold, period, receiver, detail, attempts"


def crossings(conn: Connection, thresholds: list[int], plans: dict[str, tuple[int, ...]] | None = None) -> list[tuple]:
    """(kind, target, email, threshold, period, detail) for every threshold crossed now: a user's own
    thresholds, else their plan's, else `thresholds`; a key's own, else `thresholds`."""
    plans = plans or {}
    own = [
        orjson.loads(text)
        for (text,) in conn.execute("SELECT DISTINCT alert_thresholds FROM users WHERE alert_thresholds IS NOT NULL")
    ]
    lowest = min([*thresholds, *(min(m) for m in plans.values()), *(min(m) for m in own)])
    found: list[tuple] = []
    for user_id, email, balance, funded, funded_id, plan, marks in conn.execute(
        "SELECT id, email, balance, funded_balance, funded_id, plan, alert_thresholds FROM users "
        "WHERE status = 'active' AND funded_balance > 0 AND balance * 100 <= funded_balance * ?",
        (100 - lowest,),
    ).fetchall():
        used = (funded - balance) * 100 / funded
        marks = orjson.loads(marks) if marks else plans.get(plan or "", thresholds)
        detail = {"user_id": user_id, "balance": balance, "funded": funded, "used_percent": round(used, 1)}
        found += [("balance", email, email, t, f"funding:{funded_id}", detail) for t in marks if used >= t]
    for key_id, name, email, limit, period, marks in conn.execute(
        "SELECT k.id, k.name, u.email, k.spend_limit, k.budget_period, k.alert_thresholds FROM api_keys k "
        "JOIN users u ON u.id = k.user_id WHERE k.spend_limit IS NOT NULL AND k.spend_limit > 0 AND k.status = 'active'"
    ).fetchall():
        key_marks = orjson.loads(marks) if marks else thresholds
        start = period_start(period)
        spent = key_spend_since(conn, key_id, start)
        used = spent * 100 / limit
        detail = {"key": name, "spent": spent, "limit": limit, "budget_period": period, "used_percent": round(used, 1)}
        found += [("key_cap", key_id, email, t, start or "life", detail) for t in key_marks if used >= t]
    return found


def set_thresholds(conn: Connection, table: str, column: str, target: str, marks: list[int] | None) -> int:
    """A user's (by email) or a key's (by id) own thresholds; None: back to the plan's or global ones.
    Returns how many rows changed (0: no such user or key)."""
    with transaction(conn):
        row = conn.execute(f"SELECT alert_thresholds FROM {table} WHERE {column} = ?", (target,)).fetchone()
        if row is None:
            return 0
        new = None if marks is None else orjson.dumps(sorted(set(marks))).decode()
        conn.execute(f"UPDATE {table} SET alert_thresholds = ? WHERE {column} = ?", (new, target))
        before = None if row[0] is None else orjson.loads(row[0])
        audit.record(conn, "alerts.thresholds", target, {"thresholds": before}, {"thresholds": marks})
    return 1


def raise_alerts(conn: Connection, found: list[tuple], receivers: list[str], created_at: str) -> int:
    """One row per crossing and receiver not raised before; how many are new."""
    new = 0
    for kind, target, email, threshold, period, detail in found:
        for receiver in receivers:
            row = conn.execute(
                "INSERT INTO alerts (kind, target, email, threshold, period, receiver, detail, created_at, next_try) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (kind, target, threshold, period, receiver) DO NOTHING RETURNING id",
                (kind, target, email, threshold, period, receiver, orjson.dumps(detail).decode(), created_at),
            ).fetchone()
            new += row is not None
    return new


def claim_due(conn: Connection, now: float, lease: float, limit: int) -> list[dict]:
    """Unsent rows whose time has come, taken for `lease` seconds by this sender (another worker's
    sender skips them meanwhile)."""
    rows = conn.execute(
        f"UPDATE alerts SET next_try = ? WHERE id IN (SELECT id FROM alerts WHERE sent_at IS NULL AND next_try <= ? "
        f"ORDER BY id LIMIT ?) RETURNING {COLUMNS}",
        (now + lease, now, limit),
    ).fetchall()
    names = COLUMNS.split(", ")
    return [{**dict(zip(names, row, strict=True)), "detail": orjson.loads(row[7])} for row in rows]


def mark_sent(conn: Connection, alert_id: int, sent_at: str) -> None:
    conn.execute("UPDATE alerts SET sent_at = ?, last_error = NULL WHERE id = ?", (sent_at, alert_id))


def mark_failed(conn: Connection, alert_id: int, attempts: int, next_try: float, error: str) -> None:
    conn.execute(
        "UPDATE alerts SET attempts = ?, next_try = ?, last_error = ? WHERE id = ?",
        (attempts, next_try, error[:300], alert_id),
    )


def recent_for(conn: Connection, email: str, since: str) -> list[dict]:
    """A user's crossings since `since` (one per crossing, whichever receivers), newest first."""
    rows = conn.execute(
        "SELECT DISTINCT kind, target, threshold, period, detail FROM alerts WHERE email = ? AND created_at >= ? "
        "ORDER BY threshold DESC",
        (email, since),
    ).fetchall()
    return [
        {"kind": kind, "target": target, "threshold": t, "period": period, "detail": orjson.loads(detail)}
        for kind, target, t, period, detail in rows
    ]


def counts(conn: Connection) -> list[tuple[str, str, int]]:
    """(kind, receiver, sent) for /metrics' hubproxy_alerts_total."""
    return conn.execute(
        "SELECT kind, receiver, count(*) FROM alerts WHERE sent_at IS NOT NULL GROUP BY kind, receiver"
    ).fetchall()
