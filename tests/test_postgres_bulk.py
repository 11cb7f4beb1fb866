"""The PostgreSQL writer's bulk inserts (store/postgres/bulk.py): many rows of a plain INSERT go as one
statement reading them from JSON, and land exactly as row-by-row inserts would; rows the JSON path
cannot carry exactly (bools, floats, ints beyond 64 bits) go row by row."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from hubproxy.store.postgres.bulk import json_insert
from hubproxy.store.postgres.db import connect
from hubproxy.store.sql.usage import USAGE_INSERT

LEDGER = "INSERT INTO ledger (user_id, kind, amount, request_id, created_at) VALUES (?, 'charge', ?, ?, ?)"


def test_a_plain_insert_reads_its_rows_from_json_and_other_statements_are_left_alone():
    usage = json_insert(USAGE_INSERT)
    assert usage is not None and usage.keys[0] == "request_id" and "nullif(r.attempts, '')" in usage.sql
    ledger = json_insert(LEDGER)
    assert ledger is not None and ledger.keys == ("user_id", "amount", "request_id", "created_at")
    assert "SELECT r.user_id, 'charge', r.amount" in ledger.sql and ledger.sql.count("%s") == 1
    for other in (
        "INSERT INTO t (a) VALUES (?) ON CONFLICT DO NOTHING",
        "INSERT INTO t (a) VALUES (?) RETURNING id",
        "UPDATE t SET a = ? WHERE id = ?",
        "INSERT INTO t (a, b) VALUES (?)",  # not one element per column
        "INSERT INTO t (a) VALUES (coalesce(?, ?))",  # two values in one column
        "INSERT INTO t (a) VALUES ('?')",  # a question mark that is text
        "INSERT INTO t (a, b) VALUES ((?, ?)",  # unbalanced
    ):
        assert json_insert(other) is None, other


@pytest.fixture
def table(postgres_url):
    conn = connect(postgres_url)
    conn.execute(
        "CREATE TABLE bulk (id BIGSERIAL PRIMARY KEY, n BIGINT, s TEXT, kind TEXT NOT NULL, note TEXT, big NUMERIC)"
    )
    yield conn
    conn.close()


def rows_of(conn) -> list[tuple]:
    return [tuple(r) for r in conn.execute("SELECT n, s, kind, note, big FROM bulk ORDER BY id").fetchall()]


STRANGE = [
    "",
    "plain",
    "ünïcode ✓ 中文",
    "quote ' and \" and \\ backslash",
    "100% {json}: [1]",
    "line\nbreak\ttab",
    None,
]


def test_many_rows_go_as_one_statement_and_land_as_they_were_given(table, monkeypatch):
    sent = []
    executemany = psycopg.Cursor.executemany
    monkeypatch.setattr(
        psycopg.Cursor, "executemany", lambda self, q, p, **k: sent.append(q) or executemany(self, q, p)
    )
    insert = "INSERT INTO bulk (n, s, kind, note, big) VALUES (?, nullif(?, ''), 'charge', ?, ?)"
    rows = [(i - 3, text, text if i % 2 else None, 2**62 + i) for i, text in enumerate(STRANGE)]
    rows.append((-(2**63), "least", "most", 2**63 - 1))
    with table.raw.transaction():
        table.executemany(insert, rows)
    assert sent == []  # one statement over JSON, not one per row
    assert rows_of(table) == [(n, s or None, "charge", note, big) for n, s, note, big in rows]


@pytest.mark.parametrize(("odd", "stored"), [(True, 1), (2.5, Decimal("2.5")), (2**70, 2**70)])
def test_rows_json_cannot_carry_exactly_go_row_by_row(table, monkeypatch, odd, stored):
    sent = []
    executemany = psycopg.Cursor.executemany
    monkeypatch.setattr(
        psycopg.Cursor, "executemany", lambda self, q, p, **k: sent.append(q) or executemany(self, q, p)
    )
    rows = [(1, "a", "x", 1), (2, "b", "y", odd)]
    table.executemany("INSERT INTO bulk (n, s, kind, big) VALUES (?, ?, ?, ?)", rows)
    assert len(sent) == 1
    assert [row[4] for row in rows_of(table)] == [1, stored]
