"""The usage log's paging on a seeded database (`store/sql/dashboard.py` on a real SQLite file): pages
follow each other without gaps or repeats, and a filtered search reads a bounded number of calls per
page, saying where it stopped, so a filter that matches nothing cannot read the whole table."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from bench.history import seed_history
from hubproxy.store import open_store
from hubproxy.store.records import UsageFilter
from hubproxy.store.sql import accounts, dashboard


@pytest.fixture
def seeded(tmp_path):
    store = open_store(tmp_path / "hubproxy.db", create=True)
    for email in ("a@example.com", "b@example.com"):
        store.run(accounts.add_user, email)
        store.run(accounts.create_key, email, "one")
        store.run(accounts.create_key, email, "two")
    store.close()
    seed_history(tmp_path / "hubproxy.db", 6000, days=10)
    conn = sqlite3.connect(tmp_path / "hubproxy.db")
    yield conn
    conn.close()


def every_page(conn, where: UsageFilter, limit: int = 50) -> tuple[list[dict], int]:
    """Follow the pages as the dashboard's "Older" link does; returns the rows and the page count."""
    rows, pages = [], 0
    while True:
        page = dashboard.usage_page(conn, where, limit)
        pages += 1
        rows += page.rows
        if len(page.rows) == limit:
            where = replace(where, before=(page.rows[-1]["created_at"], page.rows[-1]["id"]))
        elif page.searched_to is not None:
            where = replace(where, before=(page.searched_to, 0))
        else:
            return rows, pages


@pytest.mark.parametrize(
    "where",
    [
        UsageFilter(),
        UsageFilter(user_id=1),
        UsageFilter(model="qwen-max", status="ok"),
        UsageFilter(user_id=2, status="error"),
        UsageFilter(user_id=1, model="no-such-model"),
    ],
)
def test_pages_cover_every_matching_call_once(seeded, monkeypatch, where):
    monkeypatch.setattr(dashboard, "SCAN_BUDGET", 700)
    rows, pages = every_page(seeded, where)
    clauses = ["1 = 1"]
    params: list = []
    for column in ("user_id", "model"):
        if getattr(where, column) is not None:
            clauses.append(f"{column} = ?")
            params.append(getattr(where, column))
    if where.status == "error":
        clauses.append("status <> 'ok'")
    elif where.status:
        clauses.append("status = ?")
        params.append(where.status)
    expected = [r[0] for r in seeded.execute(f"SELECT id FROM usage WHERE {' AND '.join(clauses)}", params)]
    assert sorted(r["id"] for r in rows) == sorted(expected)  # none missing, none twice
    assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows), reverse=True)
    if where.model or where.status:
        assert pages >= 2  # the budget stopped the search at least once


def test_a_filter_matching_nothing_reads_at_most_the_budget_per_page(seeded, monkeypatch):
    monkeypatch.setattr(dashboard, "SCAN_BUDGET", 700)
    page = dashboard.usage_page(seeded, UsageFilter(model="no-such-model"), 50)
    assert page.rows == [] and page.searched_to is not None
    hour = page.searched_to
    looked_at = seeded.execute("SELECT count(*) FROM usage WHERE created_at >= ?", (hour,)).fetchone()[0]
    per_hour = seeded.execute("SELECT max(requests) FROM usage_hourly").fetchone()[0]
    assert 700 <= looked_at <= 700 + 2 * per_hour


def test_another_users_key_shows_nothing(seeded):
    theirs = seeded.execute("SELECT id FROM api_keys WHERE user_id = 2").fetchone()[0]
    assert dashboard.usage_page(seeded, UsageFilter(user_id=1, key_id=theirs), 50).rows == []
    assert dashboard.usage_page(seeded, UsageFilter(user_id=2, key_id=theirs), 50).rows
