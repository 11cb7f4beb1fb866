"""Billing invariants: exact sums, ledger == balance, no overspend, changes seen without restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from decimal import Decimal

import openai
import pytest

from hubproxy.money import format_usd
from tests.conftest import BACKENDS, HELLO, balance_and_ledger, run_cli, wait_for

pytestmark = BACKENDS  # every money invariant here holds on SQLite and on PostgreSQL alike

FIVE_USD = 5 * 10**12


def ledger_state(gateway) -> tuple[int, int, int]:
    """(balance, sum of ledger, sum of usage costs) for dev@example.com, straight from SQLite."""
    with gateway.db() as db:
        uid, balance = db.execute("SELECT id, balance FROM users WHERE email = 'dev@example.com'").fetchone()
        ledger = db.execute("SELECT sum(amount) FROM ledger WHERE user_id = ?", (uid,)).fetchone()[0]
        costs = db.execute("SELECT coalesce(sum(cost), 0) FROM usage WHERE user_id = ?", (uid,)).fetchone()[0]
    return balance, ledger, costs


def test_usage_costs_equal_balance_change_to_the_unit(gateway):
    client = gateway.client()
    for i in range(5):
        client.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "w " * i}])
        list(client.chat.completions.create(model="ds", messages=HELLO, stream=True))
        list(
            client.chat.completions.create(
                model="deepseek-chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        client.embeddings.create(model="text-embedding", input="a b c")
    balance, ledger, costs = ledger_state(gateway)
    assert balance == ledger, "users.balance must equal sum(ledger)"
    assert FIVE_USD - balance == costs, "the sum of usage costs must equal the balance change"
    with gateway.db() as db:
        rows = db.execute("SELECT model, prompt_tokens, completion_tokens, cost, estimated FROM usage").fetchall()
    assert len(rows) == 20
    prices = {"deepseek-chat": (270_000, 1_100_000), "ds": (270_000, 1_100_000), "text-embedding": (20_000, 0)}
    for model, prompt, completion, cost, estimated in rows:
        assert estimated == 0
        assert cost == prompt * prices[model][0] + completion * prices[model][1]
    shown = run_cli(gateway.home, "balance", "dev@example.com", "--json")
    assert f'"balance_pico_usd": {balance}' in shown.stdout


def test_each_answer_is_billed_before_the_client_sees_it(gateway):
    client = gateway.client()
    for _ in range(3):
        client.chat.completions.create(model="deepseek-chat", messages=HELLO)
        with gateway.db() as db:
            open_reservations = db.execute("SELECT count(*) FROM reservations").fetchone()[0]
            billed = db.execute("SELECT count(*) FROM usage").fetchone()[0]
        assert open_reservations == 0
    assert billed == 3


def test_fifty_parallel_calls_cannot_overspend_a_tiny_balance(gateway):
    key = gateway.new_user("tiny@example.com", "0.01")
    wait_for(lambda: gateway.key_works(key))
    gateway.upstream.delay = 0.5
    results = asyncio.run(gateway.fire(key, 50))
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(ok) + len(refused) == 50
    assert ok and refused
    assert all(r.status_code == 402 and r.code == "insufficient_quota" for r in refused)
    assert all(r.response.headers["x-should-retry"] == "false" for r in refused)
    with gateway.db() as db:
        balance, ledger = db.execute(
            "SELECT balance, (SELECT sum(amount) FROM ledger WHERE user_id = users.id) FROM users "
            "WHERE email = 'tiny@example.com'"
        ).fetchone()
    assert balance >= 0 and balance == ledger


SHORT_WORDS = [{"role": "user", "content": " ".join("7" if n % 2 else "a" for n in range(1000))}]
"""1,000 words of one character: two bytes a token, where a bytes/3 estimate would count two thirds of them."""


def test_fifty_parallel_calls_of_short_words_never_take_the_balance_below_zero(gateway):
    key = gateway.new_user("words@example.com", "0.005")
    wait_for(lambda: gateway.key_works(key))
    gateway.upstream.delay = 0.5
    results = asyncio.run(gateway.fire(key, 50, max_tokens=8, messages=SHORT_WORDS))
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert ok and refused and len(ok) + len(refused) == 50
    assert all(r.usage.prompt_tokens == 1000 for r in ok)
    balance, ledger = balance_and_ledger(gateway, "words@example.com")
    assert 0 <= balance == ledger


def test_fifty_parallel_calls_never_take_a_key_past_its_spend_cap(gateway):
    gateway.cli("users", "add", "capped@example.com", "--balance", "5")
    key = gateway.cli.json(
        "keys", "create", "--user", "capped@example.com", "--name", "capped", "--spend-limit", "0.005"
    )["key"]
    wait_for(lambda: gateway.key_works(key))
    gateway.upstream.delay = 0.5
    results = asyncio.run(gateway.fire(key, 50, max_tokens=8, messages=SHORT_WORDS))
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert refused and all(r.status_code == 402 and "spend limit" in r.message for r in refused)
    with gateway.db() as db:
        spent = db.execute(
            "SELECT sum(cost) FROM usage u JOIN users s ON s.id = u.user_id WHERE s.email = 'capped@example.com'"
        ).fetchone()[0]
    assert 0 < spent <= 5 * 10**9  # $0.005 in pico-USD


def test_an_upstream_that_ignores_max_tokens_is_billed_what_it_reports_within_the_stated_bound(gateway):
    key = gateway.new_user("over@example.com", "0.005")
    wait_for(lambda: gateway.key_works(key))
    gateway.upstream.delay = 0.3
    results = asyncio.run(gateway.fire(key, 50, model="long-answer", max_tokens=8))
    ok = [r for r in results if not isinstance(r, Exception)]
    assert ok and all(r.usage.completion_tokens == 2000 for r in ok)
    with gateway.db() as db:
        rows = db.execute(
            "SELECT cost, over_reservation, completion_tokens FROM usage u JOIN users s ON s.id = u.user_id "
            "WHERE s.email = 'over@example.com' AND u.status = 'ok'"
        ).fetchall()
    assert len(rows) == len(ok) and all(over > 0 and over < cost for cost, over, _ in rows)
    balance, ledger = balance_and_ledger(gateway, "over@example.com")
    assert balance == ledger
    assert balance >= -sum(over for _, over, _ in rows)  # the bound ARCHITECTURE.md states


def test_insufficient_balance_is_402_and_the_sdk_does_not_retry(gateway):
    key = gateway.new_user("broke@example.com", "0")
    wait_for(lambda: gateway.key_works(key))
    before = len(gateway.upstream.requests)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=3)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert err.value.status_code == 402 and err.value.code == "insufficient_quota"
    assert time.monotonic() - started < 0.5, "no retries with backoff"
    assert len(gateway.upstream.requests) == before


def test_revoked_key_is_refused_and_new_key_works_within_a_second_without_restart(gateway):
    client = gateway.client()
    client.chat.completions.create(model="deepseek-chat", messages=HELLO)
    revoke = run_cli(gateway.home, "keys", "revoke", gateway.key_id)
    assert revoke.returncode == 0, revoke.stderr
    revoked_at = time.monotonic()
    wait_for(lambda: not gateway.key_works(gateway.key), timeout=1.0, interval=0.02)
    assert time.monotonic() - revoked_at <= 1.0
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert "revoked" in err.value.message
    created = run_cli(gateway.home, "keys", "create", "--user", "dev@example.com", "--json")
    new_key = json.loads(created.stdout)["key"]
    made_at = time.monotonic()
    wait_for(lambda: gateway.key_works(new_key), timeout=1.0, interval=0.02)
    assert time.monotonic() - made_at <= 1.0
    gateway.client(key=new_key).chat.completions.create(model="deepseek-chat", messages=HELLO)


def test_topup_and_disable_take_effect_while_serving(gateway):
    key = gateway.new_user("late@example.com", "0")
    wait_for(lambda: gateway.key_works(key))
    with pytest.raises(openai.APIStatusError):
        gateway.client(key=key).chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert run_cli(gateway.home, "users", "topup", "late@example.com", "1").returncode == 0

    def succeeds() -> bool:
        try:
            gateway.client(key=key).chat.completions.create(model="deepseek-chat", messages=HELLO)
            return True
        except openai.APIStatusError:
            return False

    wait_for(succeeds, timeout=1.0, interval=0.02)
    assert run_cli(gateway.home, "users", "disable", "late@example.com").returncode == 0
    wait_for(lambda: not gateway.key_works(key), timeout=1.0, interval=0.02)


def test_cli_during_load_neither_fails_nor_stalls_the_server(gateway):
    topups = [
        subprocess.Popen(
            [sys.executable, "-m", "hubproxy", "--home", str(gateway.home), "users", "topup", "dev@example.com", "0.5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    results = asyncio.run(gateway.fire(gateway.key, 300, max_tokens=None))
    assert [r for r in results if isinstance(r, Exception)] == []
    assert all(p.wait(60) == 0 for p in topups)
    balance, ledger, costs = ledger_state(gateway)
    assert balance == ledger
    assert FIVE_USD + 4 * 500_000_000_000 - balance == costs


def test_usage_report_agrees_with_the_raw_usage_rows(gateway):
    client = gateway.client()
    other = gateway.new_user("second@example.com", "1")
    wait_for(lambda: gateway.key_works(other))
    for _ in range(3):
        client.chat.completions.create(model="deepseek-chat", messages=HELLO)
        client.chat.completions.create(model="ds", messages=HELLO)
        gateway.client(key=other).embeddings.create(model="text-embedding", input="a b")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fail-500", messages=HELLO)
    with gateway.db() as db:
        raw = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT model, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost) "
                "FROM usage GROUP BY model"
            )
        }
    report = gateway.cli.json("usage", "report", "--by", "model")
    assert {r["group"]: (r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in report} == {
        m: v[:3] for m, v in raw.items()
    }
    assert {r["group"]: Decimal(r["cost_usd"]) for r in report} == {
        m: Decimal(format_usd(v[3])) for m, v in raw.items()
    }
    by_user = {r["group"]: r["requests"] for r in gateway.cli.json("usage", "report", "--by", "user")}
    assert by_user == {"dev@example.com": 7, "second@example.com": 3}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert [r["group"] for r in gateway.cli.json("usage", "report", "--by", "day")] == [today]
    assert gateway.cli.json("usage", "report", "--since", "2999-01-01") == []
    bad = gateway.cli("usage", "report", "--since", "yesterday", ok=False)
    assert bad.exit_code == 1 and "--since must be a date" in bad.output
