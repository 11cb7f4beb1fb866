"""Balance leases (serve --workers): the database never promises the same money to two workers."""

from __future__ import annotations

import random
import sqlite3

import pytest

from hubproxy.store.records import CallRecord, Reservation
from hubproxy.store.sql import accounts, transaction
from hubproxy.store.sql.leases import drop_leases, give_back, take_leases, wanted_back
from hubproxy.store.sql.usage import record_calls, settle_leftover_reservations
from hubproxy.store.sqlite.db import connect
from hubproxy.tokens import Usage


@pytest.fixture
def conn(tmp_path) -> sqlite3.Connection:
    conn = connect(tmp_path / "hubproxy.db", create=True)
    accounts.add_user(conn, "a@example.com", 1_000)
    return conn


def unpromised(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT balance - (SELECT coalesce(sum(amount), 0) FROM leases) FROM users").fetchone()[0]


def ask(conn: sqlite3.Connection, holder: str, need: int, want: int) -> int:
    with transaction(conn):
        return take_leases(conn, [(holder, 1, need, want)])[0]


def charge(conn: sqlite3.Connection, holder: str, cost: int, n: int) -> None:
    r = Reservation(f"req{n}", 1, "k", "m", "p", "m", "/chat/completions", False, cost, 1, 0)
    with transaction(conn):
        record_calls(
            conn,
            [CallRecord(reservation=r, usage=Usage(1, 1), cost=cost, estimated=False, status="ok", http_status=200)],
            lease_holder=holder,
        )


def test_grants_never_exceed_the_unpromised_balance_and_leave_some_for_others(conn):
    assert ask(conn, "w1", 100, 5_000) == 500  # half of what is free, at least `need`
    assert ask(conn, "w2", 100, 5_000) == 250
    assert ask(conn, "w1", 300, 300) == 0  # 250 free: refused, not partly granted
    assert unpromised(conn) == 250


def test_random_asks_and_charges_keep_every_promise_covered(conn):
    rng = random.Random(7)
    held = {"w1": 0, "w2": 0, "w3": 0}
    for n in range(300):
        holder = rng.choice(list(held))
        if rng.random() < 0.5:
            need = rng.randint(1, 120)
            held[holder] += ask(conn, holder, need, need * 4)
        elif held[holder] > 0:
            cost = rng.randint(0, held[holder])
            charge(conn, holder, cost, n)
            held[holder] -= cost
        balance = conn.execute("SELECT balance FROM users").fetchone()[0]
        assert sum(held.values()) <= balance and unpromised(conn) == balance - sum(held.values())
    ledger = conn.execute("SELECT sum(amount) FROM ledger").fetchone()[0]
    assert conn.execute("SELECT balance FROM users").fetchone()[0] == ledger


def test_a_refusal_asks_the_other_holders_to_give_back(conn):
    assert ask(conn, "w1", 900, 900) == 900
    assert ask(conn, "w2", 200, 200) == 0
    assert wanted_back(conn, "w1") == [1] and wanted_back(conn, "w2") == []
    with transaction(conn):
        give_back(conn, "w1", {1: 600})
    assert wanted_back(conn, "w1") == []
    assert ask(conn, "w2", 200, 1_000) == 350  # 700 free now: half of it


def test_leases_are_only_promises_dropping_them_moves_no_money(conn):
    ask(conn, "w1", 400, 400)
    charge(conn, "w1", 150, 1)
    with transaction(conn):
        drop_leases(conn, "w1")
    assert unpromised(conn) == 850
    ask(conn, "w2", 10, 10)
    assert settle_leftover_reservations(conn) == 0
    assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
    assert conn.execute("SELECT balance FROM users").fetchone()[0] == 850
