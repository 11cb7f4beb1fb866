"""Per-key rules enforced through the HTTP API, seen through the official SDK."""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from datetime import date

import openai
import pytest
import tomli_w

from hubproxy import errors
from hubproxy.accounts.rules import KeyPolicy, Limits, ip_allowed, parse_networks
from hubproxy.periods import period_start
from hubproxy.ratelimit.windows import RateLimiter, refused
from hubproxy.server.addresses import client_address
from hubproxy.store.records import CallRecord, Reservation
from hubproxy.store.sql import accounts, transaction
from hubproxy.store.sql.limits import admit_calls, finish_calls, hold_budgets
from hubproxy.store.sql.usage import record_calls
from hubproxy.store.sqlite.db import connect
from hubproxy.tokens import Usage
from tests.conftest import HELLO, raw_request, wait_for


def make_key(gateway, *flags: str) -> tuple[str, str]:
    created = gateway.cli.json("keys", "create", "--user", "dev@example.com", "--name", "rules", *flags)
    wait_for(lambda: _server_knows(gateway, created["key"]))
    return created["id"], created["key"]


def _server_knows(gateway, key: str) -> bool:
    """True once the server accepts the key or refuses it for its rules rather than as unknown."""
    try:
        gateway.client(key=key).models.list()
    except openai.PermissionDeniedError:
        return True
    except openai.AuthenticationError:
        return False
    return True


def chat(gateway, key: str, model: str = "deepseek-chat", **kwargs):
    return gateway.client(key=key).chat.completions.create(model=model, messages=HELLO, **kwargs)


def test_model_allowlist_refuses_other_models_and_filters_the_list(gateway):
    _, key = make_key(gateway, "--models", "ds,fake/text-*")
    chat(gateway, key, "ds")
    assert gateway.client(key=key).embeddings.create(model="text-embedding", input="x").data
    with pytest.raises(openai.PermissionDeniedError) as err:
        chat(gateway, key, "deepseek-chat")
    assert err.value.status_code == 403 and err.value.code == "model_not_allowed"
    assert err.value.response.headers["x-should-retry"] == "false"
    assert {m.id for m in gateway.client(key=key).models.list()} == {"ds", "text-embedding"}
    with pytest.raises(openai.PermissionDeniedError):
        gateway.client(key=key).models.retrieve("deepseek-chat")


def test_provider_pattern_allows_every_model_of_that_provider(gateway):
    _, key = make_key(gateway, "--models", "fake/*")
    assert len(gateway.client(key=key).models.list().data) == len(gateway.client().models.list().data)


def test_ip_allowlist_refuses_other_addresses_and_can_be_widened_live(gateway):
    key_id, key = make_key(gateway, "--allow-ip", "10.0.0.0/8", "--allow-ip", "fd00::/8")
    with pytest.raises(openai.PermissionDeniedError) as err:
        chat(gateway, key)
    assert err.value.code == "ip_not_allowed" and "127.0.0.1" in err.value.message
    gateway.cli("keys", "update", key_id, "--allow-ip", "127.0.0.1")
    wait_for(lambda: gateway.key_works(key), timeout=1.5)
    chat(gateway, key)


def test_forwarded_for_is_believed_only_from_trusted_proxies(gateway):
    _, key = make_key(gateway, "--allow-ip", "203.0.113.0/24")
    url = gateway.base_url + "/models"
    forwarded = {"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.7"}
    assert raw_request("GET", url, headers=forwarded).status == 403
    path = gateway.home / "config.toml"
    config = tomllib.loads(path.read_text())
    config["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    path.write_text(tomli_w.dumps(config))
    wait_for(lambda: raw_request("GET", url, headers=forwarded).status == 200, timeout=3)
    assert raw_request("GET", url, headers={"Authorization": f"Bearer {key}"}).status == 403
    spoofed = {**forwarded, "X-Forwarded-For": "203.0.113.7, 198.51.100.1"}
    assert raw_request("GET", url, headers=spoofed).status == 403


def test_spend_limit_caps_the_key_not_the_user(gateway):
    _, key = make_key(gateway, "--spend-limit", "0.0001")
    answered = 0
    with pytest.raises(openai.APIStatusError) as err:
        for _ in range(40):
            chat(gateway, key, max_tokens=10)
            answered += 1
    assert err.value.status_code == 402 and err.value.code == "insufficient_quota"
    assert "spend limit" in err.value.message
    assert 5 <= answered < 40
    with gateway.db() as db:
        spent = db.execute(
            "SELECT sum(cost) FROM usage WHERE key_id = (SELECT id FROM api_keys WHERE name = 'rules')"
        ).fetchone()[0]
    assert spent <= 100_000_000
    chat(gateway, gateway.key)


def test_expired_key_gets_401_that_says_so(gateway):
    _, key = make_key(gateway, "--expires", "2s")
    chat(gateway, key)
    time.sleep(2.1)
    with pytest.raises(openai.AuthenticationError) as err:
        chat(gateway, key)
    assert "expired" in err.value.message
    assert err.value.response.headers["x-should-retry"] == "false"


def test_rpm_limit_is_429_with_the_true_wait(gateway):
    _, key = make_key(gateway, "--rpm", "3")
    for _ in range(3):
        chat(gateway, key)
    with pytest.raises(openai.RateLimitError) as err:
        chat(gateway, key)
    headers = err.value.response.headers
    assert err.value.code == "rate_limited"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert 50_000 <= int(headers["retry-after-ms"]) <= 60_000


def test_tpm_counts_the_reservation_then_the_real_usage(gateway):
    _, key = make_key(gateway, "--tpm", "1000")
    chat(gateway, key, max_tokens=600)
    chat(gateway, key, max_tokens=600)
    with pytest.raises(openai.BadRequestError) as err:
        chat(gateway, key, max_tokens=2000)
    assert "per minute" in err.value.message
    gateway.upstream.delay = 0.5

    results = asyncio.run(gateway.fire(key, 2, max_tokens=600))
    assert sum(isinstance(r, openai.RateLimitError) for r in results) == 1


def test_max_parallel_refuses_the_extra_calls(gateway):
    _, key = make_key(gateway, "--max-parallel", "2")
    gateway.upstream.delay = 0.5
    results = asyncio.run(gateway.fire(key, 5))
    assert sum(not isinstance(r, Exception) for r in results) == 2
    assert all(r.code == "rate_limited" for r in results if isinstance(r, Exception))
    chat(gateway, key)


def test_refusals_that_a_retry_cannot_fix_are_not_retried(gateway):
    _, key = make_key(gateway, "--models", "ds")
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=3)
    started = time.monotonic()
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert time.monotonic() - started < 0.5


def test_budget_periods_start_where_a_person_expects():
    wednesday = date(2026, 11, 18)
    assert period_start("day", wednesday) == "2026-11-18"
    assert period_start("week", wednesday) == "2026-11-16"
    assert period_start("month", wednesday) == "2026-11-01"
    assert period_start(None, wednesday) == ""


def test_address_rules_cover_ipv6_and_forwarding():
    policy = KeyPolicy(networks=parse_networks(["10.0.0.0/8", "2001:db8::/32"]))
    assert ip_allowed(policy, "10.1.2.3") and ip_allowed(policy, "2001:db8::1")
    assert ip_allowed(policy, "::ffff:10.0.0.1")
    assert not ip_allowed(policy, "11.0.0.1") and not ip_allowed(policy, "garbage")
    trusted = parse_networks(["127.0.0.1"])
    assert client_address("127.0.0.1", "1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("8.8.8.8", "1.2.3.4", trusted) == "8.8.8.8"
    assert client_address("127.0.0.1", "1.2.3.4, 127.0.0.1", trusted) == "1.2.3.4"


def add_plans(gateway) -> None:
    path = gateway.home / "config.toml"
    config = tomllib.loads(path.read_text())
    config["plans"] = {
        "pro": {"rpm": 2, "monthly_credit": "3", "price_multiplier": "0.5"},
        "free": {"rpm": 100},
    }
    path.write_text(tomli_w.dumps(config))
    wait_for(lambda: gateway.health()["plans"] == 2, timeout=3)


def test_plans_give_limits_credit_and_price(gateway):
    add_plans(gateway)
    created = gateway.cli.json("users", "add", "pro@example.com", "--balance", "1", "--plan", "pro")
    assert created["plan"] == "pro" and created["balance"] == "4.00", "1 USD grant + 3 USD monthly credit"
    key = gateway.cli.json("keys", "create", "--user", "pro@example.com")["key"]
    wait_for(lambda: gateway.key_works(key), timeout=3)
    answer = chat(gateway, key)
    assert answer.usage.model_extra["cost"] == pytest.approx((4 * 0.27 + 6 * 1.10) / 2 / 1e6)
    chat(gateway, key)
    with pytest.raises(openai.RateLimitError):
        chat(gateway, key)
    with gateway.db() as db:
        cost_sum = db.execute("SELECT sum(cost) FROM usage WHERE user_id = 2").fetchone()[0]
        balance, ledger = db.execute(
            "SELECT balance, (SELECT sum(amount) FROM ledger WHERE user_id = 2) FROM users WHERE id = 2"
        ).fetchone()
    assert cost_sum == 2 * (4 * 270_000 + 6 * 1_100_000) // 2
    assert balance == ledger == 4 * 10**12 - cost_sum


def test_a_keys_own_limits_override_its_plan(gateway):
    add_plans(gateway)
    gateway.cli("users", "add", "pro@example.com", "--plan", "pro")
    key = gateway.cli.json("keys", "create", "--user", "pro@example.com", "--rpm", "4")["key"]
    wait_for(lambda: gateway.key_works(key), timeout=3)
    for _ in range(4):
        chat(gateway, key)
    with pytest.raises(openai.RateLimitError):
        chat(gateway, key)


def test_monthly_credit_is_given_once_per_month(gateway):
    add_plans(gateway)
    gateway.cli("users", "add", "pro@example.com", "--plan", "pro")
    gateway.cli("users", "update", "pro@example.com", "--plan", "pro")
    gateway.stop()
    gateway.start()
    with gateway.db() as db:
        credits = db.execute("SELECT count(*), sum(amount) FROM ledger WHERE kind = 'plan_credit'").fetchone()
    assert credits == (1, 3 * 10**12)
    bad = gateway.cli("users", "update", "pro@example.com", "--plan", "gold", ok=False)
    assert bad.exit_code == 1 and "no plan 'gold'" in bad.output


def test_the_shared_limiter_decides_exactly_as_the_one_in_memory(tmp_path):
    """Workers count limited keys' calls in SQLite; the same calls at the same times must get the same
    answers, waits included, as from one process's memory."""
    conn = connect(tmp_path / "hubproxy.db", create=True)
    memory = RateLimiter()
    limits = Limits(rpm=6, tpm=1_000, max_parallel=3)
    rng = random.Random(3)
    now, running = 1_000.0, []
    for n in range(400):
        now += rng.choice([0.2, 1.0, 7.0])
        if running and rng.random() < 0.5:
            request_id, entry, used = running.pop(rng.randrange(len(running)))
            memory.finish("k", entry, used)
            with transaction(conn):
                finish_calls(conn, [(request_id, "k", used, now)])
            continue
        tokens = rng.randint(50, 400)
        try:
            entry = memory.admit("k", limits, tokens, now)
            expected = None
        except errors.GatewayError as err:
            expected = (err.message, err.headers["retry-after-ms"])
        with transaction(conn):
            refusal = admit_calls(conn, [(f"r{n}", "k", 6, 1_000, 3, tokens, now)])[0]
        shared = None if refusal is None else refused(limits, refusal.limit, refusal.wait)
        assert expected == (None if shared is None else (shared.message, shared.headers["retry-after-ms"]))
        if refusal is None:
            running.append((f"r{n}", entry, rng.choice([None, rng.randint(0, tokens)])))


def test_shared_spend_caps_count_holds_in_flight_and_costs_committed(tmp_path):
    conn = connect(tmp_path / "hubproxy.db", create=True)
    user = accounts.add_user(conn, "cap@example.com", 10_000)
    day = period_start("month")
    with transaction(conn):
        assert hold_budgets(conn, [("r1", "k", 1_000, day, 600)]) == [None]
        assert hold_budgets(conn, [("r2", "k", 1_000, day, 500)]) == [400], "600 is held: 400 left"
        assert hold_budgets(conn, [("r3", "other", 1_000, day, 500)]) == [None], "caps are per key"
    r1 = Reservation("r1", user.id, "k", "m", "p", "m", "/chat/completions", False, 600, 1, 0)
    with transaction(conn):
        record_calls(
            conn,
            [
                CallRecord(
                    reservation=r1,
                    usage=Usage(1, 1),
                    cost=100,
                    estimated=False,
                    status="ok",
                    http_status=200,
                    budget_held=True,
                )
            ],
        )
    with transaction(conn):
        assert hold_budgets(conn, [("r2", "k", 1_000, day, 900)]) == [None], "the hold went, its cost stays"
        assert hold_budgets(conn, [("r4", "k", 1_000, day, 1)]) == [0]
