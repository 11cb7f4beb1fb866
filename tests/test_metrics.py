"""`GET /metrics`: Prometheus' text format, counting what the calls did (by model, provider, status
and key owner: calls, tokens, cost, latency), calls and streams in flight, breaker states; to the
machine itself only, or with the metrics token."""

from __future__ import annotations

import json
import re
import tomllib

import openai
import pytest
import tomli_w

from tests.conftest import HELLO, Gateway, configure, free_port, raw_request, wait_for


def scrape(gateway, headers: dict[str, str] | None = None):
    return raw_request("GET", f"http://127.0.0.1:{gateway.port}/metrics", headers=headers or {})


def value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in the scrape")


def test_metrics_count_the_calls_tokens_cost_and_latency(gateway):
    client = gateway.client()
    for _ in range(3):
        client.chat.completions.create(model="deepseek-chat", messages=HELLO)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="fail-500", messages=HELLO)
    answer = scrape(gateway)
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.body.decode()
    ok = {"model": "deepseek-chat", "provider": "fake", "status": "ok", "owner": "dev@example.com"}
    assert value(text, "hubproxy_calls_total", **ok) == 3
    with gateway.db() as db:
        prompt, completion, cost = db.execute(
            "SELECT sum(prompt_tokens), sum(completion_tokens), sum(cost) FROM usage WHERE model = 'deepseek-chat'"
        ).fetchone()
    assert value(text, "hubproxy_prompt_tokens_total", **ok) == prompt
    assert value(text, "hubproxy_completion_tokens_total", **ok) == completion
    assert value(text, "hubproxy_cost_usd_total", **ok) == pytest.approx(cost / 10**12)
    assert value(text, "hubproxy_calls_total", model="fail-500", status="upstream_error") == 1
    assert value(text, "hubproxy_call_duration_seconds_count", model="deepseek-chat") == 3
    assert value(text, "hubproxy_call_duration_seconds_bucket", model="deepseek-chat", le="+Inf") == 3
    assert "hubproxy_time_to_first_token_seconds_count" not in text  # no stream yet
    for _ in client.chat.completions.create(model="slow-stream", messages=HELLO, stream=True):
        pass
    text = scrape(gateway).body.decode()
    assert value(text, "hubproxy_time_to_first_token_seconds_count", model="slow-stream") == 1
    first = value(text, "hubproxy_time_to_first_token_seconds_sum", model="slow-stream")
    whole = value(text, "hubproxy_call_duration_seconds_sum", model="slow-stream")
    assert 0 < first < whole  # the first event came before the stream ended
    assert value(text, "hubproxy_calls_in_flight") == 0
    assert value(text, "hubproxy_deployment_breaker", deployment="fake/deepseek-chat", state="closed") == 1
    assert "# TYPE hubproxy_calls_total counter" in text and "# TYPE hubproxy_call_duration_seconds histogram" in text


def test_metrics_answer_the_machine_itself_not_a_proxied_request_without_the_token(home, cli, upstream):
    from tests.conftest import configure, serving

    configure(cli, upstream)
    config = home / "config.toml"
    settings = tomllib.loads(config.read_text())
    settings["server"]["metrics_token"] = "scrape-me"
    config.write_text(tomli_w.dumps(settings))
    for gateway in serving(home, cli, upstream):
        proxied = scrape(gateway, {"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status == 403 and b"metrics_token" in proxied.body
        wrong = scrape(gateway, {"X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer nope"})
        assert wrong.status == 403
        allowed = scrape(gateway, {"X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer scrape-me"})
        assert allowed.status == 200 and b"hubproxy_calls_in_flight 0" in allowed.body


def test_with_workers_a_scrape_counts_every_workers_calls(home, cli, upstream):
    """SO_REUSEPORT spreads new connections over the workers; whichever answers the scrape, the call
    counters cover all of them (after the once-a-second exchange)."""
    configure(cli, upstream)
    gw = Gateway(home, cli, upstream, free_port())
    gw.key = gw.new_user("dev@example.com", "5")
    gw.start("--workers", "2")
    try:
        body = json.dumps({"model": "deepseek-chat", "messages": HELLO, "max_tokens": 5}).encode()
        headers = {"Authorization": f"Bearer {gw.key}", "Content-Type": "application/json"}
        wait_for(lambda: raw_request("POST", gw.base_url + "/chat/completions", body, headers).status == 200)
        for _ in range(29):  # a new connection each: the kernel spreads them over both workers
            assert raw_request("POST", gw.base_url + "/chat/completions", body, headers).status == 200
        counted = lambda: value(scrape(gw).body.decode(), "hubproxy_calls_total", model="deepseek-chat", status="ok")  # noqa: E731
        wait_for(
            lambda: {counted() for _ in range(10)} == {30}, timeout=5
        )  # each worker shares its counts every second
        totals = set()
        for _ in range(10):
            text = scrape(gw).body.decode()
            totals.add(value(text, "hubproxy_calls_total", model="deepseek-chat", status="ok"))
        assert totals == {30}
        assert len(list((home / "metrics").glob("*.json"))) == 2
    finally:
        gw.stop()
