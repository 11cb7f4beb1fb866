"""/v1/responses over a WebSocket (Codex's `supports_websockets`), driven by aiohttp's WebSocket client:
each `response.create` is a call billed like an HTTP one, a prewarm (`generate: false`) is not, a
continuation by `previous_response_id` reaches the upstream whole, the key is checked again on every
call, limits hold, anything not served over a socket is a 426, and a kill -9 mid-socket loses no money."""

from __future__ import annotations

import asyncio
import json
import signal
import threading

import aiohttp
import openai
import pytest

from tests.conftest import Gateway, balance_and_ledger, configure, raw_request, serving, wait_for
from tests.fake_upstream import REPLY


def ws_url(gw: Gateway, path: str = "/v1/responses") -> str:
    return f"ws://127.0.0.1:{gw.port}{path}"


async def exchange(
    gw: Gateway, messages: list[dict], key: str | None = None, until: str = "response.completed"
) -> list[list[dict]]:
    """Send each message on one socket and collect its events up to `until` (or an error); the socket's
    events per message."""
    headers = {"Authorization": f"Bearer {key or gw.key}", "OpenAI-Beta": "responses_websockets=2026-02-06"}
    out: list[list[dict]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(gw), headers=headers) as socket:
        for message in messages:
            await socket.send_str(json.dumps(message))
            events: list[dict] = []
            while True:
                frame = await socket.receive(timeout=30)
                if frame.type != aiohttp.WSMsgType.TEXT:
                    events.append({"type": f"closed:{frame.type.name}"})
                    break
                events.append(json.loads(frame.data))
                if events[-1]["type"] in (until, "error"):
                    break
            out.append(events)
            if events[-1]["type"].startswith("closed"):
                break
    return out


def create(model: str = "deepseek-chat", **fields) -> dict:
    return {"type": "response.create", "model": model, "input": "say hello", **fields}


def usage_rows(gw: Gateway) -> list[tuple]:
    with gw.db() as db:
        return db.execute(
            "SELECT model, endpoint, status, prompt_tokens, completion_tokens, cost FROM usage ORDER BY id"
        ).fetchall()


@pytest.mark.parametrize("model", ["deepseek-chat", "gpt-native"], ids=["translated", "relayed"])
def test_each_message_is_a_call_streamed_back_in_order_and_billed(hub, model):
    (events,) = asyncio.run(exchange(hub, [create(model)]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(numbers)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text.split() == REPLY.split()
    (row,) = usage_rows(hub)
    assert row[:3] == (model, "/responses", "ok") and row[5] > 0
    completed = events[-1]["response"]["usage"]
    assert (row[3], row[4]) == (completed["input_tokens"], completed["output_tokens"])
    balance, ledger = balance_and_ledger(hub, "dev@example.com")
    assert balance == ledger


def test_a_prewarm_is_answered_without_a_call_or_a_bill(hub):
    """Codex's first message on a socket is `generate: false`: nothing generated, nothing billed; its
    input is what a continuation of it starts from."""

    async def run() -> tuple[list[dict], list[dict], list[dict]]:
        headers = {"Authorization": f"Bearer {hub.key}"}
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(hub), headers=headers) as socket:

            async def call(message: dict) -> list[dict]:
                await socket.send_str(json.dumps(message))
                events: list[dict] = []
                while not events or events[-1]["type"] not in ("response.completed", "error"):
                    events.append(json.loads((await socket.receive(timeout=30)).data))
                return events

            warm = await call(create(generate=False, input="remember pineapple"))
            real = await call(create(input="say hello", previous_response_id=warm[-1]["response"]["id"]))
            unknown = await call(create(previous_response_id="resp_elsewhere"))
            return warm, real, unknown

    warm, real, unknown = asyncio.run(run())
    assert [e["type"] for e in warm] == ["response.created", "response.completed"]
    assert warm[-1]["response"]["output"] == []
    assert real[-1]["type"] == "response.completed"
    assert unknown[-1]["type"] == "error" and unknown[-1]["error"]["code"] == "previous_response_not_found"
    chats = [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"]
    assert len(chats) == 1 and [m["content"] for m in chats[0]["messages"]] == ["remember pineapple", "say hello"]
    assert "generate" not in chats[0] and len(usage_rows(hub)) == 1


def test_previous_response_id_continues_the_sockets_last_response(hub):
    async def run() -> list[dict]:
        headers = {"Authorization": f"Bearer {hub.key}"}
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(hub), headers=headers) as socket:
            await socket.send_str(json.dumps(create(input="remember pineapple")))
            done = None
            while done is None:
                event = json.loads((await socket.receive(timeout=30)).data)
                if event["type"] == "response.completed":
                    done = event["response"]["id"]
            await socket.send_str(
                json.dumps(create(input=[{"role": "user", "content": "what fruit?"}], previous_response_id=done))
            )
            events = []
            while not events or events[-1]["type"] not in ("response.completed", "error"):
                events.append(json.loads((await socket.receive(timeout=30)).data))
            return events

    events = asyncio.run(run())
    assert events[-1]["type"] == "response.completed"
    sent = [r["body"]["messages"] for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"][-1]
    said = [m.get("content") for m in sent]
    assert said[0] == "remember pineapple" and sent[1]["role"] == "assistant" and said[-1] == "what fruit?"
    assert len(usage_rows(hub)) == 2


def test_the_key_is_checked_again_on_every_call(hub, cli):
    key = hub.new_user("ws@example.com", "5")
    key_id = cli.json("keys", "list", "--user", "ws@example.com")[0]["id"]
    wait_for(lambda: hub.key_works(key))

    async def run() -> tuple[list[dict], list[dict], dict]:
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(hub), headers=headers) as socket:

            async def call() -> list[dict]:
                await socket.send_str(json.dumps(create()))
                events: list[dict] = []
                while not events or events[-1]["type"] not in ("response.completed", "error"):
                    frame = await socket.receive(timeout=30)
                    if frame.type != aiohttp.WSMsgType.TEXT:
                        return [*events, {"type": "closed"}]
                    events.append(json.loads(frame.data))
                return events

            first = await call()
            await asyncio.to_thread(cli, "users", "topup", "ws@example.com", "-5", "--adjust", "--note", "empty it")
            await asyncio.to_thread(wait_for, lambda: not hub.key_works(key) or True)
            await asyncio.sleep(1.5)
            broke = await call()
            await asyncio.to_thread(cli, "keys", "revoke", key_id)
            await asyncio.sleep(1.5)
            revoked = await call()
            closing = await socket.receive(timeout=10)
            return first, broke, {"events": revoked, "close": closing.type.name}

    first, broke, revoked = asyncio.run(run())
    assert first[-1]["type"] == "response.completed"
    assert broke[-1]["type"] == "error" and broke[-1]["status"] == 402, broke
    assert revoked["events"][-1]["type"] == "error" and revoked["events"][-1]["status"] == 401
    assert revoked["close"] in ("CLOSE", "CLOSED", "CLOSING")


def test_what_no_socket_serves_is_a_426_or_the_usual_refusal(hub, cli):
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    auth = {"Authorization": f"Bearer {hub.key}"}
    other = raw_request(
        "GET",
        f"http://127.0.0.1:{hub.port}/v1/chat/completions",
        headers={**upgrade, "Authorization": f"Bearer {hub.key}"},
    )
    assert other.status == 426 and "over a WebSocket" in other.json()["error"]["message"]
    bad_key = raw_request(
        "GET", f"http://127.0.0.1:{hub.port}/v1/responses", headers={**upgrade, "Authorization": "Bearer sk-hp-nope"}
    )
    assert bad_key.status == 401
    plain = raw_request(
        "GET", f"http://127.0.0.1:{hub.port}/v1/responses", headers={"Authorization": f"Bearer {hub.key}"}
    )
    assert plain.status == 405
    config = hub.home / "config.toml"
    config.write_text(config.read_text().replace("websocket = true", "websocket = false"))
    hub.stop()
    hub.start()
    refused = raw_request("GET", f"http://127.0.0.1:{hub.port}/v1/responses", headers={**upgrade, **auth})
    assert refused.status == 426 and refused.headers["upgrade"] == "HTTP/1.1"


def test_a_message_too_large_closes_the_socket_and_odd_messages_get_error_events(hub):
    async def run() -> tuple[list[str], str]:
        headers = {"Authorization": f"Bearer {hub.key}"}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(hub), headers=headers, max_msg_size=0) as socket,
        ):
            answers = []
            for odd in ("not json", json.dumps({"type": "response.steer"}), json.dumps([1])):
                await socket.send_str(odd)
                answers.append(json.loads((await socket.receive(timeout=10)).data)["error"]["message"])
            try:
                await socket.send_str("x" * (17 * 1024 * 1024))
                frame = await socket.receive(timeout=10)
            except (aiohttp.ClientError, ConnectionError):
                return answers, "CLOSED"
            return answers, frame.type.name

    answers, closed = asyncio.run(run())
    assert "not valid JSON" in answers[0] and "response.steer" in answers[1]
    assert closed in ("CLOSE", "CLOSED", "ERROR")
    assert "Traceback" not in hub.log()


def test_an_idle_socket_is_closed(hub):
    config = hub.home / "config.toml"
    config.write_text(config.read_text().replace("websocket_idle = 300.0", "websocket_idle = 1"))
    hub.stop()
    hub.start()

    async def run() -> str:
        headers = {"Authorization": f"Bearer {hub.key}"}
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(hub), headers=headers) as socket:
            frame = await socket.receive(timeout=10)
            return frame.type.name

    assert asyncio.run(run()) in ("CLOSE", "CLOSED")


def test_kill_9_mid_socket_loses_no_money(hub):
    """The socket's call is an HTTP call of the server to itself: journaled before it goes upstream,
    settled at the next start like any other."""
    hub.upstream.stream_delay = 0.5
    started = threading.Event()

    async def run() -> None:
        headers = {"Authorization": f"Bearer {hub.key}"}
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(hub), headers=headers) as socket:
                await socket.send_str(json.dumps(create()))
                while True:
                    frame = await socket.receive(timeout=30)
                    if frame.type != aiohttp.WSMsgType.TEXT:
                        return
                    if json.loads(frame.data)["type"] == "response.output_text.delta":
                        started.set()
        except (aiohttp.ClientError, TimeoutError):
            return

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    assert started.wait(30)
    hub.stop(signal.SIGKILL)
    thread.join(10)
    hub.upstream.stream_delay = 0
    hub.start()
    with hub.db() as db:
        rows = db.execute("SELECT status, estimated, cost > 0 FROM usage").fetchall()
        open_holds = db.execute("SELECT count(*) FROM reservations").fetchone()[0]
    assert rows == [("interrupted", 1, 1)] and open_holds == 0
    balance, ledger = balance_and_ledger(hub, "dev@example.com")
    assert balance == ledger


def test_ip_rules_hold_for_the_loopback_call_and_its_header_cannot_be_forged(hub, cli):
    key = cli.json("keys", "create", "--user", "dev@example.com", "--name", "ip", "--allow-ip", "10.9.9.9")["key"]
    url = f"http://127.0.0.1:{hub.port}/v1/responses"
    body = json.dumps({"model": "deepseek-chat", "input": "hi"}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    wait_for(lambda: raw_request("POST", url, body, headers).status == 403)
    forged = {**headers, "X-Hubproxy-Socket-Client": "10.9.9.9", "X-Hubproxy-Socket-Token": "guess"}
    assert raw_request("POST", url, body, forged).status == 403
    token = (hub.home / "admin-token").read_text().strip()
    trusted = {**forged, "X-Hubproxy-Socket-Token": token}
    assert raw_request("POST", url, body, trusted).status == 200


@pytest.fixture
def socket_hub(home, cli, upstream):
    """The hub, with a Responses provider whose streamed calls go over its own WebSocket."""
    configure(cli, upstream, native=True)
    cli(
        *(
            "providers",
            "add",
            "oai-ws",
            "--base-url",
            upstream.base_url,
            "--api",
            "responses",
            "--api-key-env",
            "UPSTREAM_KEY",
            "--responses-socket",
            "--replace",
        )
    )
    prices = ("--input-price", "0.27", "--output-price", "1.10")
    cli("models", "add", "gpt-socket", "--provider", "oai-ws", "--upstream-model", "gpt-native", *prices)
    cli("models", "add", "socket-limited", "--provider", "oai-ws", "--upstream-model", "rate-limited", *prices)
    yield from serving(home, cli, upstream)


def test_streamed_calls_go_over_the_providers_socket_kept_open_and_are_billed_alike(socket_hub):
    client = socket_hub.client()
    for _ in range(2):
        events = list(client.responses.create(model="gpt-socket", input="say hello", stream=True))
        assert events[-1].type == "response.completed" and events[-1].response.output_text == REPLY
    assert socket_hub.upstream.socket_connects == 1, "the second call took the open socket"
    sent = [r for r in socket_hub.upstream.requests if r["path"] == "ws:/v1/responses"]
    assert len(sent) == 2 and sent[0]["body"]["type"] == "response.create" and "stream" not in sent[0]["body"]
    assert sent[0]["headers"]["Authorization"] == f"Bearer {socket_hub.upstream.api_key}"
    plain = client.responses.create(model="gpt-socket", input="say hello")  # not streamed: over HTTP
    assert plain.output_text == REPLY and socket_hub.upstream.requests[-1]["path"] == "/v1/responses"
    rows = usage_rows(socket_hub)
    assert [r[:3] for r in rows] == [("gpt-socket", "/responses", "ok")] * 3 and all(r[5] > 0 for r in rows)
    balance, ledger = balance_and_ledger(socket_hub, "dev@example.com")
    assert balance == ledger
    (through,) = asyncio.run(exchange(socket_hub, [create("gpt-socket")]))  # a client's socket to an upstream's
    assert through[-1]["type"] == "response.completed"


def test_an_error_event_from_the_providers_socket_is_the_calls_http_error(socket_hub):
    with pytest.raises(openai.RateLimitError) as refused:
        list(socket_hub.client().responses.create(model="socket-limited", input="hi", stream=True))
    assert "slow down" in str(refused.value)
    assert [(r[2], r[5]) for r in usage_rows(socket_hub)] == [("upstream_error", 0)]
