"""Usage rows, open reservations, and the reports built from them."""

from __future__ import annotations

import operator
import time

from hubproxy.store.records import CallRecord, Reservation
from hubproxy.store.sql import Connection, transaction
from hubproxy.store.sql.accounts import charge_many
from hubproxy.store.sql.leases import charge_leases, drop_leases
from hubproxy.store.sql.limits import clear_limit_calls, release_budgets
from hubproxy.tokens import COLUMNS, counts

RESERVATION_COLUMNS = (
    "id, user_id, key_id, model, provider, upstream_model, endpoint, stream, amount, prompt_tokens, prompt_cost, "
    "price_id"
)
TOKEN_COLUMNS = ", ".join(COLUMNS)
TOKEN_MARKS = ",".join("?" * len(COLUMNS))
DAILY_SUMS = ("requests", "cost", "estimated", *COLUMNS)
HOURLY_SUMS = ("requests", "errors", "cost", "latency_ms")
# the settlement batch's statements, made once (every batch sends them)
USAGE_INSERT = (
    "INSERT INTO usage (request_id, user_id, key_id, model, provider, upstream_model, endpoint, stream, "
    "cost, estimated, status, http_status, latency_ms, created_at, attempts, over_reservation, price_id, "
    f"{TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,nullif(?, ''),?,?,{TOKEN_MARKS})"
)
DAILY_UPSERT = (
    f"INSERT INTO usage_daily (day, user_id, key_id, model, provider, {', '.join(DAILY_SUMS)}) "
    f"VALUES (?,?,?,?,?,{','.join('?' * len(DAILY_SUMS))}) "
    "ON CONFLICT (day, user_id, key_id, model, provider) DO UPDATE SET "
    + ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in DAILY_SUMS)
)
HOURLY_UPSERT = (
    "INSERT INTO usage_hourly (hour, user_id, requests, errors, cost, latency_ms) VALUES (?,?,?,?,?,?) "
    "ON CONFLICT (hour, user_id) DO UPDATE SET "
    + ", ".join(f"{c} = usage_hourly.{c} + excluded.{c}" for c in HOURLY_SUMS)
)
REPORT_GROUPS = {
    "model": "model",
    "user": "u.email",
    "key": "key_id",
    "provider": "provider",
    "day": "s.day",
}


def open_reservations(conn: Connection, reservations: list[Reservation]) -> None:
    """Persist in-flight calls so that a killed server's open calls are settled on restart."""
    conn.executemany(
        f"INSERT INTO reservations ({RESERVATION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        [r.row() for r in reservations],
    )


def record_calls(conn: Connection, records: list[CallRecord], lease_holder: str | None = None) -> list[int]:
    """Write usage rows and their daily totals, charge the ledger, close reservations, in bulk; with
    a `lease_holder` (a worker process), the charges also use up its leases.

    Returns each record's user's balance after the batch.
    """
    everything = records
    records = still_open(conn, records)
    if getattr(conn, "replaying", False):
        records = not_recorded(conn, records)
    now = time.time()
    created_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    conn.executemany(
        USAGE_INSERT,
        [
            (
                r.id,
                r.user_id,
                r.key_id,
                r.model,
                r.provider,
                r.upstream_model,
                r.endpoint,
                int(r.stream),
                rec.cost,
                int(rec.estimated),
                rec.status,
                rec.http_status,
                rec.latency_ms,
                created_at,
                rec.attempts,  # "" → NULL in SQL: binding None makes sqlite3 raise and clear an error per row
                rec.over_reservation,
                r.price_id,
                *counts(rec.usage),
            )
            for rec in records
            for r in (rec.reservation,)
        ],
    )
    add_daily_totals(conn, created_at, records)
    charges = [(rec.reservation.user_id, rec.cost, rec.reservation.id) for rec in records]
    balances = charge_many(conn, charges, created_at)
    if lease_holder is not None:
        charge_leases(conn, lease_holder, charges)
    persisted = [(rec.reservation.id,) for rec in records if rec.persisted]
    if persisted:  # most calls end before the sweep persists them
        conn.executemany("DELETE FROM reservations WHERE id = ?", persisted)
    held = [rec.reservation.id for rec in records if rec.budget_held]
    if held:
        release_budgets(conn, held)
    if len(records) < len(everything):
        for rec in everything:
            uid = rec.reservation.user_id
            if uid not in balances:
                balances[uid] = conn.execute("SELECT balance FROM users WHERE id = ?", (uid,)).fetchone()[0]
    return [balances[rec.reservation.user_id] for rec in everything]


def not_recorded(conn: Connection, records: list[CallRecord]) -> list[CallRecord]:
    """The records without a usage row yet: a batch written again after its COMMIT was cut off may have
    committed the first time."""
    if not records:
        return records
    done = present(conn, "usage", "request_id", [rec.reservation.id for rec in records])
    return [rec for rec in records if rec.reservation.id not in done]


def still_open(conn: Connection, records: list[CallRecord]) -> list[CallRecord]:
    """The records to write: all but those whose reservation row another process already settled
    (an instance that took this one for dead, PostgreSQL's reaper): a call is billed once."""
    persisted = [rec.reservation.id for rec in records if rec.persisted]
    if not persisted:
        return records
    still = present(conn, "reservations", "id", persisted)
    if len(still) == len(persisted):
        return records
    return [rec for rec in records if not rec.persisted or rec.reservation.id in still]


def present(conn: Connection, table: str, column: str, ids: list[str]) -> set[str]:
    """Which of `ids` have a row in `table` (by `column`)."""
    marks = ",".join("?" * len(ids))
    return {row[0] for row in conn.execute(f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", ids)}


def add_daily_totals(conn: Connection, created_at: str, records: list[CallRecord]) -> None:
    """The batch's calls added to the daily totals (reports) and the hourly ones (the dashboard)."""
    day, hour = created_at[:10], created_at[:13]
    totals: dict[tuple, list[int]] = {}
    hourly: dict[int, list[int]] = {}
    for rec in records:
        r = rec.reservation
        t = totals.setdefault((day, r.user_id, r.key_id, r.model, r.provider), [0] * len(DAILY_SUMS))
        t[0] += 1
        t[1] += rec.cost
        t[2] += rec.estimated
        usage = rec.usage
        t[3] += usage.input  # COLUMNS begins with prompt and completion tokens …
        t[4] += usage.output
        others = counts(usage)[2:]
        if any(others):  # … and most calls report no other class
            t[5:] = map(operator.add, t[5:], others)
        h = hourly.setdefault(r.user_id, [0, 0, 0, 0])
        h[0] += 1
        h[1] += rec.status != "ok"
        h[2] += rec.cost
        h[3] += rec.latency_ms
    conn.executemany(DAILY_UPSERT, [(*k, *v) for k, v in totals.items()])
    conn.executemany(HOURLY_UPSERT, [(hour, user_id, *v) for user_id, v in hourly.items()])


def settle_leftover_reservations(
    conn: Connection, *, holder: str | None = None, request_prefix: str | None = None
) -> int:
    """Bill the calls a killed server left open: the prompt was sent, so its estimated cost is charged.

    The usage row says `interrupted` and `estimated`; the output, if any was produced, is unknown.
    Leases the workers of a previous run held are only promises, and nobody holds them now; nor do
    its calls still hold rate-limit slots or spend-cap holds. With `holder` and `request_prefix`, only
    what one dead worker held (its lease holder name, the prefix of its request ids) is settled,
    while the other workers go on serving.
    """
    with transaction(conn):
        drop_leases(conn, holder)
        clear_limit_calls(conn, request_prefix)
        if request_prefix is None:
            rows = conn.execute(f"SELECT {RESERVATION_COLUMNS} FROM reservations").fetchall()
        else:
            rows = conn.execute(
                f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE substr(id, 1, ?) = ?",
                (len(request_prefix), request_prefix),
            ).fetchall()
        records = []
        for row in rows:
            r = Reservation(*row)
            r.stream = bool(r.stream)
            records.append(CallRecord.interrupted(r, persisted=True))
        if records:
            record_calls(conn, records)
    return len(rows)


def usage_report(conn: Connection, by: str, since: str | None = None, user: str | None = None) -> list[dict]:
    """Requests, tokens and cost grouped by model, user, key, provider or day, from the daily totals."""
    group = REPORT_GROUPS[by]
    where, params = [], []
    if since:
        where.append("s.day >= ?")
        params.append(since)
    if user:
        where.append("u.email = ?")
        params.append(user)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = (
        f"SELECT {group} AS grp, {', '.join(f'sum({c})' for c in DAILY_SUMS)} "
        f"FROM usage_daily s JOIN users u ON u.id = s.user_id {clause} "
        "GROUP BY grp ORDER BY sum(cost) DESC, grp"
    )
    cols = ["group", *DAILY_SUMS]
    return [dict(zip(cols, row, strict=True)) for row in conn.execute(sql, params)]


def recent_usage(conn: Connection, user_id: int, limit: int) -> list[dict]:
    """A user's latest calls, newest first: model, tokens, cost (pico-USD), time."""
    rows = conn.execute(
        "SELECT request_id, model, prompt_tokens, completion_tokens, cost, estimated, status, created_at "
        "FROM usage WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
        (user_id, limit),
    )
    cols = ["request_id", "model", "prompt_tokens", "completion_tokens", "cost", "estimated", "status", "timestamp"]
    return [dict(zip(cols, row, strict=True)) for row in rows]


def total_cost_since(conn: Connection, user_id: int, day: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(cost), 0) FROM usage_daily WHERE user_id = ? AND day >= ?", (user_id, day)
    ).fetchone()
    return row[0]


def prune_usage(conn: Connection, before: str, batch: int) -> int:
    """Delete up to `batch` usage rows created before `before` (the oldest first): the daily and hourly
    totals, the ledger and the price history keep what reports need. Returns how many went."""
    doomed = conn.execute(
        "SELECT id FROM usage WHERE created_at < ? ORDER BY created_at LIMIT ?", (before, batch)
    ).fetchall()
    if doomed:
        conn.execute(f"DELETE FROM usage WHERE id IN ({', '.join('?' * len(doomed))})", [row[0] for row in doomed])
    return len(doomed)


def pruned_before(conn: Connection) -> str | None:
    """The day before which calls are in the daily totals only (their rows pruned), or None."""
    oldest = conn.execute("SELECT min(created_at) FROM usage").fetchone()[0]
    day = oldest[:10] if oldest else "9999-12-31"
    earlier = conn.execute("SELECT 1 FROM usage_daily WHERE day < ? LIMIT 1", (day,)).fetchone()
    return day if earlier else None


def key_cost_on(conn: Connection, key_id: str, day: str) -> int:
    """A key's spend on one UTC day, from the daily totals (what `hubproxy statusline` shows)."""
    row = conn.execute("SELECT coalesce(sum(cost), 0) FROM usage_daily WHERE day = ? AND key_id = ?", (day, key_id))
    return row.fetchone()[0]


SETTLED_SLACK_SECONDS = 5.0


def settle_journaled(conn: Connection, calls: dict[str, tuple[float, Reservation]]) -> int:
    """Bill the journaled calls with neither a usage row nor an open reservation row (those are
    settled with the reservations), as `interrupted` records at their prompt estimate. Run after the
    open reservations were settled; returns how many were billed."""
    by_user: dict[int, float] = {}
    for started, r in calls.values():
        by_user[r.user_id] = min(started, by_user.get(r.user_id, started))
    with transaction(conn):
        known = {row[0] for row in conn.execute("SELECT id FROM reservations")}
        for user_id, since in by_user.items():
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since - SETTLED_SLACK_SECONDS))
            rows = conn.execute("SELECT request_id FROM usage WHERE user_id = ? AND created_at >= ?", (user_id, stamp))
            known.update(row[0] for row in rows)
        records = [
            CallRecord.interrupted(r, persisted=False)
            for request_id, (_, r) in calls.items()
            if request_id not in known
        ]
        if records:
            record_calls(conn, records)
    return len(records)
