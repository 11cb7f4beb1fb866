"""What the store does when a process or the database went away at the worst moment, on a real SQLite
file and a real PostgreSQL database: a call the reaper billed while its instance was only slow is not
billed again when that instance settles it; a batch written again after its COMMIT was cut off
writes no usage row twice."""

from __future__ import annotations

import pytest

from hubproxy.store.records import CallRecord, Reservation
from hubproxy.store.sql import accounts, transaction
from hubproxy.store.sql.usage import open_reservations, record_calls, settle_leftover_reservations
from hubproxy.tokens import Usage
from tests.conftest import BACKENDS, open_database


@pytest.fixture
def conn(home, cli):
    cli("init")
    db = open_database(home)
    yield db
    db.close()


def reservation(request_id: str, user_id: int, cost: int = 500) -> Reservation:
    return Reservation(request_id, user_id, "k", "m", "p", "m", "/chat/completions", False, cost, 10, 5)


def settled(r: Reservation, cost: int, persisted: bool) -> CallRecord:
    return CallRecord(
        reservation=r,
        usage=Usage(10, 20),
        cost=cost,
        estimated=False,
        status="ok",
        http_status=200,
        persisted=persisted,
    )


def money(conn, user_id: int) -> tuple[int, int, int]:
    """(balance, sum of the ledger, usage rows) of one user."""
    balance, ledger = conn.execute(
        "SELECT balance, (SELECT sum(amount) FROM ledger WHERE user_id = users.id) FROM users WHERE id = ?", (user_id,)
    ).fetchone()
    rows = conn.execute("SELECT count(*) FROM usage WHERE user_id = ?", (user_id,)).fetchone()[0]
    return balance, ledger, rows


@BACKENDS
def test_a_call_the_reaper_billed_is_not_billed_again_when_its_slow_instance_settles_it(conn, backend):
    """The reaper settles a silent instance's reservation rows at their prompt estimate; if that
    instance was only slow, its own settlement of the same call later finds the row gone and writes
    nothing: one usage row, one charge."""
    user = accounts.add_user(conn, "slow@example.com", 10_000)
    r = reservation("req_slow", user.id)
    with transaction(conn):
        open_reservations(conn, [r])
    with transaction(conn):  # what the reaper does for a dead instance's calls
        assert settle_leftover_reservations(conn) == 1
    after_reaper = money(conn, user.id)
    assert after_reaper == (10_000 - 5, 10_000 - 5, 1), "billed once, at the prompt estimate"
    with transaction(conn):  # the instance was only slow: its settlement arrives
        record_calls(conn, [settled(r, 300, persisted=True)])
    assert money(conn, user.id) == after_reaper, "not billed a second time"


@BACKENDS
def test_a_batch_written_again_after_a_cut_off_commit_writes_no_usage_row_twice(conn, backend):
    """PostgreSQL's writer writes a batch again when the connection broke during its COMMIT, which may
    have committed; the connection says it is replaying, and rows already there are skipped."""
    user = accounts.add_user(conn, "cut@example.com", 10_000)
    first, second = reservation("req_a", user.id), reservation("req_b", user.id)
    with transaction(conn):
        record_calls(conn, [settled(first, 300, persisted=False)])  # the COMMIT that went through
    conn.replaying = True
    try:
        with transaction(conn):
            record_calls(conn, [settled(first, 300, persisted=False), settled(second, 200, persisted=False)])
    finally:
        conn.replaying = False
    assert money(conn, user.id) == (10_000 - 500, 10_000 - 500, 2)


@BACKENDS
def test_the_daily_totals_count_every_token_class(conn, backend):
    """`usage report` reads the daily totals: each class a call reported is added to its column there,
    whether or not the call reported other classes beside prompt and completion."""
    user = accounts.add_user(conn, "classes@example.com", 10_000)
    usages = [Usage(10, 20), Usage(10, 20, reasoning=7), Usage(30, 5, cached=4, cache_write=6, cache_write_1h=2)]
    with transaction(conn):
        record_calls(
            conn,
            [
                CallRecord(
                    reservation=reservation(f"req_{n}", user.id),
                    usage=usage,
                    cost=1,
                    estimated=False,
                    status="ok",
                    http_status=200,
                )
                for n, usage in enumerate(usages)
            ],
        )
    columns = (
        "prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens"
    )
    totals = conn.execute(f"SELECT {columns} FROM usage_daily WHERE user_id = ?", (user.id,)).fetchone()
    assert tuple(totals) == (50, 45, 4, 6, 2, 7)
