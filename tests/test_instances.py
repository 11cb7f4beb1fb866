"""Several `hubproxy serve` instances on one PostgreSQL database and one Redis, as a team runs them on
several hosts behind a load balancer: each instance has its own home (journal, admin token) and a
copy of the same config.toml. Calls are spread over the instances round-robin.

What is pinned: no overspend by 50 parallel calls against a balance that covers a few, with the
ledger equal to the balance after; a revoke and a top-up made through the CLI seen by every
instance within a second; rpm held across instances through Redis; a killed instance's open calls
billed once by a survivor (its heartbeat stops, it is reaped); and, with the database cut off,
calls in flight finish, new ones get a 503 at once, and the kept charges are written, once, when it
comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import signal
import threading
import time
import urllib.parse

import openai
import pytest

from hubproxy.store.postgres.instances import BEAT, DEAD_AFTER
from tests.conftest import HELLO, Gateway, configure, free_port, wait_for
from tests.fake_upstream import REPLY
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)
INSTANCES = 3


@pytest.fixture
def instances(home, cli, upstream, redis_url, tmp_path):
    """Three instances on this test's database, with Redis for the limits; dev@example.com's key."""
    configure(cli, upstream)
    key = new_user(cli, "dev@example.com", "5")
    started = start_instances(home, cli, upstream, tmp_path, key, "--redis", redis_url)
    yield started
    stop_instances(started)


def start_instances(home, cli, upstream, tmp_path, key: str, *serve_args: str) -> list[Gateway]:
    """INSTANCES servers, each in its own home with a copy of `home`'s config.toml (as on hosts)."""
    started = []
    for n in range(INSTANCES):
        where = tmp_path / f"instance-{n}"
        where.mkdir()
        shutil.copy(home / "config.toml", where / "config.toml")
        gateway = Gateway(where, cli, upstream, free_port())
        gateway.key = key
        started.append(gateway.start(*serve_args))
    return started


def stop_instances(started: list[Gateway]) -> None:
    for gateway in started:
        if gateway.proc and gateway.proc.poll() is None:
            gateway.stop()


def new_user(cli, email: str, balance: str, *rules: str) -> str:
    cli("users", "add", email, "--balance", balance)
    return cli.json("keys", "create", "--user", email, "--name", "test", *rules)["key"]


def works_everywhere(instances: list[Gateway], key: str) -> bool:
    return all(gateway.key_works(key) for gateway in instances)


async def spread(instances: list[Gateway], key: str, n: int, **params) -> list:
    """`n` chat calls at once, dealt round-robin over the instances."""
    clients = [gateway.async_client(key=key) for gateway in instances]
    try:
        calls = [
            client.chat.completions.create(model="deepseek-chat", messages=HELLO, **params)
            for client, _ in zip(itertools.cycle(clients), range(n), strict=False)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()


def money(gateway: Gateway, email: str) -> tuple[int, int]:
    with gateway.db() as db:
        return db.execute(
            "SELECT balance, (SELECT coalesce(sum(amount), 0) FROM ledger WHERE user_id = users.id) FROM users "
            "WHERE email = ?",
            (email,),
        ).fetchone()


def test_fifty_parallel_calls_over_three_instances_cannot_overspend(instances, cli, upstream):
    key = new_user(cli, "tiny@example.com", "0.01")
    wait_for(lambda: works_everywhere(instances, key))
    upstream.delay = 0.5
    results = asyncio.run(spread(instances, key, 50))
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(ok) + len(refused) == 50 and ok and refused
    assert {r.status_code for r in refused} == {402}
    balance, ledger = money(instances[0], "tiny@example.com")
    assert balance >= 0 and balance == ledger  # leases: no instance promises money another holds
    with instances[0].db() as db:
        assert db.execute("SELECT count(*) FROM usage").fetchone()[0] == len(ok)


def test_a_revoke_and_a_topup_reach_every_instance_within_a_second(instances, cli):
    key = new_user(cli, "team@example.com", "1")
    wait_for(lambda: works_everywhere(instances, key))
    key_id = cli.json("keys", "list", "--user", "team@example.com")[0]["id"]
    cli("keys", "revoke", key_id)
    revoked_at = time.monotonic()
    wait_for(lambda: not any(gateway.key_works(key) for gateway in instances), timeout=5)
    assert time.monotonic() - revoked_at < 1.5  # the change feed polls every 0.25 s; the check itself takes time

    broke = new_user(cli, "broke@example.com", "0")
    wait_for(lambda: works_everywhere(instances, broke))
    for gateway in instances:
        with pytest.raises(openai.APIStatusError) as refused:
            gateway.client(key=broke).chat.completions.create(model="deepseek-chat", messages=HELLO)
        assert refused.value.status_code == 402
    cli("users", "topup", "broke@example.com", "1")
    topped_at = time.monotonic()

    def paid_everywhere() -> bool:
        try:
            for gateway in instances:
                gateway.client(key=broke).chat.completions.create(model="deepseek-chat", messages=HELLO)
        except openai.APIStatusError:
            return False
        return True

    wait_for(paid_everywhere, timeout=5)
    assert time.monotonic() - topped_at < 1.5


def test_rate_limits_hold_across_instances_through_redis(instances, cli):
    key = new_user(cli, "limited@example.com", "5", "--rpm", "5")
    wait_for(lambda: works_everywhere(instances, key))  # /models: not a call, not counted
    results = asyncio.run(spread(instances, key, 12))
    ok = [r for r in results if not isinstance(r, Exception)]
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(ok), len(limited)) == (5, 7)
    assert all(0 < float(r.response.headers["retry-after"]) <= 60 for r in limited)


def test_calls_that_end_together_free_their_places_across_instances(instances, cli, upstream):
    """Finishes are sent to Redis in one script call per key and turn of the loop: every place a call
    held is given back, or the key's later calls would be refused for max_parallel."""
    key = new_user(cli, "parallel@example.com", "5", "--max-parallel", "4")
    wait_for(lambda: works_everywhere(instances, key))
    for _ in range(6):  # four at once end together, six times over: 24 calls, each admitted
        results = asyncio.run(spread(instances, key, 4))
        assert not [r for r in results if isinstance(r, Exception)], results
    upstream.delay = 0.5  # eight at once, each held long enough that four are refused
    results = asyncio.run(spread(instances, key, 8))
    assert len([r for r in results if isinstance(r, openai.RateLimitError)]) == 4


def test_a_tokens_per_minute_limit_counts_the_tokens_used_across_instances(instances, cli, upstream):
    """A call is admitted on its worst case and counted at its real tokens once it ends: one call at a
    time fits many times over, two at once do not."""
    key = new_user(cli, "tokens@example.com", "5", "--tpm", "1500")
    wait_for(lambda: works_everywhere(instances, key))
    for _ in range(4):  # ~1,120 tokens held each, ~20 counted once it ends
        results = asyncio.run(spread(instances, key, 1, max_tokens=1000))
        assert not [r for r in results if isinstance(r, Exception)], results
    upstream.delay = 0.5
    results = asyncio.run(spread(instances, key, 2, max_tokens=1000))
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(refused) == 1 and "tokens per minute" in str(refused[0])


def test_a_killed_instance_is_reaped_and_its_open_calls_billed_once_by_a_survivor(instances, upstream):
    upstream.stream_delay = 0.5
    victim, survivor = instances[0], instances[1]

    def stream() -> None:
        with contextlib.suppress(openai.APIError):
            list(victim.client().chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True))

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()

    def count(sql: str) -> int:
        with survivor.db() as db:
            return db.execute(sql).fetchone()[0]

    wait_for(lambda: count("SELECT count(*) FROM reservations") == 6)
    leased = count("SELECT count(*) FROM leases WHERE amount > 0")
    victim.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    for thread in threads:
        thread.join(10)
    wait_for(lambda: count("SELECT count(*) FROM reservations") == 0, timeout=DEAD_AFTER * 2 + 5)
    assert time.monotonic() - killed_at <= DEAD_AFTER * 2 + BEAT * 2
    assert count("SELECT count(*) FROM usage WHERE status = 'interrupted'") == 6
    assert count("SELECT count(DISTINCT request_id) FROM usage") == count("SELECT count(*) FROM usage")
    balance, ledger = money(survivor, "dev@example.com")
    assert balance == ledger and leased >= 1
    assert count("SELECT count(*) FROM instances") == INSTANCES - 1
    assert "stopped beating: settled 6 call(s)" in survivor.log() + instances[2].log()
    survivor.client().chat.completions.create(model="deepseek-chat", messages=HELLO)  # the rest still serve


def test_while_the_database_is_away_calls_in_flight_finish_new_ones_get_503_and_nothing_is_lost(
    home, cli, upstream, postgres_url, monkeypatch, tmp_path
):
    """Three instances reach PostgreSQL through a TCP proxy the test cuts and restores."""
    target = urllib.parse.urlsplit(postgres_url)
    proxy = TcpProxy(target.hostname, target.port or 5432).start()
    configure(cli, upstream)
    key = new_user(cli, "dev@example.com", "5")
    through_proxy = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
    monkeypatch.setenv("HUBPROXY_DATABASE_URL", through_proxy)
    gateways = start_instances(home, cli, upstream, tmp_path, key)
    monkeypatch.setenv("HUBPROXY_DATABASE_URL", postgres_url)  # the test's own reads go straight to the server
    try:
        wait_for(lambda: works_everywhere(gateways, key))
        upstream.stream_delay = 0.3
        answers: list[str] = []

        def stream(gateway: Gateway) -> None:
            chunks = gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True)
            answers.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))

        threads = [threading.Thread(target=stream, args=(g,), daemon=True) for g in gateways]
        for thread in threads:
            thread.start()
        wait_for(lambda: upstream.open_streams == INSTANCES)
        proxy.cut()
        for thread in threads:
            thread.join(30)
        assert len(answers) == INSTANCES and all(a.split() == REPLY.split() for a in answers)  # in flight: finished

        def refused_with_503(gateway: Gateway) -> bool:
            try:
                gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
            except openai.APIStatusError as exc:
                return exc.status_code == 503
            return False

        started = time.monotonic()
        wait_for(lambda: all(refused_with_503(g) for g in gateways), timeout=15)
        assert time.monotonic() - started < 15  # a clear answer, not a hang
        proxy.restore()

        def usage_rows() -> int:
            with gateways[0].db() as db:
                return db.execute("SELECT count(*) FROM usage").fetchone()[0]

        wait_for(lambda: usage_rows() >= INSTANCES, timeout=30)  # the kept settlements, written once it is back
        wait_for(lambda: not any(refused_with_503(g) for g in gateways), timeout=15)
        with gateways[0].db() as db:
            rows, distinct = db.execute("SELECT count(*), count(DISTINCT request_id) FROM usage").fetchone()
        assert rows == distinct
        balance, ledger = money(gateways[0], "dev@example.com")
        assert balance == ledger
        for gateway in gateways:
            log = gateway.log()
            assert "Traceback" not in log, log[log.find("Traceback") - 300 :][:2500]
    finally:
        stop_instances(gateways)
        proxy.cut()
