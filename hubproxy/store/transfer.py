"""Copy a laptop's SQLite store up to PostgreSQL (`hubproxy db migrate-to URL`): users, keys, the
ledger, usage rows and daily totals, ids kept, in one transaction on the target.

What is copied is what is settled: a store with open reservations (a server running on it, or killed
and not restarted) is refused, as is a target that already has users. After the copy each user's
balance is checked against the sum of their ledger on the target, and the row counts against the
source's: any difference rolls the whole copy back.
"""

from __future__ import annotations

from pathlib import Path

from hubproxy.store.records import DatabaseError
from hubproxy.store.sql import Connection

TABLES = ("users", "api_keys", "ledger", "usage", "usage_daily", "usage_hourly", "price_changes")  # foreign keys first
IDENTITIES = ("users", "ledger", "usage", "price_changes")


def migrate_to(source_path: Path, url: str) -> dict[str, int]:
    """Copy the SQLite store at `source_path` into the PostgreSQL database at `url`; rows per table."""
    from hubproxy.store.postgres.db import connect as connect_postgres
    from hubproxy.store.sql import transaction
    from hubproxy.store.sql.accounts import ledger_mismatches
    from hubproxy.store.sqlite.db import connect as connect_sqlite

    source = connect_sqlite(source_path)
    target = connect_postgres(url)
    try:
        open_calls = source.execute("SELECT count(*) FROM reservations").fetchone()[0]
        if open_calls:
            raise DatabaseError(
                f"{source_path} has {open_calls} call(s) open: stop the server (or start and stop it once after a "
                "crash, which settles them) before copying"
            )
        if count_rows(target, "users"):
            raise DatabaseError("the target database already has users: copy into an empty hubproxy database")
        copied: dict[str, int] = {}
        with transaction(target):
            for table in TABLES:
                cursor = source.execute(f"SELECT * FROM {table}")
                columns = [d[0] for d in cursor.description]
                rows = cursor.fetchall()
                marks = ",".join("?" * len(columns))
                target.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
                copied[table] = len(rows)
            for table in IDENTITIES:
                target.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
            for table in TABLES:
                there = count_rows(target, table)
                if there != copied[table]:
                    raise DatabaseError(f"{table}: {copied[table]} rows read, {there} on the target; nothing copied")
            wrong = ledger_mismatches(target)
            if wrong:
                raise DatabaseError(f"balances differ from their ledger on the target ({wrong[:3]}); nothing copied")
        return copied
    finally:
        source.close()
        target.close()


def count_rows(conn: Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return row[0] if row else 0
