"""The seeds' account API: register, log in, own keys only, balance and usage, legacy dashboard."""

from __future__ import annotations

import json
import tomllib

import openai
import pytest
import tomli_w

from tests.conftest import BACKENDS, HELLO, raw_request

pytestmark = BACKENDS  # the account API on SQLite and on PostgreSQL


@pytest.fixture
def accounts_gateway(gateway):
    """The gateway with `[server] accounts_api = true` and a $1 signup grant."""
    gateway.stop()
    path = gateway.home / "config.toml"
    config = tomllib.loads(path.read_text())
    config["server"]["accounts_api"] = True
    config["billing"]["signup_grant"] = "1"
    path.write_text(tomli_w.dumps(config))
    gateway.start()
    gateway.root = f"http://127.0.0.1:{gateway.port}"
    return gateway


def call(accounts_gateway, method: str, path: str, body: dict | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return raw_request(
        method, accounts_gateway.root + path, body=json.dumps(body).encode() if body else None, headers=headers
    )


def register(accounts_gateway, email: str, password: str = "secret123") -> dict:
    resp = call(accounts_gateway, "POST", "/auth/register", {"email": email, "password": password})
    assert resp.status == 201, resp.body
    return resp.json()


def test_account_api_is_off_by_default(gateway):
    resp = raw_request("POST", f"http://127.0.0.1:{gateway.port}/auth/register", body=b"{}")
    assert resp.status == 404


def test_register_gives_token_key_and_grant(accounts_gateway):
    data = register(accounts_gateway, "new@example.com")
    assert set(data) == {"token", "api_key", "balance", "message"}
    assert data["balance"] == 1.0 and data["token"].count(".") == 2
    answer = accounts_gateway.client(key=data["api_key"]).chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert answer.usage.completion_tokens == 6
    with accounts_gateway.db() as db:
        stored = db.execute("SELECT password_hash FROM users WHERE email = 'new@example.com'").fetchone()[0]
        kinds = db.execute("SELECT kind FROM ledger WHERE user_id = 2 ORDER BY id").fetchall()
    assert stored.startswith("scrypt$") and "secret123" not in stored
    assert kinds[0] == ("signup_grant",)


@pytest.mark.parametrize(
    "body,status",
    [
        ({"email": "x@example.com", "password": "12345"}, 400),
        ({"email": "not-an-email", "password": "secret123"}, 400),
        ({"email": "x@example.com"}, 400),
    ],
)
def test_bad_registrations_are_refused(accounts_gateway, body, status):
    resp = call(accounts_gateway, "POST", "/auth/register", body)
    assert resp.status == status and "error" in resp.json()


def test_registering_twice_is_a_conflict(accounts_gateway):
    register(accounts_gateway, "twice@example.com")
    assert (
        call(accounts_gateway, "POST", "/auth/register", {"email": "twice@example.com", "password": "secret123"}).status
        == 409
    )


def test_login_checks_the_password_and_is_rate_limited(accounts_gateway):
    register(accounts_gateway, "login@example.com")
    ok = call(accounts_gateway, "POST", "/auth/login", {"email": "login@example.com", "password": "secret123"})
    assert ok.status == 200 and set(ok.json()) == {"token", "balance"}
    wrong = call(accounts_gateway, "POST", "/auth/login", {"email": "login@example.com", "password": "nope-nope"})
    assert wrong.status == 401
    statuses = [
        call(accounts_gateway, "POST", "/auth/login", {"email": "login@example.com", "password": "guess"}).status
        for _ in range(5)
    ]
    assert statuses[-1] == 429


def test_keys_are_managed_with_the_token_and_shown_once(accounts_gateway):
    token = register(accounts_gateway, "keys@example.com")["token"]
    created = call(accounts_gateway, "POST", "/api-keys?name=production", token=token)
    assert created.status == 201
    full = created.json()["key"]
    listed = call(accounts_gateway, "GET", "/api-keys", token=token).json()["data"]
    assert {k["name"] for k in listed} == {"default", "production"}
    assert full not in str(listed)
    accounts_gateway.client(key=full).models.list()
    assert (
        call(accounts_gateway, "DELETE", f"/api-keys/{created.json()['id']}", token=token).json()["status"] == "revoked"
    )
    with pytest.raises(openai.AuthenticationError):
        accounts_gateway.client(key=full).models.list()
    assert call(accounts_gateway, "GET", "/api-keys", token=full).status == 401, "an API key is not a login token"


def test_a_user_cannot_see_or_revoke_anothers_keys(accounts_gateway):
    alice = register(accounts_gateway, "alice@example.com")
    bob = register(accounts_gateway, "bob@example.com")
    alice_keys = call(accounts_gateway, "GET", "/api-keys", token=alice["token"]).json()["data"]
    bob_keys = call(accounts_gateway, "GET", "/api-keys", token=bob["token"]).json()["data"]
    assert {k["id"] for k in alice_keys}.isdisjoint(k["id"] for k in bob_keys)
    for key in alice_keys:
        assert call(accounts_gateway, "DELETE", f"/api-keys/{key['id']}", token=bob["token"]).status == 404
    assert call(accounts_gateway, "DELETE", f"/api-keys/{accounts_gateway.key_id}", token=bob["token"]).status == 404
    accounts_gateway.client(key=alice["api_key"]).models.list()
    forged = alice["token"][:-4] + ("AAAA" if not alice["token"].endswith("AAAA") else "BBBB")
    assert call(accounts_gateway, "GET", "/api-keys", token=forged).status == 401


def test_balance_and_usage_accept_token_or_key(accounts_gateway):
    data = register(accounts_gateway, "bill@example.com")
    accounts_gateway.client(key=data["api_key"]).chat.completions.create(model="deepseek-chat", messages=HELLO)
    for credential in (data["token"], data["api_key"]):
        balance = call(accounts_gateway, "GET", "/billing/balance", token=credential).json()
        assert balance["email"] == "bill@example.com" and 0.99 < balance["balance"] < 1.0
    records = call(accounts_gateway, "GET", "/billing/usage?limit=10", token=data["token"]).json()["data"]
    assert len(records) == 1
    assert records[0]["model"] == "deepseek-chat" and records[0]["completion_tokens"] == 6
    assert records[0]["cost"] == pytest.approx((4 * 0.27 + 6 * 1.10) / 1e6)
    other = register(accounts_gateway, "other@example.com")
    assert call(accounts_gateway, "GET", "/billing/usage", token=other["token"]).json()["data"] == []


def test_legacy_dashboard_endpoints(accounts_gateway):
    data = register(accounts_gateway, "dash@example.com")
    accounts_gateway.client(key=data["api_key"]).chat.completions.create(model="deepseek-chat", messages=HELLO)
    sub = call(accounts_gateway, "GET", "/v1/dashboard/billing/subscription", token=data["api_key"]).json()
    assert sub["object"] == "billing_subscription" and 0.99 < sub["hard_limit_usd"] < 1.0
    used = call(accounts_gateway, "GET", "/v1/dashboard/billing/usage", token=data["api_key"]).json()
    assert used["total_usage"] == pytest.approx((4 * 0.27 + 6 * 1.10) / 1e6 * 100)
