"""The web dashboard, driven in Debian's Chromium through Playwright against the real server.

A user logs in, creates a key and sees it once, calls the API with it through the OpenAI SDK and
finds the call in the usage log, the balance lower, and the CSV export; the admin logs in with the
one-time link, tops a user up and watches the live feed; a user cannot reach admin pages or another
user's data. Each page's screenshot goes to HUBPROXY_SCREENSHOTS (the README's PNGs) when it is set.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import random
import re
import shutil
import time
import tomllib
import urllib.parse
from pathlib import Path

import pytest
import tomli_w

from bench.history import seed_history
from hubproxy.cli.connect import TOOLS
from hubproxy.money import format_usd
from tests.conftest import BACKENDS, HELLO, raw_request, wait_for
from tests.fake_upstream import REPLY

CHROMIUM = os.environ.get("HUBPROXY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run installs Debian's chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def shot(page, name: str, tmp_path: Path) -> None:
    """A full-page screenshot; kept for the README when HUBPROXY_SCREENSHOTS names a folder."""
    folder = Path(os.environ.get("HUBPROXY_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def base(gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


def set_password(cli, email: str) -> None:
    """A new password ends the user's sessions once the server's change feed shows it (within a
    second): wait that out, or the session made next would be ended by it."""
    cli("users", "set-password", email, input=PASSWORD + "\n")
    time.sleep(1.5)


def log_in(page, gateway, email: str) -> None:
    page.goto(base(gateway) + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base(gateway) + "/")


def admin_link(cli, gateway) -> str:
    out = cli("dashboard", "--base-url", base(gateway)).stdout
    return re.search(r"http://\S+", out).group(0)


def balance_of(gateway, email: str) -> int:
    with gateway.db() as db:
        return db.execute("SELECT balance FROM users WHERE email = ?", (email,)).fetchone()[0]


def csrf_in(html: str) -> str:
    """The CSRF token a page's forms carry."""
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def post_login(gateway, fields: dict, headers: dict | None = None):
    """The login form posted as a browser posts it: with the token and cookie its page gave."""
    form_page = raw_request("GET", base(gateway) + "/login", headers=headers)
    cookie = form_page.headers["set-cookie"].split(";")[0]
    body = urllib.parse.urlencode({**fields, "csrf": csrf_in(form_page.body.decode())}).encode()
    return raw_request("POST", base(gateway) + "/login", body, {**FORM, **(headers or {}), "Cookie": cookie})


def session_cookie(gateway, email: str) -> tuple[str, str]:
    """Log in over plain HTTP: the cookie and the CSRF token the overview's forms carry."""
    answer = post_login(gateway, {"email": email, "password": PASSWORD})
    assert answer.status == 303, answer.body
    cookie = answer.headers["set-cookie"].split(";")[0]
    page = raw_request("GET", base(gateway) + "/keys", headers={"Cookie": cookie}).body.decode()
    return cookie, csrf_in(page)


def seeded(gateway, cli, rows: int = 3000) -> None:
    """A month of calls for the charts (written into the database while the server is stopped)."""
    gateway.stop()
    seed_history(gateway.home / "hubproxy.db", rows)
    gateway.start()


def test_a_user_logs_in_creates_a_key_calls_and_sees_the_call(browser, gateway, cli, tmp_path):
    set_password(cli, "dev@example.com")
    cli("users", "add", "ops@example.com", "--balance", "20")
    cli("keys", "create", "--user", "ops@example.com", "--name", "ci")
    seeded(gateway, cli)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(base(gateway) + "/usage")
    assert page.url.startswith(base(gateway) + "/login")
    shot(page, "login", tmp_path)
    log_in(page, gateway, "dev@example.com")
    before = balance_of(gateway, "dev@example.com")
    assert page.locator("#balance").inner_text() == "$5.00"
    assert page.locator("svg.chart rect").count() > 20  # a month of spend and two days of hours drawn
    shot(page, "overview", tmp_path)

    page.click("nav >> text=Keys")
    page.fill("form[action='/keys'] input[name=name]", "laptop")
    page.fill("form[action='/keys'] input[name=rpm]", "600")
    page.click("form[action='/keys'] button[type=submit]")
    full = page.locator("#new-key").inner_text()
    assert re.fullmatch(r"sk-hp-\S+", full)
    line = page.locator("code", has_text="hubproxy connect claude-code --key - --base-url")
    assert line.count() == 1 and " --model " in line.inner_text() and "--model MODEL" not in line.inner_text()
    assert page.locator("code", has_text=f"--key {full}").count() == 0  # a key typed into argv shows in `ps`
    page.click("summary >> text=gemini-cli")
    gemini = page.locator("details.tool-setup", has_text="gemini-cli").locator("code").inner_text()
    assert f"GEMINI_API_KEY={full}" in gemini and f"GOOGLE_GEMINI_BASE_URL={base(gateway)}" in gemini
    assert page.locator("details.tool-setup summary").count() == len(TOOLS)  # every tool `connect` knows
    shot(page, "key-created", tmp_path)
    page.click("text=Back to the keys")
    assert full not in page.content()  # shown once: the list has it masked
    row = page.locator("tr", has_text="laptop")
    assert "rpm 600" in row.inner_text()
    shot(page, "keys", tmp_path)

    answer = gateway.client(key=full).chat.completions.create(model="deepseek-chat", messages=HELLO, max_tokens=50)
    assert answer.choices[0].message.content
    wait_for(lambda: balance_of(gateway, "dev@example.com") < before)
    page.click("nav >> text=Usage")
    assert page.locator("table.log tbody tr").count() == 50 and page.locator("#older").count() == 1
    shot(page, "usage", tmp_path)
    page.click("#older")
    assert page.locator("table.log tbody tr").count() == 50
    laptop = page.locator("select[name=key] option", has_text="laptop").get_attribute("value")
    page.select_option("select[name=key]", value=laptop)
    page.click("form.filters button[type=submit]")
    rows = page.locator("table.log tbody tr")
    assert rows.count() == 1 and "deepseek-chat" in rows.first.inner_text()
    assert "ops@example.com" not in page.content()

    with page.expect_download() as download:
        page.click("#csv")
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(exported) == 1 and exported[0]["model"] == "deepseek-chat"
    with gateway.db() as db:
        request_id, cost = db.execute(
            "SELECT request_id, cost FROM usage WHERE key_id = (SELECT id FROM api_keys WHERE name = 'laptop')"
        ).fetchone()
    assert exported[0]["request_id"] == request_id
    assert exported[0]["cost_usd"].rstrip("0") == f"{cost / 10**12:.12f}".rstrip("0")

    page.click("nav >> text=Overview")
    after = balance_of(gateway, "dev@example.com")
    assert after == before - cost
    shown = page.locator("#balance").inner_text()
    assert shown == f"${(after + 5 * 10**9) // 10**10 / 100:.2f}"  # rounded to cents for display
    context.close()


def test_the_admin_tops_up_a_user_and_watches_calls_live(browser, gateway, cli, tmp_path):
    seeded(gateway, cli)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    link = admin_link(cli, gateway)
    page.goto(link)
    page.wait_for_url(base(gateway) + "/")
    assert "everyone" in page.locator("h1").inner_text()
    shot(page, "admin-overview", tmp_path)
    again = raw_request("GET", link)
    assert again.status == 403  # the link logs in once

    page.click("nav >> text=Users")
    row = page.locator("tr[data-user='dev@example.com']")
    before = balance_of(gateway, "dev@example.com")
    row.locator("input[name=amount]").fill("2.50")
    row.locator("input[name=note]").fill("invoice 42")
    row.locator("button", has_text="Apply").click()
    page.wait_for_url(re.compile(r"/admin/users\?done="))
    assert balance_of(gateway, "dev@example.com") == before + 2_500_000_000_000
    assert page.locator("tr[data-user='dev@example.com'] .balance").inner_text() == "$7.5000"
    shot(page, "admin-users", tmp_path)
    page.click("nav >> text=Ledger")
    assert "invoice 42" in page.locator("table").inner_text()
    shot(page, "admin-ledger", tmp_path)
    page.click("nav >> text=Providers")
    assert "fake/deepseek-chat" in page.content()
    shot(page, "admin-providers", tmp_path)

    page.click("nav >> text=Live")
    wait_for(lambda: page.locator("#feed-state").inner_text() == "live", timeout=10)
    for _ in range(3):
        gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO, max_tokens=20)
    page.wait_for_selector("#feed tr:nth-child(3)", timeout=10_000)
    first = page.locator("#feed tr").first.inner_text()
    assert "dev@example.com" in first and "deepseek-chat" in first and "ok" in first
    assert "say hello" not in page.content()  # metadata only
    shot(page, "admin-live", tmp_path)
    context.close()


def test_a_phone_sized_dark_page_still_reads(browser, gateway, cli, tmp_path):
    set_password(cli, "dev@example.com")
    seeded(gateway, cli)
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = context.new_page()
    log_in(page, gateway, "dev@example.com")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing pushes the page sideways; wide tables scroll inside their card
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 23)"
    shot(page, "overview-phone-dark", tmp_path)
    context.close()


@BACKENDS
def test_a_user_sees_only_their_own_keys_calls_and_balance(gateway, cli):
    """Everything a user could try with their own session against another user's data."""
    set_password(cli, "dev@example.com")
    other_key = gateway.new_user("other@example.com", "9")
    other_id = cli.json("keys", "list", "--user", "other@example.com")[0]["id"]
    wait_for(lambda: gateway.key_works(other_key))
    gateway.client(key=other_key).chat.completions.create(model="deepseek-chat", messages=HELLO, max_tokens=20)
    gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO, max_tokens=20)
    with gateway.db() as db:
        theirs = db.execute(
            "SELECT request_id FROM usage WHERE user_id = (SELECT id FROM users WHERE email = ?)",
            ("other@example.com",),
        ).fetchone()[0]
    cookie, csrf = session_cookie(gateway, "dev@example.com")
    get = lambda path: raw_request("GET", base(gateway) + path, headers={"Cookie": cookie})  # noqa: E731
    for path in ("/", "/keys", "/usage", f"/usage?key={other_id}", "/usage?user=other%40example.com", "/usage.csv"):
        answer = get(path)
        assert answer.status == 200, path
        assert theirs.encode() not in answer.body, path
        assert f"<code>{other_id}</code>".encode() not in answer.body, path  # the query may echo the id, no row has it
        assert b"other@example.com" not in answer.body, path
    assert b"$5.00" in get("/").body and b"$9.00" not in get("/").body
    for path in ("/admin/users", "/admin/ledger", "/admin/providers", "/admin/live", "/admin/live/events"):
        assert get(path).status == 403, path
    for path, fields in (
        (f"/keys/{other_id}/revoke", {}),
        (f"/keys/{other_id}/rules", {"rpm": "1"}),
        ("/admin/users/2/balance", {"amount": "100", "kind": "topup"}),
        ("/admin/users/2/status", {"status": "disabled"}),
    ):
        body = urllib.parse.urlencode({"csrf": csrf, **fields}).encode()
        answer = raw_request("POST", base(gateway) + path, body, {**FORM, "Cookie": cookie})
        assert answer.status in (403, 404), (path, answer.status)
    assert gateway.key_works(other_key)
    assert cli.json("keys", "list", "--user", "other@example.com")[0]["rules"] == {}
    assert balance_of(gateway, "other@example.com") < 9 * 10**12


def test_sessions_cookies_csrf_and_login_limits(gateway, cli):
    set_password(cli, "dev@example.com")
    answer = post_login(gateway, {"email": "dev@example.com", "password": PASSWORD, "next": "//evil.example"})
    assert answer.status == 303 and answer.headers["location"] == "/"  # never off-site
    flags = answer.headers["set-cookie"]
    assert "HttpOnly" in flags and "SameSite=Strict" in flags and "Secure" not in flags  # plain HTTP here
    cookie = flags.split(";")[0]
    page = raw_request("GET", base(gateway) + "/keys", headers={"Cookie": cookie})
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # a form without the session's CSRF token changes nothing
    key_id = gateway.key_id
    for token in ("", "forged"):
        fields = urllib.parse.urlencode({"csrf": token}).encode()
        refused = raw_request("POST", base(gateway) + f"/keys/{key_id}/revoke", fields, {**FORM, "Cookie": cookie})
        assert refused.status == 403 and b"CSRF" in refused.body
    assert gateway.key_works(gateway.key)
    # logging out ends the session (a replayed cookie is a stranger)
    csrf = csrf_in(page.body.decode())
    out = raw_request("POST", base(gateway) + "/logout", f"csrf={csrf}".encode(), {**FORM, "Cookie": cookie})
    assert out.status == 303
    assert raw_request("GET", base(gateway) + "/keys", headers={"Cookie": cookie}).status == 303
    # guessing passwords: 5 tries per email and address a minute (the good one above was the first), then 429
    statuses = []
    for _ in range(6):
        statuses.append(post_login(gateway, {"email": "dev@example.com", "password": "nope-nope"}).status)
    assert statuses == [401] * 4 + [429, 429]
    # forged and malformed cookies and links are strangers, never errors
    for bad in ("x", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."):
        assert raw_request("GET", base(gateway) + "/keys", headers={"Cookie": f"hubproxy_session={bad}"}).status == 303
    for token in ("", "a.b", "a.1.c", "x" * 5000, "a.99999999999.00"):
        assert raw_request("GET", base(gateway) + f"/login/link?token={token}").status == 403


@pytest.mark.parametrize(
    "target",
    ["/%09/evil.example", "/%0A/evil.example", "/%0D%0A/evil.example", "/\\evil.example", "https://evil.example"],
)
def test_the_login_never_redirects_off_site_however_the_target_is_spelled(gateway, cli, target):
    set_password(cli, "dev@example.com")
    decoded = urllib.parse.unquote(target)
    answer = post_login(gateway, {"email": "dev@example.com", "password": PASSWORD, "next": decoded})
    assert answer.status == 303 and answer.headers["location"] == "/"
    form_page = raw_request("GET", base(gateway) + "/login?next=" + urllib.parse.quote(decoded, safe=""))
    assert re.search(r'name="next" value="/"', form_page.body.decode())


def test_a_login_form_posted_from_elsewhere_logs_nobody_in(gateway, cli):
    """Login CSRF: another site's page posting the form has neither this browser's login cookie nor
    the token tied to it."""
    set_password(cli, "dev@example.com")
    fields = {"email": "dev@example.com", "password": PASSWORD}
    bare = raw_request("POST", base(gateway) + "/login", urllib.parse.urlencode(fields).encode(), FORM)
    assert bare.status == 403 and "hubproxy_session" not in bare.headers.get("set-cookie", "")
    stolen_token = csrf_in(raw_request("GET", base(gateway) + "/login").body.decode())
    other_cookie = raw_request("GET", base(gateway) + "/login").headers["set-cookie"].split(";")[0]
    body = urllib.parse.urlencode({**fields, "csrf": stolen_token}).encode()
    mixed = raw_request("POST", base(gateway) + "/login", body, {**FORM, "Cookie": other_cookie})
    assert mixed.status == 403 and "hubproxy_session" not in mixed.headers.get("set-cookie", "")
    assert post_login(gateway, fields).status == 303


def test_bad_form_input_gets_a_page_saying_what_and_changes_nothing(gateway, cli):
    set_password(cli, "dev@example.com")
    cookie, csrf = session_cookie(gateway, "dev@example.com")
    keys_before = len(cli.json("keys", "list"))
    cases = [
        ("/keys", {"name": "bad name!"}, 400),
        ("/keys", {"rpm": "-3"}, 400),
        ("/keys", {"rpm": "1e9"}, 400),
        ("/keys", {"rpm": "99999999999999999999"}, 400),
        ("/keys", {"tpm": "١٢"}, 400),
        (f"/keys/{gateway.key_id}/rules", {"max_parallel": "99999999999999999999"}, 400),
        ("/keys", {"spend_limit": "abc"}, 400),
        ("/keys", {"budget_period": "year"}, 400),
        ("/keys", {"expires": "yesterday"}, 400),
        ("/keys", {"allow_ips": "300.1.1.1"}, 400),
        ("/keys", {"models": "a b c"}, 400),
        (f"/keys/{gateway.key_id}/rules", {}, 400),
        ("/keys/nope/revoke", {}, 404),
    ]
    for path, fields, status in cases:
        body = urllib.parse.urlencode({"csrf": csrf, **fields}).encode()
        answer = raw_request("POST", base(gateway) + path, body, {**FORM, "Cookie": cookie})
        assert answer.status == status, (path, fields, answer.status)
        assert b'class="note bad"' in answer.body
    for query in ("since=2026-13-01", "until=yesterday", "before=garbage", "status=%3Cscript%3E", "key=%00"):
        answer = raw_request("GET", base(gateway) + f"/usage?{query}", headers={"Cookie": cookie})
        assert answer.status in (200, 400), query
    odd = raw_request("POST", base(gateway) + "/keys", b"\xff\xfe", {**FORM, "Cookie": cookie})
    assert odd.status in (400, 403)
    as_json = {"Content-Type": "application/json", "Cookie": cookie}
    json_body = raw_request("POST", base(gateway) + "/keys", b"{}", as_json)
    assert json_body.status in (400, 403)
    assert len(cli.json("keys", "list")) == keys_before
    log = gateway.log()
    assert "Traceback" not in log and " 500 " not in log


@BACKENDS
def test_the_admin_form_refuses_bad_amounts(gateway, cli):
    link = admin_link(cli, gateway)
    answer = raw_request("GET", link)
    cookie = answer.headers["set-cookie"].split(";")[0]
    page = raw_request("GET", base(gateway) + "/admin/users", headers={"Cookie": cookie}).body.decode()
    csrf = csrf_in(page)
    before = balance_of(gateway, "dev@example.com")
    for fields in (
        {"amount": "-5", "kind": "topup"},
        {"amount": "0", "kind": "topup"},
        {"amount": "1.0000000000001", "kind": "topup"},
        {"amount": "lots", "kind": "adjustment"},
        {"amount": "5", "kind": "gift"},
        {"amount": "5", "kind": "topup", "note": "x" * 500},
    ):
        body = urllib.parse.urlencode({"csrf": csrf, **fields}).encode()
        refused = raw_request("POST", base(gateway) + "/admin/users/1/balance", body, {**FORM, "Cookie": cookie})
        assert refused.status == 400, fields
    body = urllib.parse.urlencode({"csrf": csrf, "amount": "-1.25", "kind": "adjustment", "note": "refund"}).encode()
    done = raw_request("POST", base(gateway) + "/admin/users/1/balance", body, {**FORM, "Cookie": cookie})
    assert done.status == 303
    assert balance_of(gateway, "dev@example.com") == before - 1_250_000_000_000
    nobody = raw_request("POST", base(gateway) + "/admin/users/99/balance", body, {**FORM, "Cookie": cookie})
    assert nobody.status == 404
    disable = urllib.parse.urlencode({"csrf": csrf, "status": "disabled"}).encode()
    raw_request("POST", base(gateway) + "/admin/users/1/status", disable, {**FORM, "Cookie": cookie})
    wait_for(lambda: not gateway.key_works(gateway.key))


def test_the_dashboard_can_be_turned_off(gateway, cli):
    gateway.stop()
    config = (gateway.home / "config.toml").read_text()
    (gateway.home / "config.toml").write_text(config + "\n[dashboard]\nenabled = false\n")
    gateway.start()
    assert raw_request("GET", base(gateway) + "/").status == 404
    assert raw_request("GET", base(gateway) + "/login").status == 404
    refused = cli("dashboard", ok=False)
    assert refused.exit_code != 0 and "dashboard is off" in refused.output


def test_a_user_changes_a_keys_rules_clears_one_and_revokes_it(gateway, cli):
    set_password(cli, "dev@example.com")
    cookie, csrf = session_cookie(gateway, "dev@example.com")

    def post(path: str, **fields: str):
        body = urllib.parse.urlencode({"csrf": csrf, **fields}, doseq=True).encode()
        return raw_request("POST", base(gateway) + path, body, {**FORM, "Cookie": cookie})

    assert post(f"/keys/{gateway.key_id}/rules", rpm="5", models="deepseek-chat", spend_limit="1.50").status == 303
    rules = cli.json("keys", "list")[0]["rules"]
    assert rules["rpm"] == 5 and rules["models"] == ["deepseek-chat"] and rules["spend_limit"] == "1.50"
    assert post(f"/keys/{gateway.key_id}/rules", clear=["rpm", "models"]).status == 303
    assert cli.json("keys", "list")[0]["rules"] == {"spend_limit": "1.50"}
    assert post(f"/keys/{gateway.key_id}/revoke").status == 303
    wait_for(lambda: not gateway.key_works(gateway.key))
    again = post(f"/keys/{gateway.key_id}/revoke")
    assert again.status == 409 and b"already revoked" in again.body


def test_with_workers_a_link_logs_in_once_and_a_logout_ends_the_admin_everywhere(gateway, cli):
    """Each new connection may reach either worker: the used link and the logout must hold on both."""
    gateway.stop()
    gateway.start("--workers", "2")
    link = admin_link(cli, gateway)
    first = raw_request("GET", link)
    assert first.status == 303
    assert {raw_request("GET", link).status for _ in range(8)} == {403}
    cookie = first.headers["set-cookie"].split(";")[0]
    pages = [raw_request("GET", base(gateway) + "/admin/users", headers={"Cookie": cookie}) for _ in range(8)]
    assert {page.status for page in pages} == {200}
    csrf = csrf_in(pages[0].body.decode())
    out = raw_request("POST", base(gateway) + "/logout", f"csrf={csrf}".encode(), {**FORM, "Cookie": cookie})
    assert out.status == 303
    after = [raw_request("GET", base(gateway) + "/admin/users", headers={"Cookie": cookie}) for _ in range(8)]
    assert {page.status for page in after} == {303}  # to the login page, from either worker


def test_the_admin_puts_a_user_on_a_plan(gateway, cli):
    gateway.stop()
    config = (gateway.home / "config.toml").read_text()
    (gateway.home / "config.toml").write_text(config + '\n[plans.team]\nrpm = 100\nprice_multiplier = "1.5"\n')
    gateway.start()
    cookie = raw_request("GET", admin_link(cli, gateway)).headers["set-cookie"].split(";")[0]
    page = raw_request("GET", base(gateway) + "/admin/users", headers={"Cookie": cookie}).body.decode()
    csrf = csrf_in(page)
    assert "<option >team</option>" in page.replace("<option>", "<option >")

    def set_plan(plan: str):
        body = urllib.parse.urlencode({"csrf": csrf, "plan": plan}).encode()
        return raw_request("POST", base(gateway) + "/admin/users/1/plan", body, {**FORM, "Cookie": cookie})

    assert set_plan("gold").status == 400
    assert set_plan("team").status == 303
    assert cli.json("users", "list")[0]["plan"] == "team"
    assert set_plan("").status == 303
    assert cli.json("users", "list")[0]["plan"] is None


def test_no_dashboard_route_answers_odd_input_with_a_500(gateway, cli):
    """Every route, as a stranger, a user and the admin, with odd queries, paths and forms."""

    set_password(cli, "dev@example.com")
    user, user_csrf = session_cookie(gateway, "dev@example.com")
    admin = raw_request("GET", admin_link(cli, gateway)).headers["set-cookie"].split(";")[0]
    page = raw_request("GET", base(gateway) + "/admin/users", headers={"Cookie": admin}).body.decode()
    admin_csrf = csrf_in(page)
    rng = random.Random(17)
    odd = [
        "",
        "%00",
        "%FF%FE",
        "'",
        '"><script>',
        "-1",
        "99999999999999999999",
        "1e9",
        "..%2F..",
        "%E2%80%AE",
        "a" * 3000,
    ]
    gets = ["/", "/keys", "/usage", "/usage.csv", "/admin/users", "/admin/ledger", "/admin/providers", "/login"]
    posts = [
        "/keys",
        f"/keys/{gateway.key_id}/rules",
        "/keys/x/revoke",
        "/admin/users/1/balance",
        "/admin/users/1/status",
        "/admin/users/1/plan",
        "/admin/users/abc/balance",
        "/login",
    ]
    fields = ["name", "models", "allow_ips", "spend_limit", "expires", "rpm", "amount", "kind", "note", "status"]
    params = ["user", "key", "model", "status", "since", "until", "before", "charges", "next", "token"]
    seen = set()
    for who, cookie, csrf in (("nobody", "", ""), ("user", user, user_csrf), ("admin", admin, admin_csrf)):
        headers = {"Cookie": cookie} if cookie else {}
        for _ in range(40):
            query = "&".join(f"{rng.choice(params)}={rng.choice(odd)}" for _ in range(rng.randint(1, 3)))
            answer = raw_request("GET", base(gateway) + rng.choice(gets) + "?" + query, headers=headers)
            seen.add(answer.status)
            assert answer.status < 500, (who, query)
            body = "&".join(f"{rng.choice(fields)}={rng.choice(odd)}" for _ in range(rng.randint(0, 4)))
            body += f"&csrf={csrf}" if rng.random() < 0.8 else ""
            answer = raw_request("POST", base(gateway) + rng.choice(posts), body.encode(), {**FORM, **headers})
            seen.add(answer.status)
            assert answer.status < 500, (who, body)
    assert {200, 303, 400, 403} <= seen
    huge = "99999999999999999999"  # past SQLite's 64-bit integers
    for path, cookie in ((f"/usage?before=2026-12-01T00~{huge}", user), (f"/admin/ledger?before={huge}", admin)):
        assert raw_request("GET", base(gateway) + path, headers={"Cookie": cookie}).status == 400
    log = gateway.log()
    assert "Traceback" not in log and '" 500 ' not in log


def test_with_workers_the_live_feed_shows_every_workers_calls(gateway, cli):
    """The page is served by one worker; the calls the other settles reach it too."""
    gateway.stop()
    gateway.start("--workers", "2")
    cookie = raw_request("GET", admin_link(cli, gateway)).headers["set-cookie"].split(";")[0]
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=15)
    conn.request("GET", "/admin/live/events", headers={"Cookie": cookie})
    stream = conn.getresponse()
    assert stream.status == 200 and stream.getheader("Content-Type") == "text/event-stream"
    assert stream.readline() == b": connected\n"
    time.sleep(1.5)  # the other worker learns within half a second that this one has a watcher
    body = json.dumps({"model": "deepseek-chat", "messages": HELLO, "max_tokens": 5}).encode()
    headers = {"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"}
    for _ in range(20):  # a new connection each: the kernel spreads them over both workers
        assert raw_request("POST", gateway.base_url + "/chat/completions", body, headers).status == 200
    seen, ids = 0, set()
    deadline = time.monotonic() + 10
    while seen < 20 and time.monotonic() < deadline:
        line = stream.readline()
        if line.startswith(b"data: "):
            batch = json.loads(line[6:])
            seen += len(batch["calls"]) + batch["skipped"]
            ids |= {call["request_id"] for call in batch["calls"]}
    conn.close()
    assert seen == 20 and len(ids) == 20
    prefixes = {request_id[:-10] for request_id in ids}  # request ids begin with their process's prefix
    assert len(prefixes) == 2, prefixes  # both workers' calls arrived


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_only(gateway, cli):
    set_password(cli, "dev@example.com")
    fields = {"email": "dev@example.com", "password": PASSWORD}
    forwarded = {"X-Forwarded-Proto": "https"}
    untrusted = post_login(gateway, fields, forwarded)
    assert "Secure" not in untrusted.headers["set-cookie"]  # anyone can send the header
    gateway.stop()
    config = tomllib.loads((gateway.home / "config.toml").read_text())
    config["server"]["trusted_proxies"] = ["127.0.0.1"]
    (gateway.home / "config.toml").write_text(tomli_w.dumps(config))
    gateway.start()
    behind = post_login(gateway, fields, forwarded)
    assert behind.status == 303 and "Secure" in behind.headers["set-cookie"]


def test_csv_exports_never_hand_a_spreadsheet_a_formula(gateway, cli):
    """An email (or any text a caller chose) that starts like a formula is written behind a quote."""
    email = '=HYPERLINK("http://evil.example")&"@x.io"'
    cli("users", "add", email, "--balance", "1")
    key = cli.json("keys", "create", "--user", email, "--name", "sheet")["key"]
    wait_for(lambda: gateway.key_works(key))
    gateway.client(key=key).chat.completions.create(model="deepseek-chat", messages=HELLO)
    admin = raw_request("GET", admin_link(cli, gateway)).headers["set-cookie"].split(";")[0]
    exported = raw_request("GET", base(gateway) + "/usage.csv", headers={"Cookie": admin}).body.decode()
    cells = [cell for row in csv.reader(io.StringIO(exported)) for cell in row]
    assert "'" + email in cells and email not in cells
    report = cli("usage", "report", "--by", "user", "--format", "csv").stdout
    cells = [cell for row in csv.reader(io.StringIO(report)) for cell in row]
    assert "'" + email in cells and not any(cell.startswith(("=", "+", "@")) for cell in cells)


def test_the_admin_links_token_stays_out_of_the_access_log(gateway, cli):
    link = admin_link(cli, gateway)
    assert raw_request("GET", link).status == 303
    token = link.split("token=", 1)[1]
    log = wait_for(lambda: "/login/link" in gateway.log() and gateway.log())
    assert token not in log


def test_amounts_show_the_precision_they_need_and_the_chart_keeps_models_apart():
    from datetime import date

    from hubproxy.dashboard.charts import spend_by_day
    from hubproxy.dashboard.views import usd

    assert usd(12_000_000) == "$0.000012"  # a cheap model's spend, never $0.0000
    assert usd(5 * 10**12, 2) == "$5.00" and usd(0) == "$0.0000"
    _, legend = spend_by_day({"2026-12-07": {f"m{i}": (20 - i) * 10**12 for i in range(15)}}, date(2026, 12, 7))
    assert [series for _, series in legend] == list(range(12)) and legend[-1][0] == "other models"
    css = (Path(__file__).parent.parent / "hubproxy/dashboard/static/style.css").read_text()
    series = re.findall(r"--s\d+: (#[0-9a-f]{6})", css)
    assert len(series) == 12 and len(set(series)) == 12 and "#e5484d" not in series  # red means failures


def test_an_unknown_page_is_a_page_for_a_browser_and_json_for_a_client(gateway):
    browser_like = raw_request("GET", base(gateway) + "/no-such-page", headers={"Accept": "text/html"})
    assert browser_like.status == 404 and browser_like.headers["content-type"].startswith("text/html")
    assert b"no page at /no-such-page" in browser_like.body
    client = raw_request("GET", base(gateway) + "/no-such-page")
    assert client.status == 404 and client.json()["error"]["code"] == "not_found"


def test_tables_fit_a_laptop_and_a_phone(browser, gateway, cli):
    for _ in range(3):
        gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    laptop = browser.new_context(viewport={"width": 1280, "height": 800})
    laptop.new_page().goto(admin_link(cli, gateway))  # the admin's session, for both screens
    session = laptop.storage_state()
    laptop.close()
    for width, height in ((1280, 800), (390, 844)):
        context = browser.new_context(viewport={"width": width, "height": height}, storage_state=session)
        page = context.new_page()
        page.goto(base(gateway) + "/usage")
        box = page.evaluate(
            "() => { const s = document.querySelector('.scroll'); return [s.scrollWidth, s.clientWidth] }"
        )
        assert box[0] <= box[1], (width, box)  # Cost and Latency in view: nothing behind a scrollbar
        assert page.evaluate("() => document.scrollingElement.scrollWidth <= window.innerWidth"), width
        assert page.locator("td[data-label=Cost]").first.is_visible()
        assert page.locator("td[data-label=Latency]").first.is_visible()
        context.close()


def test_the_admin_adds_a_user_and_sets_a_password_from_the_dashboard(gateway, cli):
    admin = raw_request("GET", admin_link(cli, gateway)).headers["set-cookie"].split(";")[0]
    csrf = csrf_in(raw_request("GET", base(gateway) + "/admin/users", headers={"Cookie": admin}).body.decode())
    fields = {"csrf": csrf, "email": "new@example.com", "balance": "2.50", "password": PASSWORD}
    added = raw_request(
        "POST", base(gateway) + "/admin/users", urllib.parse.urlencode(fields).encode(), {**FORM, "Cookie": admin}
    )
    assert added.status == 303
    assert balance_of(gateway, "new@example.com") == 2_500_000_000_000
    wait_for(lambda: post_login(gateway, {"email": "new@example.com", "password": PASSWORD}).status == 303)
    user_id = cli.json("users", "list")[-1]["id"]
    fields = {"csrf": csrf, "password": "another good one"}
    path = f"/admin/users/{user_id}/password"
    assert (
        raw_request(
            "POST", base(gateway) + path, urllib.parse.urlencode(fields).encode(), {**FORM, "Cookie": admin}
        ).status
        == 303
    )
    time.sleep(1.5)  # the server learns of the new password from the change feed
    assert post_login(gateway, {"email": "new@example.com", "password": "another good one"}).status == 303
    short = {"csrf": csrf, "password": "x"}
    refused = raw_request(
        "POST", base(gateway) + path, urllib.parse.urlencode(short).encode(), {**FORM, "Cookie": admin}
    )
    assert refused.status == 400


def test_a_user_sees_their_models_and_prices_and_sends_a_test_request(browser, gateway, cli, tmp_path):
    set_password(cli, "dev@example.com")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log_in(page, gateway, "dev@example.com")
    page.click("nav >> text=Models")
    row = page.locator("tr", has=page.locator("code", has_text="deepseek-chat")).first
    assert "$0.27" in row.inner_text() and "$1.10" in row.inner_text()
    header = page.locator("thead").first.inner_text().lower()  # shown in capitals
    assert "cached" in header and "cache write 1h" in header  # a column for each class priced apart
    before = balance_of(gateway, "dev@example.com")
    page.select_option("#test-form select[name=model]", "deepseek-chat")
    page.fill("#test-form textarea[name=prompt]", "say hello to me")
    page.click("#test-form button[type=submit]")
    result = page.locator("#test-result").inner_text()
    assert REPLY in result and "Tokens in / out" in result
    cost = page.locator("#test-cost").inner_text()
    shot(page, "models", tmp_path)
    context.close()
    spent = before - balance_of(gateway, "dev@example.com")
    assert spent > 0 and cost == "$" + format_usd(spent, min_places=1)
    keys = cli.json("keys", "list", "--user", "dev@example.com")
    assert [k["status"] for k in keys if k["name"] == "dashboard test"] == ["revoked"]
