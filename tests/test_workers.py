"""`hubproxy serve --workers N`: several processes on one port and one database keep every invariant."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import openai
import pytest

from hubproxy.config import Paths
from hubproxy.money import format_usd
from hubproxy.server.run import supervise
from tests.conftest import HELLO, run_cli, wait_for


@pytest.fixture
def workers(gateway):
    gateway.stop()
    gateway.log_path.write_text("")
    gateway.start("--workers", "2")
    wait_for(lambda: gateway.log().count("ready on") == 2, timeout=20)
    return gateway


def test_workers_cannot_overspend_a_tiny_balance_together(workers):
    key = workers.new_user("tiny@example.com", "0.01")
    wait_for(lambda: all(workers.key_works(key) for _ in range(6)))
    workers.upstream.delay = 0.5
    results = asyncio.run(workers.fire(key, 50))
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 402]
    assert ok and len(ok) + len(refused) == 50
    with workers.db() as db:
        balance, ledger, rows = db.execute(
            "SELECT balance, (SELECT sum(amount) FROM ledger WHERE user_id = users.id), "
            "(SELECT count(*) FROM usage WHERE user_id = users.id) FROM users WHERE email = 'tiny@example.com'"
        ).fetchone()
    assert balance >= 0 and balance == ledger and rows == len(ok)


def test_workers_lose_no_usage_rows_and_bill_exactly(workers):
    results = asyncio.run(workers.fire(workers.key, 200))
    assert [r for r in results if isinstance(r, Exception)] == []
    with workers.db() as db:
        leased = db.execute("SELECT coalesce(sum(amount), 0) FROM leases").fetchone()[0]
    assert leased > 0  # the workers reserve against leases of the balance while they serve
    assert workers.stop() == 0
    with workers.db() as db:
        balance, ledger = db.execute("SELECT balance, (SELECT sum(amount) FROM ledger) FROM users").fetchone()
        rows, costs = db.execute("SELECT count(*), sum(cost) FROM usage").fetchone()
        open_reservations = db.execute("SELECT count(*) FROM reservations").fetchone()[0]
        leases = db.execute("SELECT count(*) FROM leases").fetchone()[0]
    assert rows == 200 and open_reservations == 0 and leases == 0
    assert balance == ledger == 5 * 10**12 - costs


def test_money_one_worker_holds_idle_reaches_the_other(workers):
    """The balance covers one reservation and a half: whichever worker leases it first holds nearly
    all of it, and a call reaching the other worker must still be served (after a recall), not refused."""
    key = workers.new_user("half@example.com", "0.0017")  # a call reserves ~$0.00113 (max_tokens 1000)
    wait_for(lambda: all(workers.key_works(key) for _ in range(6)))
    for _ in range(12):  # a new connection each time: the kernel spreads them over both workers
        client = workers.client(key=key)
        client.chat.completions.create(model="deepseek-chat", messages=HELLO, max_tokens=1000)
        client.close()
    with workers.db() as db:
        rows = db.execute(
            "SELECT count(*) FROM usage u JOIN users s ON s.id = u.user_id "
            "WHERE s.email = 'half@example.com' AND u.status = 'ok'"
        ).fetchone()[0]
    assert rows == 12


def test_revocation_reaches_every_worker(workers):
    revoke = run_cli(workers.home, "keys", "revoke", workers.key_id)
    assert revoke.returncode == 0
    wait_for(lambda: not any(workers.key_works(workers.key) for _ in range(10)), timeout=1.5, interval=0.05)


def test_sigterm_to_the_parent_drains_every_worker(workers):
    workers.upstream.stream_delay = 0.2
    stream = workers.client().chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True)
    chunks = iter(stream)
    next(chunks)
    workers.proc.send_signal(signal.SIGTERM)
    rest = list(chunks)
    assert rest and workers.proc.wait(30) == 0
    with workers.db() as db:
        assert db.execute("SELECT status FROM usage").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM reservations").fetchone()[0] == 0


def test_a_balance_lowered_from_the_cli_takes_back_what_workers_hold(workers):
    key = workers.new_user("cut@example.com", "1")
    wait_for(lambda: all(workers.key_works(key) for _ in range(6)))
    assert not [r for r in asyncio.run(workers.fire(key, 20)) if isinstance(r, Exception)]
    with workers.db() as db:
        assert db.execute("SELECT sum(amount) FROM leases").fetchone()[0] > 10**9  # leases hold money
    with workers.db() as db:
        balance = db.execute("SELECT balance FROM users WHERE email = 'cut@example.com'").fetchone()[0]
    workers.cli("users", "topup", "--adjust", "--", "cut@example.com", f"-{format_usd(balance)}")  # to $0

    time.sleep(0.5)  # workers see changes made by other processes within ~0.1 s
    results = asyncio.run(workers.fire(key, 6))
    assert all(isinstance(r, openai.APIStatusError) and r.status_code == 402 for r in results)
    with workers.db() as db:
        balance, leased = db.execute(
            "SELECT balance, (SELECT coalesce(sum(amount), 0) FROM leases WHERE user_id = users.id) "
            "FROM users WHERE email = 'cut@example.com'"
        ).fetchone()
    assert balance == 0 and leased == 0


def limited_key(workers, *limits: str) -> str:
    workers.cli("users", "add", "limited@example.com", "--balance", "5")
    key = workers.cli.json("keys", "create", "--user", "limited@example.com", "--name", "l", *limits)["key"]
    wait_for(lambda: all(workers.key_works(key) for _ in range(6)))
    return key


def test_rpm_holds_across_workers(workers):
    key = limited_key(workers, "--rpm", "4")
    outcomes = []
    for _ in range(10):  # a new connection each time: the kernel spreads them over both workers
        client = workers.client(key=key)
        try:
            client.chat.completions.create(model="deepseek-chat", messages=HELLO)
            outcomes.append("ok")
        except openai.RateLimitError as err:
            assert 1 <= int(err.response.headers["retry-after"]) <= 60
            outcomes.append("429")
        finally:
            client.close()
    assert outcomes == ["ok"] * 4 + ["429"] * 6


def test_max_parallel_holds_across_workers(workers):
    key = limited_key(workers, "--max-parallel", "2")
    workers.upstream.delay = 0.5
    results = asyncio.run(workers.fire(key, 8))
    assert sum(not isinstance(r, Exception) for r in results) == 2
    assert all(r.code == "rate_limited" for r in results if isinstance(r, Exception))
    workers.upstream.delay = 0
    workers.client(key=key).chat.completions.create(model="deepseek-chat", messages=HELLO)  # slots freed


def test_a_key_spend_cap_holds_across_workers(workers):
    """A call reserves ~$0.00113 (max_tokens 1000): a $0.0028 cap fits two calls in flight, not three,
    whichever workers they reach."""
    workers.cli("users", "add", "capped@example.com", "--balance", "5")
    created = workers.cli.json(
        "keys", "create", "--user", "capped@example.com", "--name", "c", "--spend-limit", "0.0028"
    )
    wait_for(lambda: all(workers.key_works(created["key"]) for _ in range(6)))
    workers.upstream.delay = 0.5
    results = asyncio.run(workers.fire(created["key"], 8))
    assert sum(not isinstance(r, Exception) for r in results) == 2
    assert all(
        isinstance(r, openai.APIStatusError) and r.status_code == 402 for r in results if isinstance(r, Exception)
    )
    workers.upstream.delay = 0
    with workers.db() as db:
        assert db.execute("SELECT count(*) FROM key_holds").fetchone()[0] == 0, "holds go with the usage rows"


def worker_pids(workers) -> set[int]:
    """The parent's worker processes (not multiprocessing's resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(workers.proc.pid)], capture_output=True, text=True).stdout
    pids = set()
    for pid in found.split():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"resource_tracker" not in command:
            pids.add(int(pid))
    return pids


def test_a_killed_worker_is_replaced_and_what_it_held_is_settled(workers):
    key = workers.new_user("held@example.com", "1")
    wait_for(lambda: all(workers.key_works(key) for _ in range(6)))
    before = worker_pids(workers)
    assert len(before) == 2
    workers.upstream.delay = 2.0

    async def fire_and_kill() -> list:
        calls = asyncio.ensure_future(workers.fire(key, 8))
        await asyncio.sleep(0.8)  # every call is open upstream, its reservation on disk
        os.kill(min(before), signal.SIGKILL)
        return await calls

    results = asyncio.run(fire_and_kill())
    broken = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, openai.APIConnectionError) for r in broken)
    wait_for(lambda: len(worker_pids(workers)) == 2 and min(before) not in worker_pids(workers), timeout=10)
    assert f"worker {min(before)} died" in workers.log()
    wait_for(lambda: workers.db().execute("SELECT count(*) FROM reservations").fetchone()[0] == 0, timeout=5)
    with workers.db() as db:
        dead_leases = db.execute("SELECT count(*) FROM leases WHERE holder = ?", (f"pid:{min(before)}",)).fetchone()
        balance, ledger = db.execute(
            "SELECT balance, (SELECT sum(amount) FROM ledger WHERE user_id = users.id) FROM users "
            "WHERE email = 'held@example.com'"
        ).fetchone()
        statuses = [
            s
            for (s,) in db.execute(
                "SELECT u.status FROM usage u JOIN users s ON s.id = u.user_id "
                "WHERE s.email = 'held@example.com' AND u.model = 'deepseek-chat'"
            )
        ]
    assert dead_leases == (0,) and balance == ledger
    assert statuses.count("interrupted") == len(broken) and len(statuses) == 8, statuses
    workers.upstream.delay = 0
    wait_for(lambda: workers.log().count("ready on") == 3, timeout=20)
    assert not [r for r in asyncio.run(workers.fire(key, 10)) if isinstance(r, Exception)], "served again"


def exit_at_once() -> None:
    raise SystemExit(3)


def test_workers_that_keep_dying_stop_the_server_instead_of_looping(cli, home):
    cli("init")
    context = multiprocessing.get_context("spawn")

    def start_worker():
        child = context.Process(target=exit_at_once)
        child.start()
        return child

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit, match="died 3 times"):
            supervise(Paths.resolve(home), start_worker, 2)
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
