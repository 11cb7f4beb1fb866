"""Fill a hubproxy home with many keys and usage rows, the way the server writes them, to check
that cost stays flat as the database grows."""

from __future__ import annotations

import time
from pathlib import Path

from hubproxy import apikey
from hubproxy.store.records import CallRecord, Reservation
from hubproxy.store.sql import transaction
from hubproxy.store.sql.usage import record_calls
from hubproxy.store.sqlite.db import connect
from hubproxy.tokens import Usage

BATCH = 5000


def seed(home: Path, keys: int, rows: int) -> dict[str, float]:
    """Add `keys` keys (to one extra user) and `rows` settled calls; returns the seconds each took."""
    conn = connect(home / "hubproxy.db")
    started = time.perf_counter()
    with transaction(conn):
        uid = conn.execute(
            "INSERT INTO users (email, balance, rev) VALUES ('seed@example.com', 0, "
            "(SELECT max(rev) + 1 FROM users)) RETURNING id"
        ).fetchone()[0]
        rev0 = conn.execute("SELECT coalesce(max(rev), 0) + 1 FROM api_keys").fetchone()[0]
        conn.executemany(
            "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, last4, rev) VALUES (?, ?, 'seed', ?, ?, ?, ?)",
            [
                (f"key_seed{i:08d}", uid, apikey.hash_key(f"seed-{i}"), "sk-hp-see", f"{i % 10000:04d}", rev0 + i)
                for i in range(keys)
            ],
        )
    keys_done = time.perf_counter()
    models = ["deepseek-chat", "qwen-max", "glm-4", "kimi", "doubao"]
    for start in range(0, rows, BATCH):
        records = [
            CallRecord(
                reservation=Reservation(
                    f"req_seed{n:010d}",
                    uid,
                    f"key_seed{n % max(keys, 1):08d}",
                    models[n % 5],
                    "seed",
                    models[n % 5],
                    "/chat/completions",
                    False,
                    0,
                    0,
                    0,
                ),
                usage=Usage(100 + n % 50, 20 + n % 30),
                cost=0,
                estimated=False,
                status="ok",
                http_status=200,
                latency_ms=5,
            )
            for n in range(start, min(start + BATCH, rows))
        ]
        with transaction(conn):
            record_calls(conn, records)
    conn.close()
    return {"seed_keys_s": keys_done - started, "seed_rows_s": time.perf_counter() - keys_done}
