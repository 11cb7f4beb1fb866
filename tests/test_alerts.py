"""Budget alerts: 50%, 80% and 100% of a user's money since the last top-up, and of a key's spend cap,
each sent exactly once per period to a real webhook receiver (generic JSON, HMAC-signed) and a real
SMTP server (aiosmtpd) on loopback — with 50 calls at once and with `--workers 2` —, retried after a
receiver comes back (also across a restart), never slowing a call; `alerts test` sends a sample."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from tests.conftest import Gateway, configure, free_port, raw_request, run_cli, wait_for
from tests.test_dashboard import base, session_cookie, set_password

SECRET = "alert-hmac-key"


class Receiver:
    """A webhook on 127.0.0.1 that records each alert and checks its signature; `down` refuses them."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.bad_signatures = 0
        self.down = False
        self.port = free_port()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        ready.set()
        loop.run_forever()

    async def hook(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        body = await request.read()
        wanted = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if request.headers.get("X-Hubproxy-Signature") != wanted:
            self.bad_signatures += 1
        self.alerts.append(json.loads(body)["alert"])
        return web.Response(status=204)

    def crossings(self, kind: str) -> list[int]:
        return sorted(a["threshold"] for a in self.alerts if a["kind"] == kind)


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content.decode(errors="replace"))
        return "250 OK"


@pytest.fixture
def receivers():
    hook = Receiver()
    box = Mailbox()
    smtp = Controller(box, hostname="127.0.0.1", port=free_port())
    smtp.start()
    yield hook, box, smtp.port
    smtp.stop()


def alerting_home(home, cli, upstream, hook: Receiver, smtp_port: int) -> None:
    configure(cli, upstream)
    config = home / "config.toml"
    config.write_text(
        config.read_text() + f'\n[alerts]\nwebhook = "http://127.0.0.1:{hook.port}/hook"\nwebhook_format = "json"\n'
        f'webhook_secret_env = "ALERT_SECRET"\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp_port}\n'
        'smtp_from = "hubproxy@example.com"\nsmtp_to = ["admin@example.com"]\n'
    )


def fifty_expensive_calls(gw: Gateway, key: str) -> None:
    """50 calls at once that each bill 2,000 output tokens ($0.0022) whatever the limit held."""

    async def fire():
        client = gw.async_client(key=key)
        calls = [
            client.chat.completions.create(
                model="long-answer", messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
            for _ in range(50)
        ]
        try:
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    asyncio.run(fire())


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_each_threshold_is_sent_once_to_each_receiver(home, cli, upstream, receivers, monkeypatch, workers):
    hook, box, smtp_port = receivers
    alerting_home(home, cli, upstream, hook, smtp_port)
    monkeypatch.setenv("ALERT_SECRET", SECRET)
    gw = Gateway(home, cli, upstream, free_port())
    gw.key = gw.new_user("dev@example.com", "5")
    key = gw.new_user("spender@example.com", "0.05")
    capped = cli.json("keys", "create", "--user", "dev@example.com", "--name", "capped", "--spend-limit", "0.04")["key"]
    gw.start(*(["--workers", "2"] if workers == 2 else []))
    try:
        wait_for(lambda: gw.key_works(key) and gw.key_works(capped))
        fifty_expensive_calls(gw, key)
        fifty_expensive_calls(gw, capped)
        wait_for(
            lambda: hook.crossings("balance") == [50, 80, 100] and hook.crossings("key_cap") == [50, 80, 100],
            timeout=20,
        )
        wait_for(lambda: len(box.messages) == 6, timeout=20)
        time.sleep(5)  # two more scans: nothing is sent twice
        assert hook.crossings("balance") == [50, 80, 100] and hook.crossings("key_cap") == [50, 80, 100]
        assert len(box.messages) == 6 and hook.bad_signatures == 0
        assert all(a["email"] in ("spender@example.com", "dev@example.com") for a in hook.alerts)
        assert any("has used 80% of the $0.05" in m for m in box.messages)
        assert "budget alert:" in gw.log()
        set_password(cli, "spender@example.com")
        cookie, _ = session_cookie(gw, "spender@example.com")
        overview = raw_request("GET", base(gw) + "/", headers={"Cookie": cookie}).body.decode()
        assert 'role="alert"' in overview and "has used 100% of the $0.05" in overview  # the dashboard's banner
        scraped = raw_request("GET", f"http://127.0.0.1:{gw.port}/metrics").body.decode()
        assert 'hubproxy_alerts_total{kind="balance",receiver="webhook"} 3' in scraped
        metrics = run_cli(home, "alerts", "test", env={"ALERT_SECRET": SECRET})
        assert metrics.returncode == 0 and "webhook: sent" in metrics.stdout and "email: sent" in metrics.stdout
    finally:
        gw.stop()


def test_a_dead_receiver_costs_the_calls_nothing_and_gets_its_alerts_after_a_restart(
    home, cli, upstream, receivers, monkeypatch
):
    hook, box, smtp_port = receivers
    hook.down = True
    alerting_home(home, cli, upstream, hook, smtp_port)
    monkeypatch.setenv("ALERT_SECRET", SECRET)
    gw = Gateway(home, cli, upstream, free_port())
    gw.key = gw.new_user("dev@example.com", "5")
    key = gw.new_user("spender@example.com", "0.05")
    gw.start()
    try:
        wait_for(lambda: gw.key_works(key))
        started = time.monotonic()
        fifty_expensive_calls(gw, key)
        assert time.monotonic() - started < 15
        wait_for(lambda: len(box.messages) == 3, timeout=20)  # email works, the webhook does not
        with gw.db() as db:
            waiting = db.execute(
                "SELECT count(*) FROM alerts WHERE receiver = 'webhook' AND sent_at IS NULL AND attempts > 0"
            ).fetchone()[0]
        assert waiting == 3 and hook.alerts == []
        gw.stop()
        hook.down = False
        with gw.db() as db:
            db.execute("UPDATE alerts SET next_try = 0 WHERE sent_at IS NULL")  # no need to wait out the backoff
        gw.start()
        wait_for(lambda: hook.crossings("balance") == [50, 80, 100], timeout=20)
        assert len(box.messages) == 3, "what was sent is not sent again"
    finally:
        gw.stop()


def test_alert_settings_are_checked_and_a_test_without_receivers_says_so(cli):
    cli("init")
    config = cli.home / "config.toml"
    config.write_text(config.read_text() + "\n[alerts]\nthresholds = [50, 120]\n")
    said = cli("alerts", "test", ok=False)
    assert said.exit_code == 1 and "thresholds must be a list of percents from 1 to 100" in said.output
    config.write_text(config.read_text().replace("thresholds = [50, 120]", "thresholds = [80]"))
    said = cli("alerts", "test", ok=False)
    assert said.exit_code == 1 and "no receiver is configured" in said.output


def test_a_users_a_keys_and_a_plans_own_thresholds(home, cli, upstream, receivers, monkeypatch):
    hook, _, smtp_port = receivers
    alerting_home(home, cli, upstream, hook, smtp_port)
    config = home / "config.toml"
    config.write_text(config.read_text() + "\n[plans.team]\nalert_thresholds = [25]\n")
    monkeypatch.setenv("ALERT_SECRET", SECRET)
    gw = Gateway(home, cli, upstream, free_port())
    gw.key = gw.new_user("dev@example.com", "5")
    own = gw.new_user("own@example.com", "0.05")
    planned = gw.new_user("planned@example.com", "0.05")
    cli("users", "update", "planned@example.com", "--plan", "team")
    assert "alerts at 30%" in cli("alerts", "set", "--user", "own@example.com", "30").stdout
    capped = cli.json("keys", "create", "--user", "dev@example.com", "--name", "capped", "--spend-limit", "0.04")
    cli("alerts", "set", "--key", capped["id"], "90")
    bad = cli("alerts", "set", "--user", "own@example.com", "150", ok=False)
    assert bad.exit_code == 1 and "percents from 1 to 100" in bad.output
    gw.start()
    try:
        for key in (own, planned, capped["key"]):
            wait_for(lambda k=key: gw.key_works(k))
            fifty_expensive_calls(gw, key)
        wait_for(lambda: len(hook.alerts) == 3, timeout=20)
        time.sleep(4)
        got = sorted((a["email"], a["kind"], a["threshold"]) for a in hook.alerts)
        assert got == [
            ("dev@example.com", "key_cap", 90),
            ("own@example.com", "balance", 30),
            ("planned@example.com", "balance", 25),
        ]
        assert any(e["action"] == "alerts.thresholds" for e in cli.json("audit"))
    finally:
        gw.stop()
