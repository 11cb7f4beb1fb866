"""Months of calls written into a SQLite home at once, for the dashboard's bench and screenshots.

Rows are made by SQL (a recursive counter), not one by one: ten million take about a minute. They
look like a team's traffic: one heavy user and a tail, a few keys each, several models at their
prices, 3% failed calls, latencies of 0.3-4 s, spread evenly over `days` up to now. The daily and
hourly totals and each call's ledger charge are written too, with one top-up per user that pays
for them, so the store's invariants hold (`users.balance == sum(ledger)`).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

MODELS = (  # (model, provider, input, output price in micro-USD per 1M tokens, weight)
    ("deepseek-chat", "deepseek", 270_000, 1_100_000, 8),
    ("qwen-max", "qwen", 1_600_000, 6_400_000, 4),
    ("glm-4.6", "zhipu", 600_000, 2_200_000, 3),
    ("kimi-k2", "moonshot", 600_000, 2_500_000, 3),
    ("claude-sonnet", "anthropic", 3_000_000, 15_000_000, 2),
)


def seed_history(database: Path, rows: int, days: float = 30.0, now: float | None = None) -> float:
    """Add `rows` calls spread over the users and keys already in `database`; returns the seconds."""
    started = time.perf_counter()
    conn = sqlite3.connect(database, isolation_level=None)
    keys = conn.execute("SELECT k.user_id, k.id FROM api_keys k ORDER BY k.user_id, k.created_at").fetchall()
    if not keys:
        raise ValueError("the home has no keys to spread calls over")
    users = sorted({user for user, _ in keys})
    slots = []  # 100 slots: the first user makes 40% of the calls, the others share the rest
    for slot in range(100):
        user = users[0] if slot < 40 or len(users) == 1 else users[1 + slot % (len(users) - 1)]
        own = [key for owner, key in keys if owner == user]
        slots.append((slot, user, own[slot % len(own)]))
    models = [(i, *m[:4]) for i, m in enumerate(model for model in MODELS for _ in range(model[4]))]
    end = time.time() if now is None else now
    step = days * 86400 / rows
    conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE seed_slots (slot INTEGER PRIMARY KEY, user_id INTEGER, key_id TEXT)")
    conn.executemany("INSERT INTO seed_slots VALUES (?,?,?)", slots)
    conn.execute(
        "CREATE TEMP TABLE seed_models (slot INTEGER PRIMARY KEY, model TEXT, provider TEXT, pin INTEGER, pout INTEGER)"
    )
    conn.executemany("INSERT INTO seed_models VALUES (?,?,?,?,?)", models)
    first = conn.execute("SELECT coalesce(max(id), 0) FROM usage").fetchone()[0] + 1
    conn.execute(
        f"""INSERT INTO usage (request_id, user_id, key_id, model, provider, upstream_model, endpoint, stream,
            prompt_tokens, completion_tokens, cost, estimated, status, http_status, latency_ms, created_at,
            cached_tokens, reasoning_tokens)
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1}),
        c AS (
            SELECT i, s.user_id, s.key_id, m.model, m.provider, m.pin, m.pout,
                (i * 31) % 100 < 3 AS failed,
                200 + (i * 7919) % 3000 AS prompt, 50 + (i * 104729) % 800 AS output,
                ((i * 13) % 10 < 3) * ((i * 211) % 1500) AS cached
            FROM n JOIN seed_slots s ON s.slot = (i * 37) % 100
            JOIN seed_models m ON m.slot = (i * 11) % {len(models)}
        )
        SELECT 'req_seed' || i, user_id, key_id, model, provider, model, '/chat/completions', i % 3 = 0,
            CASE WHEN failed THEN 0 ELSE prompt END, CASE WHEN failed THEN 0 ELSE output END,
            CASE WHEN failed THEN 0 ELSE prompt * pin + output * pout END, 0,
            CASE WHEN failed THEN 'upstream_error' ELSE 'ok' END, CASE WHEN failed THEN 502 ELSE 200 END,
            300 + (i * 7877) % 4000,
            strftime('%Y-%m-%dT%H:%M:%fZ', {end - days * 86400} + i * {step}, 'unixepoch'),
            CASE WHEN failed THEN 0 ELSE cached END, 0
        FROM c"""
    )
    seeded = f"FROM usage WHERE id >= {first}"
    conn.execute(
        "INSERT INTO usage_daily (day, user_id, key_id, model, provider, requests, prompt_tokens, completion_tokens, "
        "cost, estimated, cached_tokens, cache_write_tokens, reasoning_tokens) "
        "SELECT substr(created_at, 1, 10), user_id, key_id, model, provider, count(*), sum(prompt_tokens), "
        f"sum(completion_tokens), sum(cost), 0, sum(cached_tokens), 0, 0 {seeded} GROUP BY 1, 2, 3, 4, 5 "
        "ON CONFLICT (day, user_id, key_id, model, provider) DO UPDATE SET requests = requests + excluded.requests, "
        "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
        "completion_tokens = completion_tokens + excluded.completion_tokens, cost = cost + excluded.cost, "
        "cached_tokens = cached_tokens + excluded.cached_tokens"
    )
    conn.execute(
        "INSERT INTO usage_hourly (hour, user_id, requests, errors, cost, latency_ms) "
        "SELECT substr(created_at, 1, 13), user_id, count(*), sum(status <> 'ok'), sum(cost), sum(latency_ms) "
        f"{seeded} GROUP BY 1, 2 ON CONFLICT (hour, user_id) DO UPDATE SET requests = requests + excluded.requests, "
        "errors = errors + excluded.errors, cost = cost + excluded.cost, latency_ms = latency_ms + excluded.latency_ms"
    )
    start_stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(end - days * 86400 - 60))
    conn.execute(
        "INSERT INTO ledger (user_id, kind, amount, note, created_at) "
        f"SELECT user_id, 'topup', sum(cost), 'seeded history', ? {seeded} GROUP BY user_id",
        (start_stamp,),
    )
    conn.execute(
        "INSERT INTO ledger (user_id, kind, amount, request_id, created_at) "
        f"SELECT user_id, 'charge', -cost, request_id, created_at {seeded} AND cost > 0 ORDER BY id"
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started
