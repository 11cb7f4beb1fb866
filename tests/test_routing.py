"""Several deployments per model: failover before the first byte only, breakers, weights, billing once."""

from __future__ import annotations

import asyncio
import collections
import time
import tomllib

import openai
import pytest
import tomli_w

from tests.conftest import HELLO, wait_for


def deployment(provider: str, upstream: str, priority: int = 0, weight: int = 1) -> dict:
    return {"provider": provider, "upstream_model": upstream, "priority": priority, "weight": weight}


ROUTED = {
    "failover": [deployment("dead", "deepseek-chat", 2), deployment("fake", "deepseek-chat", 1)],
    "after-500": [deployment("fake", "fail-500", 2), deployment("fake", "deepseek-chat", 1)],
    "after-429": [deployment("fake", "rate-limited", 2), deployment("fake", "deepseek-chat", 1)],
    "callers-fault": [deployment("fake", "echo-key", 2), deployment("fake", "deepseek-chat", 1)],
    "mid-stream": [deployment("fake", "die-mid-stream", 2), deployment("fake", "deepseek-chat", 1)],
    "weighted": [deployment("fake", "w-heavy", 0, 3), deployment("fake", "w-light", 0, 1)],
    "all-dead": [deployment("dead", "a", 1), deployment("dead", "b", 0)],
    "hang-fast": [deployment("impatient", "hang")],
    "narrow-first": [deployment("narrow", "deepseek-chat", 2), deployment("fake", "deepseek-chat", 1)],
    "cached-routed": [deployment("dead", "cache-hit", 2), deployment("fake", "cache-hit", 1)],
}


@pytest.fixture
def routed(gateway):
    gateway.stop()
    path = gateway.home / "config.toml"
    config = tomllib.loads(path.read_text())
    config["providers"]["dead"] = {"base_url": "http://127.0.0.1:9/v1", "api_style": "openai"}
    fake = config["providers"]["fake"]
    config["providers"]["impatient"] = {**fake, "timeout": 0.5}
    config["providers"]["narrow"] = {**fake, "max_concurrent": 1}
    config["routing"] = {"max_attempts": 3, "backoff_ms": 1, "breaker_failures": 3, "breaker_cooldown": 1.0}
    for name, deployments in ROUTED.items():
        config["models"][name] = {"input_price": "0.27", "output_price": "1.10", "deployments": deployments}
    config["models"]["cached-routed"]["cached_input_price"] = "0.07"
    path.write_text(tomli_w.dumps(config))
    gateway.start()
    return gateway


def usage_rows(gateway, model: str) -> list[tuple]:
    with gateway.db() as db:
        return db.execute(
            "SELECT provider, upstream_model, cost, attempts, status FROM usage WHERE model = ? ORDER BY id", (model,)
        ).fetchall()


def test_unreachable_deployment_fails_over_and_is_billed_once(routed):
    answer = routed.client().chat.completions.create(model="failover", messages=HELLO)
    assert answer.choices[0].message.content == "hello from the fake upstream model"
    assert usage_rows(routed, "failover") == [
        (
            "fake",
            "deepseek-chat",
            4 * 270_000 + 6 * 1_100_000,
            "dead/deepseek-chat:unreachable,fake/deepseek-chat:200",
            "ok",
        )
    ]


@pytest.mark.parametrize("model,first", [("after-500", "fake/fail-500:500"), ("after-429", "fake/rate-limited:429")])
def test_server_errors_and_rate_limits_fail_over(routed, model, first):
    chunks = list(routed.client().chat.completions.create(model=model, messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("hello")
    rows = usage_rows(routed, model)
    assert len(rows) == 1 and rows[0][3] == f"{first},fake/deepseek-chat:200"


def test_the_callers_own_mistake_is_returned_at_once(routed):
    with pytest.raises(openai.BadRequestError):
        routed.client().chat.completions.create(model="callers-fault", messages=HELLO)
    assert [r["body"]["model"] for r in routed.upstream.requests] == ["echo-key"]


def test_no_switch_after_the_first_byte(routed):
    with pytest.raises(openai.APIError):
        list(routed.client().chat.completions.create(model="mid-stream", messages=HELLO, stream=True))
    assert [r["body"]["model"] for r in routed.upstream.requests] == ["die-mid-stream"]
    rows = usage_rows(routed, "mid-stream")
    assert rows[0][1] == "die-mid-stream" and rows[0][3] is None and rows[0][4] == "upstream_broken"


def test_breaker_opens_after_failures_and_closes_after_cooldown(routed):
    client = routed.client()
    for _ in range(3):
        client.chat.completions.create(model="failover", messages=HELLO)
    health = routed.health()["deployments"]
    assert health["dead/deepseek-chat"]["state"] == "open"
    client.chat.completions.create(model="failover", messages=HELLO)
    assert usage_rows(routed, "failover")[-1][:2] == ("fake", "deepseek-chat")
    assert usage_rows(routed, "failover")[-1][3] is None, "an open breaker is skipped: one attempt only"
    time.sleep(1.1)
    client.chat.completions.create(model="failover", messages=HELLO)
    assert usage_rows(routed, "failover")[-1][3].startswith("dead/deepseek-chat:unreachable"), "tried again"


def test_a_routed_model_bills_cached_prompt_tokens_at_its_cached_price(routed):
    routed.client().chat.completions.create(model="cached-routed", messages=HELLO)
    listed = {m["name"]: m for m in routed.cli.json("models", "list")}
    assert listed["cached-routed"]["cached_input_price"] == "0.07"
    assert usage_rows(routed, "cached-routed")[-1][2] == 2 * 270_000 + 2 * 70_000 + 6 * 1_100_000


def test_no_available_deployment_is_503_naming_the_model(routed):
    client = routed.client()
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="all-dead", messages=HELLO)
        assert err.value.status_code == 502
    wait_for(lambda: _refused_503(client), timeout=3)


def _refused_503(client) -> bool:
    try:
        client.chat.completions.create(model="all-dead", messages=HELLO)
    except openai.APIStatusError as err:
        return err.status_code == 503 and "'all-dead'" in err.message
    return False


def test_weights_split_traffic(routed):
    client = routed.client()
    for _ in range(200):
        client.chat.completions.create(model="weighted", messages=HELLO)
    counts = collections.Counter(r["body"]["model"] for r in routed.upstream.requests)
    assert 120 <= counts["w-heavy"] <= 180 and counts["w-heavy"] + counts["w-light"] == 200


def test_providers_status_shows_the_running_servers_view(routed):
    routed.client().chat.completions.create(model="failover", messages=HELLO)
    url = f"http://127.0.0.1:{routed.port}"
    status = routed.cli.json("providers", "status", "--url", url)
    assert status["fake/deepseek-chat"]["state"] == "closed"
    assert status["dead/deepseek-chat"]["error_rate"] == 1.0
    bad = routed.cli("providers", "status", "--url", "http://127.0.0.1:9", ok=False)
    assert bad.exit_code == 1 and "no hubproxy server" in bad.output


def test_a_providers_own_timeout_wins(routed):
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        routed.client().chat.completions.create(model="hang-fast", messages=HELLO)
    assert err.value.status_code == 502 and "0.5s" in err.value.message
    assert time.monotonic() - started < 3


def test_max_concurrent_sends_the_overflow_to_the_next_deployment(routed):
    routed.upstream.delay = 0.5
    results = asyncio.run(routed.fire(routed.key, 2, model="narrow-first", max_tokens=None))
    assert all(not isinstance(r, Exception) for r in results)
    attempts = [row[3] for row in usage_rows(routed, "narrow-first")]
    assert sorted(a or "" for a in attempts) == ["", "narrow/deepseek-chat:busy,fake/deepseek-chat:200"]
