"""How big the store is: rows and bytes per table (indexes included), and how fast usage grows.

SQLite counts pages per table and index with its `dbstat` table; PostgreSQL says
`pg_total_relation_size`. Growth is the calls per day of the last week, from the daily totals, times
the bytes a usage row costs here (the usage table and its indexes over its rows).
"""

from __future__ import annotations

from hubproxy.store.sql import Connection

TABLES = (
    "users",
    "api_keys",
    "ledger",
    "usage",
    "usage_daily",
    "usage_hourly",
    "reservations",
    "price_changes",
    "audit",
    "alerts",
)


def table_sizes(conn: Connection) -> list[dict]:
    """Each table's rows and bytes (its indexes counted with it), largest first."""
    if conn.dialect.name == "sqlite":
        found = dict(
            conn.execute(
                "SELECT m.tbl_name, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name "
                "GROUP BY m.tbl_name"
            ).fetchall()
        )
    else:
        found = {
            name: conn.execute("SELECT pg_total_relation_size(?::regclass)", (name,)).fetchone()[0] for name in TABLES
        }
    sizes = [
        {
            "table": name,
            "rows": conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0],
            "bytes": int(found.get(name) or 0),
        }
        for name in TABLES
    ]
    return sorted(sizes, key=lambda row: -row["bytes"])


def calls_per_day(conn: Connection, days: int = 7) -> float:
    """Calls a day over the last `days` days with any (the daily totals)."""
    rows = conn.execute(
        "SELECT day, sum(requests) FROM usage_daily GROUP BY day ORDER BY day DESC LIMIT ?", (days,)
    ).fetchall()
    return sum(count for _, count in rows) / len(rows) if rows else 0.0
