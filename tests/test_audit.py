"""The audit log: every change to users, keys, money, providers, models and plans, from the CLI (the
OS user), the dashboard (the signed-in email or "admin link") and the account API (the token's user),
with before and after and never a secret; `audit verify` finds a row edited or deleted behind its back.
On SQLite and PostgreSQL."""

from __future__ import annotations

import getpass
import json
import urllib.parse

from tests.conftest import BACKENDS, open_database, raw_request, run_cli, wait_for
from tests.test_dashboard import FORM, admin_link, base, csrf_in

pytestmark = BACKENDS


def log(cli, *filters: str) -> list[dict]:
    return cli.json("audit", *filters)


def test_every_cli_change_is_logged_with_the_os_user_and_no_secret(cli, home):
    cli("init")
    cli(*("providers", "add", "corp", "--base-url", "https://corp.test/v1", "--api-key-env", "CORP_KEY"))
    cli(
        *("providers", "add", "corp", "--base-url", "https://corp.test/v1", "--api-key-env", "CORP_KEY"),
        "--header",
        "X-Secret: hunter2-header",
        "--replace",
    )
    cli("models", "add", "m", "--provider", "corp", "--input-price", "1", "--output-price", "2")
    cli("users", "add", "a@example.com", "--balance", "5")
    cli("users", "topup", "a@example.com", "3", "--note", "invoice 7")
    created = cli.json("keys", "create", "--user", "a@example.com", "--name", "ci", "--spend-limit", "500")
    cli("keys", "update", created["id"], "--spend-limit", "20")
    cli("keys", "revoke", created["id"])
    cli("users", "disable", "a@example.com")
    entries = log(cli)
    actions = [e["action"] for e in reversed(entries)]
    assert actions == [
        "provider.add",
        "provider.change",
        "model.add",
        "user.add",
        "money.topup",
        "key.create",
        "key.update",
        "key.revoke",
        "user.status",
    ]
    assert {e["actor"] for e in entries} == {getpass.getuser()}
    update = next(e for e in entries if e["action"] == "key.update")
    assert json.loads(update["before"]) == {"spend_limit": 500_000_000_000_000}
    assert json.loads(update["after"]) == {"spend_limit": 20_000_000_000_000}, (
        "who gave this key its cap, and what it was"
    )
    text = json.dumps(entries)
    assert created["key"] not in text and "hunter2" not in text and "X-Secret" in text
    assert [e["action"] for e in log(cli, "--target", "a@example.com")][-1] == "user.add"
    assert log(cli, "--actor", "nobody") == []
    assert "holds: 9 rows" in cli("audit", "verify").stdout


def test_an_edited_or_deleted_row_breaks_the_chain(cli, home):
    cli("init")
    for number in range(4):
        cli("users", "add", f"u{number}@example.com", "--balance", "1")
    assert cli("audit", "verify").exit_code == 0
    with open_database(home) as db:
        db.execute("UPDATE audit SET after = ? WHERE id = 2", ('{"balance": 999000000000000}',))
    said = cli("audit", "verify", ok=False)
    assert said.exit_code == 1 and "row 2 does not match its hash" in said.output and said.output.count("\n") == 1
    with open_database(home) as db:
        rows = db.execute("SELECT id, after FROM audit ORDER BY id").fetchall()
        original = json.dumps({"balance": 1_000_000_000_000, "plan": None}, separators=(",", ":"), sort_keys=True)
        db.execute("UPDATE audit SET after = ? WHERE id = 2", (original,))
    assert cli("audit", "verify").exit_code == 0, rows
    with open_database(home) as db:
        db.execute("DELETE FROM audit WHERE id = 3")
    said = cli("audit", "verify", ok=False)
    assert said.exit_code == 1 and "row 4 does not match" in said.output


def test_the_dashboard_and_the_account_api_name_their_actor(gateway, cli):
    link = admin_link(cli, gateway)
    cookie = raw_request("GET", link).headers["set-cookie"].split(";")[0]
    csrf = csrf_in(raw_request("GET", base(gateway) + "/admin/users", headers={"Cookie": cookie}).body.decode())
    body = urllib.parse.urlencode({"csrf": csrf, "amount": "2", "kind": "topup", "note": "from the page"}).encode()
    assert raw_request("POST", base(gateway) + "/admin/users/1/balance", body, {**FORM, "Cookie": cookie}).status == 303
    page = raw_request("GET", base(gateway) + "/admin/audit?actor=admin+link", headers={"Cookie": cookie}).body.decode()
    assert "money.topup" in page and "The chain holds" in page
    config = gateway.home / "config.toml"
    config.write_text(config.read_text().replace("accounts_api = false", "accounts_api = true"))
    gateway.stop()
    gateway.start()
    api = f"http://127.0.0.1:{gateway.port}"
    signup = {"email": "self@example.com", "password": "s3cret-pw"}
    registered = raw_request(
        "POST", api + "/auth/register", json.dumps(signup).encode(), {"Content-Type": "application/json"}
    )
    assert registered.status == 201
    token = registered.json()["token"]
    made = raw_request("POST", api + "/api-keys?name=laptop", b"", {"Authorization": f"Bearer {token}"})
    assert made.status in (200, 201)
    wait_for(lambda: any(e["action"] == "key.create" and e["actor"] == "self@example.com" for e in log(cli)))
    by_actor = {(e["action"], e["actor"]) for e in log(cli)}
    assert ("money.topup", "admin link") in by_actor and ("user.add", "self@example.com") in by_actor
    assert run_cli(gateway.home, "audit", "verify").returncode == 0
