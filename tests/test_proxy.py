"""The OpenAI API through hubproxy, driven by the official SDK against a fake upstream on a real port."""

from __future__ import annotations

import time
from decimal import Decimal

import openai
import orjson
import pytest

from tests.conftest import HELLO, Gateway, configure, free_port, raw_request, run_cli, wait_for

PRICE_IN, PRICE_OUT = Decimal("0.27"), Decimal("1.10")


def usd(prompt: int, completion: int) -> Decimal:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / 1_000_000


def test_non_streamed_chat_bills_and_reports_cost(gateway):
    resp = gateway.client().chat.completions.with_raw_response.create(model="deepseek-chat", messages=HELLO)
    completion = resp.parse()
    assert completion.choices[0].message.content == "hello from the fake upstream model"
    assert completion.usage.prompt_tokens == 4 and completion.usage.completion_tokens == 6
    assert Decimal(orjson.loads(resp.content)["usage"]["cost"].__str__()) == usd(4, 6)
    assert completion._request_id and completion._request_id.startswith("req_")
    assert resp.headers["x-request-id"] == completion._request_id


def test_alias_is_rewritten_to_the_upstream_model_and_nothing_else_changes(gateway):
    gateway.client().chat.completions.create(
        model="ds", messages=HELLO, temperature=0.5, extra_body={"provider_extra": {"x": [1, 2]}}
    )
    sent = gateway.upstream.requests[-1]
    assert sent["body"]["model"] == "deepseek-chat"
    assert sent["body"]["temperature"] == 0.5 and sent["body"]["provider_extra"] == {"x": [1, 2]}


def test_a_request_that_needs_no_rewrite_goes_upstream_byte_for_byte(gateway):
    body = b'{"model":  "deepseek-chat", "messages": [{"role": "user", "content": "hi \\u00e9"}], "max_tokens": 9}'
    headers = {"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
    assert raw_request("POST", url, body, headers).status == 200
    assert gateway.upstream.requests[-1]["raw"] == body
    assert raw_request("POST", url, body.replace(b'"deepseek-chat"', b'"ds"'), headers).status == 200
    assert gateway.upstream.requests[-1]["body"]["model"] == "deepseek-chat", "an alias is still rewritten"
    stream = b' \n{"stream": true, ' + body[1:]
    assert raw_request("POST", url, stream, headers).status == 200
    sent = gateway.upstream.requests[-1]["raw"]
    assert sent == b' \n{"stream_options":{"include_usage":true},"stream": true, ' + body[1:], (
        "usage asked, rest as sent"
    )
    null_options = b'{"stream_options": null, "stream": true, ' + body[1:]
    assert raw_request("POST", url, null_options, headers).status == 200
    assert gateway.upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}


def test_hubproxy_key_never_goes_upstream(gateway):
    gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    headers = gateway.upstream.requests[-1]["headers"]
    assert gateway.key not in str(headers)
    assert headers["Authorization"] == f"Bearer {gateway.upstream.api_key}"
    assert headers["User-Agent"].startswith("hubproxy/"), "the client's own User-Agent is not forwarded"
    assert headers["Accept-Encoding"] == "identity", "the answer is read for usage: it must not come compressed"


def test_calls_one_after_another_share_one_upstream_connection(gateway):
    client = gateway.client()
    for stream in (False, True, False, True, False):
        answer = client.chat.completions.create(model="deepseek-chat", messages=HELLO, stream=stream)
        if stream:
            list(answer)
    peers = {r["peer"] for r in gateway.upstream.requests[-5:]}
    assert len(peers) == 1, f"each call opened its own upstream connection: {peers}"


def test_stream_relays_every_chunk_and_hides_usage_it_asked_for_itself(gateway):
    chunks = list(gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello from the fake upstream model "
    assert all(c.choices for c in chunks), "the usage-only chunk must be hidden"
    assert all(getattr(c, "usage", None) is None for c in chunks)
    assert gateway.upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}


def test_stream_with_include_usage_gets_usage_and_cost(gateway):
    chunks = list(
        gateway.client().chat.completions.create(
            model="deepseek-chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    final = chunks[-1]
    assert final.choices == []
    assert final.usage.prompt_tokens == 4 and final.usage.completion_tokens == 7
    assert Decimal(str(final.usage.model_extra["cost"])) == usd(4, 7)


def test_reasoning_content_and_tool_calls_pass_through(gateway):
    client = gateway.client()
    msg = client.chat.completions.create(model="reasoning", messages=HELLO).choices[0].message
    assert msg.model_extra["reasoning_content"] == "let me think"
    deltas = [
        c.choices[0].delta
        for c in client.chat.completions.create(model="reasoning", messages=HELLO, stream=True)
        if c.choices
    ]
    assert deltas[0].model_extra["reasoning_content"] == "thinking"
    msg = client.chat.completions.create(model="tools", messages=HELLO).choices[0].message
    assert msg.tool_calls[0].function.name == "get_weather"
    assert msg.tool_calls[0].function.arguments == '{"city": "Paris"}'
    deltas = [
        c.choices[0].delta
        for c in client.chat.completions.create(model="tools", messages=HELLO, stream=True)
        if c.choices
    ]
    assert deltas[0].tool_calls[0].function.name == "get_weather"


def test_embeddings_and_legacy_completions_are_proxied_and_billed(gateway):
    client = gateway.client()
    emb = client.embeddings.create(model="text-embedding", input=["one two three", "four"])
    assert len(emb.data) == 2 and emb.usage.prompt_tokens == 4
    comp = client.completions.create(model="deepseek-chat", prompt="once upon a time")
    assert comp.choices[0].text and comp.usage.completion_tokens == 6
    with gateway.db() as db:
        rows = db.execute("SELECT endpoint, prompt_tokens, completion_tokens, cost FROM usage ORDER BY id").fetchall()
    assert rows == [("/embeddings", 4, 0, 4 * 20_000), ("/completions", 4, 6, 4 * 270_000 + 6 * 1_100_000)]


def test_models_list_and_get(gateway):
    client = gateway.client()
    ids = {m.id for m in client.models.list()}
    assert {"deepseek-chat", "ds", "text-embedding"} <= ids
    model = client.models.retrieve("ds")
    assert model.id == "ds" and model.owned_by == "fake" and model.object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize("header", ["x-api-key", "api-key"])
def test_alternative_auth_headers(gateway, header):
    resp = raw_request("GET", gateway.base_url + "/models", headers={header: gateway.key})
    assert resp.status == 200 and resp.json()["object"] == "list"


def test_wrong_key_is_401_and_not_retried(gateway):
    with pytest.raises(openai.AuthenticationError) as err:
        gateway.client(key="sk-hp-wrong").chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    assert err.value.response.headers["x-should-retry"] == "false"
    assert err.value.request_id.startswith("req_")
    resp = raw_request("GET", gateway.base_url + "/models")
    assert resp.status == 401 and resp.json()["error"]["code"] == "invalid_api_key"


def test_unknown_model_is_404_model_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as err:
        gateway.client().chat.completions.create(model="gpt-99", messages=HELLO)
    assert err.value.code == "model_not_found" and "gpt-99" in err.value.message
    assert err.value.body["param"] == "model"


@pytest.mark.parametrize(
    "body,message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": []}', "'model' is required"),
        (b'{"model": "deepseek-chat", "stream": "yes"}', "'stream' must be a boolean"),
        (b'{"model": "deepseek-chat", "max_tokens": -5}', "'max_tokens' must be a positive integer"),
        (b"", "empty"),
    ],
)
def test_malformed_requests_are_400_and_change_nothing(gateway, body, message):
    headers = {"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"}
    resp = raw_request("POST", gateway.base_url + "/chat/completions", body=body, headers=headers)
    assert resp.status == 400, resp.body
    error = resp.json()["error"]
    assert message in error["message"] and set(error) == {"message", "type", "code", "param"}
    assert resp.headers["x-request-id"].startswith("req_")
    assert gateway.cli.json("balance", "dev@example.com")["balance"] == "5.00"


def test_huge_body_is_413_openai_shaped(gateway):
    body = b'{"model": "deepseek-chat", "messages": [{"role": "user", "content": "' + b"x" * (17 * 1024 * 1024)
    body += b'"}]}'
    headers = {"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"}
    resp = raw_request("POST", gateway.base_url + "/chat/completions", body=body, headers=headers)
    assert resp.status == 413 and resp.json()["error"]["code"] == "request_too_large"


def test_unknown_route_is_openai_shaped_404(gateway):
    resp = raw_request("GET", gateway.base_url + "/nothing-here")
    assert resp.status == 404 and "error" in resp.json() and "x-request-id" in resp.headers


def test_upstream_errors_pass_through_with_status_and_are_not_billed(gateway):
    client = gateway.client()
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="fail-500", messages=HELLO)
    assert err.value.status_code == 500 and err.value.body["message"] == "upstream exploded"
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="rate-limited", messages=HELLO)
    assert err.value.response.headers["retry-after"] == "7"
    assert gateway.cli.json("balance", "dev@example.com")["balance"] == "5.00"


def test_unreachable_upstream_is_502_upstream_unavailable(gateway, cli):
    cli("providers", "add", "dead", "--base-url", "http://127.0.0.1:9/v1")
    cli("models", "add", "dead-model", "--provider", "dead", "--input-price", "1", "--output-price", "1")
    client = gateway.client()
    wait_for(lambda: "dead-model" in {m.id for m in client.models.list()})
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="dead-model", messages=HELLO)
    assert err.value.status_code == 502 and err.value.code == "upstream_unavailable"
    assert gateway.cli.json("balance", "dev@example.com")["balance"] == "5.00"


def test_upstream_key_never_reaches_client_or_log(gateway):
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="echo-key", messages=HELLO)
    assert gateway.upstream.api_key not in err.value.response.text
    assert "[redacted]" in err.value.message
    client.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "my secret prompt"}])
    gateway.stop()
    log = gateway.log()
    assert gateway.upstream.api_key not in log
    assert gateway.key not in log
    assert "my secret prompt" not in log and "hello from the fake upstream" not in log
    with gateway.db() as db:
        dump = "\n".join(db.iterdump())
    assert gateway.key not in dump and gateway.upstream.api_key not in dump and "my secret prompt" not in dump


def test_health_needs_no_key_and_has_a_request_id(gateway):
    resp = raw_request("GET", f"http://127.0.0.1:{gateway.port}/health")
    assert resp.status == 200 and resp.json()["status"] == "ok" and "x-request-id" in resp.headers


def test_keys_list_shows_last_use(gateway):
    assert gateway.cli.json("keys", "list")[0]["last_used_at"] is None
    gateway.client().models.list()
    gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    wait_for(lambda: gateway.cli.json("keys", "list")[0]["last_used_at"] is not None, timeout=5)


def test_serve_on_a_busy_port_is_a_one_line_error(gateway, tmp_path):
    proc = run_cli(tmp_path / "other", "serve", "--port", str(gateway.port))
    assert proc.returncode == 1
    assert "cannot listen on" in proc.stderr and "Traceback" not in proc.stderr


def test_models_sync_adds_unpriced_models_that_are_refused_until_priced(gateway, monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", gateway.upstream.api_key)
    result = gateway.cli.json("models", "sync", "fake")
    unpriced = ["deepseek-reasoner", "new-model", "listed-model", "varies-model"]
    assert result["listed"] == 7 and result["priced"] == {} and result["unpriced"][:4] == unpriced
    listed = {m["name"]: m for m in gateway.cli.json("models", "list")}
    assert listed["new-model"]["input_price"] is None
    client = gateway.client()
    wait_for(lambda: gateway.health()["models"] == len(listed))
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="new-model", messages=HELLO)
    assert err.value.code == "model_not_priced"
    assert "new-model" not in {m.id for m in client.models.list()}
    gateway.cli(
        "models", "add", "new-model", "--provider", "fake", "--input-price", "1", "--output-price", "2", "--replace"
    )
    wait_for(lambda: "new-model" in {m.id for m in client.models.list()})
    assert client.chat.completions.create(model="new-model", messages=HELLO).usage.model_extra["cost"] > 0


def test_models_sync_prices_from_the_preset_the_listing_or_local(gateway, monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", gateway.upstream.api_key)
    url = ["--base-url", gateway.upstream.base_url, "--api-key-env", "UPSTREAM_KEY", "--no-models"]
    gateway.cli("providers", "add", "ds", "--preset", "deepseek", *url)
    result = gateway.cli.json("models", "sync", "ds")
    assert list(result["priced"]) == ["deepseek-reasoner"]
    assert result["priced"]["deepseek-reasoner"].startswith("genai-prices ")
    assert result["unpriced"] == ["new-model", "listed-model", "varies-model", "org/open-model", "org/dedicated-only"]
    for name in result["unpriced"]:
        gateway.cli("models", "remove", name)
    gateway.cli("providers", "add", "router", "--preset", "openrouter", *url)
    result = gateway.cli.json("models", "sync", "router")
    assert result["priced"] == {"listed-model": "the provider's own model listing"}
    assert "varies-model" in result["unpriced"]
    gateway.cli("models", "remove", "listed-model")
    for name in ("varies-model", "org/open-model", "org/dedicated-only"):
        gateway.cli("models", "remove", name)
    bare = ["--base-url", gateway.upstream.base_url.removesuffix("/v1") + "/bare", *url[2:]]
    gateway.cli("providers", "add", "tg", "--preset", "together", *bare)
    result = gateway.cli.json("models", "sync", "tg")
    assert result["listed"] == 7 and result["priced"] == {"org/open-model": "the provider's own model listing"}
    assert "org/dedicated-only" in result["unpriced"], "0 from Together means not sold per token"
    assert {m["name"]: m for m in gateway.cli.json("models", "list")}["org/open-model"]["output_price"] == "0.6"
    for name in result["unpriced"]:
        gateway.cli("models", "remove", name)
    gateway.cli("providers", "add", "box", "--preset", "ollama", *url)
    assert gateway.cli.json("models", "sync", "box")["priced"]["listed-model"].startswith("local")
    listed = {m["name"]: m for m in gateway.cli.json("models", "list")}
    reasoner = listed["deepseek-reasoner"]
    # genai-prices 0.2.5: off-peak 0.135 / 0.55 by default, 0.55 / 2.19 from 00:30 to 16:30 UTC
    assert (reasoner["input_price"], reasoner["output_price"]) == ("0.135", "0.55")
    assert reasoner["hours"] == [
        {"from": "00:30", "to": "16:30", "input_price": "0.55", "cached_input_price": "0.14", "output_price": "2.19"}
    ]
    assert listed["listed-model"]["output_price"] == "0"
    client = gateway.client()
    wait_for(lambda: "deepseek-reasoner" in {m.id for m in client.models.list()})
    before = time.gmtime()
    usage = client.chat.completions.create(model="deepseek-reasoner", messages=HELLO).usage
    peak = [(30 <= t.tm_hour * 60 + t.tm_min < 990) for t in (before, time.gmtime())]
    costs = {
        (usage.prompt_tokens * 550_000 + usage.completion_tokens * 2_190_000) / 1e12
        if at_peak
        else (usage.prompt_tokens * 135_000 + usage.completion_tokens * 550_000) / 1e12
        for at_peak in peak
    }
    assert usage.model_extra["cost"] in costs, "billed at the price in force when the call started"


def test_cached_prompt_tokens_are_billed_at_the_cached_price(gateway):
    prices = ["--input-price", "0.27", "--output-price", "1.10", "--cached-input-price", "0.07"]
    gateway.cli("models", "add", "cache-hit", "--provider", "fake", *prices, "--replace")
    wait_for(lambda: _cached(gateway.client()))
    with gateway.db() as db:
        rows = db.execute("SELECT prompt_tokens, cached_tokens, cost FROM usage WHERE model = 'cache-hit'").fetchall()
    assert rows[-1] == (4, 2, 2 * 270_000 + 2 * 70_000 + 6 * 1_100_000)


def test_a_tiered_model_is_billed_at_the_tier_its_prompt_falls_in(gateway):
    bad = gateway.cli(
        "models",
        "add",
        "x",
        "--provider",
        "fake",
        "--input-price",
        "1",
        "--output-price",
        "2",
        "--tier",
        "lots:1:2",
        ok=False,
    )
    assert bad.exit_code == 1 and "--tier wants ABOVE_PROMPT_TOKENS:INPUT:OUTPUT" in bad.output
    prices = ["--input-price", "1", "--output-price", "2", "--tier", "3:10:20", "--tier", "1000:100:200"]
    added = gateway.cli.json(
        "models", "add", "tiered", "--provider", "fake", "--upstream-model", "deepseek-chat", *prices
    )
    assert added["tiers"] == [
        {"above_prompt_tokens": 3, "input_price": "10", "output_price": "20"},
        {"above_prompt_tokens": 1000, "input_price": "100", "output_price": "200"},
    ]
    assert "tiers" in (gateway.home / "config.toml").read_text()
    client = gateway.client()
    wait_for(lambda: "tiered" in {m.id for m in client.models.list()})
    usage = client.chat.completions.create(model="tiered", messages=HELLO).usage
    assert usage.prompt_tokens > 3
    expected = usage.prompt_tokens * 10_000_000 + usage.completion_tokens * 20_000_000
    with gateway.db() as db:
        assert db.execute("SELECT cost FROM usage WHERE model = 'tiered'").fetchone()[0] == expected


def _cached(client) -> bool:
    """True once the server bills cache-hit at its cached price (config reloads within a second)."""
    try:
        answer = client.chat.completions.create(model="cache-hit", messages=HELLO)
    except openai.NotFoundError:
        return False
    return answer.usage.model_extra["cost"] < (4 * 0.27 + 6 * 1.10) / 1e6


def test_an_upstream_key_with_a_line_break_is_refused_before_anything_is_sent(home, cli, upstream):
    configure(cli, upstream)
    upstream.api_key = "sk-upstream-secret\r\nX-Injected: yes"  # e.g. pasted into the environment with its line
    gw = Gateway(home, cli, upstream, free_port())
    key = gw.new_user("dev@example.com", "5")
    gw.start()
    try:
        with pytest.raises(openai.APIStatusError) as refused:
            gw.client(key).chat.completions.create(model="deepseek-chat", messages=HELLO)
        assert refused.value.status_code == 502
        assert "Authorization header has a line break" in refused.value.message
        assert "sk-upstream-secret" not in refused.value.response.text
        assert upstream.requests == []
    finally:
        gw.stop()
