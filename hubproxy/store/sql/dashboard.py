"""The dashboard's reads: an overview from the daily and hourly totals, the usage log and the ledger in
pages that stay fast on millions of rows (keyset paging on indexes, m018), and what each key spent.

Every function takes `user_id=None` for the admin's view of everyone; with a user id, nothing of
another user can come back.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hubproxy.store.records import USAGE_COLUMNS, UsageFilter, UsagePage
from hubproxy.store.sql import Connection
from hubproxy.store.sql.accounts import key_owner

PERCENTILE_SAMPLE = 10_000
SCAN_BUDGET = 100_000  # calls a filtered page may look at (SQLite reads ~1.5 million a second here)
LEDGER_COLUMNS = ("id", "created_at", "email", "kind", "amount", "note", "request_id")


def _scope(user_id: int | None, column: str = "user_id") -> tuple[str, list]:
    return (f" AND {column} = ?", [user_id]) if user_id is not None else ("", [])


def overview(conn: Connection, user_id: int | None, now: datetime) -> dict:
    """Spend today / 7 / 30 days, spend per day by model (30 days), calls and errors per hour (48 h),
    and the latency percentiles of the last 24 hours (the newest PERCENTILE_SAMPLE calls)."""
    today = now.date()
    first_day = (today - timedelta(days=29)).isoformat()
    scope, params = _scope(user_id)
    days: dict[str, dict[str, int]] = {}
    calls_30d = 0
    for day, model, cost, requests in conn.execute(
        f"SELECT day, model, sum(cost), sum(requests) FROM usage_daily WHERE day >= ?{scope} GROUP BY day, model",
        [first_day, *params],
    ):
        days.setdefault(day, {})[model] = cost
        calls_30d += requests
    spend = {
        name: sum(sum(by_model.values()) for day, by_model in days.items() if day >= start)
        for name, start in (
            ("today", today.isoformat()),
            ("7d", (today - timedelta(days=6)).isoformat()),
            ("30d", first_day),
        )
    }
    first_hour = (now - timedelta(hours=47)).strftime("%Y-%m-%dT%H")
    hours = {
        hour: (requests, errors, cost)
        for hour, requests, errors, cost in conn.execute(
            f"SELECT hour, sum(requests), sum(errors), sum(cost) FROM usage_hourly WHERE hour >= ?{scope} "
            "GROUP BY hour",
            [first_hour, *params],
        )
    }
    last_day = (now - timedelta(hours=23)).strftime("%Y-%m-%dT%H")
    calls_24h = sum(v[0] for h, v in hours.items() if h >= last_day)
    errors_24h = sum(v[1] for h, v in hours.items() if h >= last_day)
    since = (now - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S")
    latencies = sorted(
        row[0]
        for row in conn.execute(
            f"SELECT latency_ms FROM usage WHERE created_at >= ?{scope} ORDER BY created_at DESC LIMIT ?",
            [since, *params, PERCENTILE_SAMPLE],
        )
    )
    return {
        "spend": spend,
        "calls_30d": calls_30d,
        "calls_24h": calls_24h,
        "errors_24h": errors_24h,
        "p50_ms": _percentile(latencies, 0.50),
        "p95_ms": _percentile(latencies, 0.95),
        "latency_sample": len(latencies),
        "days": days,
        "hours": hours,
    }


def _percentile(sorted_values: list[int], q: float) -> int | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def usage_page(conn: Connection, where: UsageFilter, limit: int) -> UsagePage:
    """Calls newest first, `limit` of them after `where.before`: never their content (none is stored).

    A user's calls, a key's and everyone's are read in index order, so a page reads only its own rows.
    A model or status filter is checked row by row, so that a filter matching few or no calls cannot
    read millions: the search goes back only as far as SCAN_BUDGET of the calls it would look at
    (counted in the hourly totals), and says where it stopped."""
    floor = _scan_floor(conn, where)
    clauses: list[str] = ["1 = 1"]
    params: list[object] = []
    if floor is not None:
        clauses.append("u.created_at >= ?")
        params.append(floor)
    owner = where.user_id
    if where.key_id is not None and owner is not None:
        # the key's own index, not the user's: a key with few calls would otherwise read all of theirs
        if key_owner(conn, where.key_id) != owner:
            return UsagePage([])
        owner = None
    for column, value in (("u.user_id", owner), ("u.key_id", where.key_id), ("u.model", where.model)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.status == "error":
        clauses.append("u.status <> 'ok'")
    elif where.status is not None:
        clauses.append("u.status = ?")
        params.append(where.status)
    if where.since:
        clauses.append("u.created_at >= ?")
        params.append(where.since)
    if where.until:
        clauses.append("u.created_at < ?")
        params.append((datetime.fromisoformat(where.until) + timedelta(days=1)).strftime("%Y-%m-%d"))
    if where.before is not None:
        clauses.append("(u.created_at < ? OR (u.created_at = ? AND u.id < ?))")
        params += [where.before[0], where.before[0], where.before[1]]
    rows = conn.execute(
        "SELECT u.id, u.request_id, u.created_at, s.email, u.key_id, u.model, u.provider, u.endpoint, u.stream, "
        "u.status, u.http_status, u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens, "
        "u.cache_write_1h_tokens, u.reasoning_tokens, u.web_search_requests, u.cost, u.estimated, u.latency_ms, "
        "coalesce(u.price_id, '') "
        "FROM usage u JOIN users s ON s.id = u.user_id "
        f"WHERE {' AND '.join(clauses)} ORDER BY u.created_at DESC, u.id DESC LIMIT ?",
        [*params, limit],
    )
    return UsagePage([dict(zip(USAGE_COLUMNS, row, strict=True)) for row in rows], floor)


def _scan_floor(conn: Connection, where: UsageFilter) -> str | None:
    """For a model or status filter: the hour (`YYYY-MM-DDTHH`) back to which the calls the search
    would look at number SCAN_BUDGET; None when all of them are fewer."""
    if where.model is None and where.status is None:
        return None
    clauses: list[str] = ["1 = 1"]
    params: list[object] = []
    if where.user_id is not None:
        clauses.append("user_id = ?")
        params.append(where.user_id)
    if where.before is not None:  # the hours that began before it (so each further page starts earlier)
        clauses.append("hour < ?")
        params.append(where.before[0])
    elif where.until:
        clauses.append("hour <= ?")
        params.append(where.until + "T23")
    if where.since:
        clauses.append("hour >= ?")
        params.append(where.since)
    seen = 0
    for hour, requests in conn.execute(
        f"SELECT hour, sum(requests) FROM usage_hourly WHERE {' AND '.join(clauses)} GROUP BY hour ORDER BY hour DESC",
        params,
    ):
        seen += requests
        if seen >= SCAN_BUDGET:
            return hour
    return None


def usage_models(conn: Connection, user_id: int | None) -> list[str]:
    """The models a filter can offer, from the daily totals."""
    scope, params = _scope(user_id)
    return sorted(row[0] for row in conn.execute(f"SELECT DISTINCT model FROM usage_daily WHERE 1 = 1{scope}", params))


def ledger_page(
    conn: Connection, user_id: int | None, before: int | None, limit: int, charges: bool = False
) -> list[dict]:
    """Balance movements newest first; without `charges`, only top-ups, grants and adjustments (each
    call's charge is in the usage log)."""
    clauses: list[str] = ["1 = 1"]
    params: list[object] = []
    if not charges:
        clauses.append("l.kind <> 'charge'")
    if user_id is not None:
        clauses.append("l.user_id = ?")
        params.append(user_id)
    if before is not None:
        clauses.append("l.id < ?")
        params.append(before)
    rows = conn.execute(
        "SELECT l.id, l.created_at, u.email, l.kind, l.amount, l.note, l.request_id FROM ledger l "
        f"JOIN users u ON u.id = l.user_id WHERE {' AND '.join(clauses)} ORDER BY l.id DESC LIMIT ?",
        [*params, limit],
    )
    return [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in rows]


def key_spend(conn: Connection, user_id: int | None) -> dict[str, tuple[int, int]]:
    """Each key's calls and cost, all time, from the daily totals."""
    scope, params = _scope(user_id)
    return {
        key_id: (requests, cost)
        for key_id, requests, cost in conn.execute(
            f"SELECT key_id, sum(requests), sum(cost) FROM usage_daily WHERE 1 = 1{scope} GROUP BY key_id", params
        )
    }
