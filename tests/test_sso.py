"""Single sign-on for the dashboard, in Chromium, against a real OpenID Connect provider on 127.0.0.1
(node's oidc-provider, started by the test; `.ci/run` installs it and sets HUBPROXY_OIDC_PROVIDER):
a user signs in and is created by their verified email, a wrong domain is refused, an admin email gets
the admin's pages, logout ends the session, and with password login off only single sign-on works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, configure, free_port, raw_request, wait_for
from tests.test_dashboard import base, browser  # noqa: F401 - the module's Chromium fixture

PROVIDER = os.environ.get("HUBPROXY_OIDC_PROVIDER", "")
SCRIPT = Path(__file__).parent / "clients" / "oidc_provider.mjs"
CLIENT_SECRET = "sso-client-s3cret"
pytestmark = pytest.mark.skipif(
    not Path(PROVIDER, "node_modules", "oidc-provider").is_dir(), reason="HUBPROXY_OIDC_PROVIDER names no oidc-provider"
)


@pytest.fixture
def sso_gateway(home, cli, upstream, monkeypatch):
    configure(cli, upstream)
    gw = Gateway(home, cli, upstream, free_port())
    gw.key = gw.new_user("dev@example.com", "5")
    idp_port = free_port()
    idp = subprocess.Popen(
        ["node", str(SCRIPT), str(idp_port), f"{base(gw)}/login/oidc/callback", CLIENT_SECRET],
        env={**os.environ, "OIDC_MODULE": str(Path(PROVIDER, "node_modules", "oidc-provider", "lib", "index.js"))},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    discovery = f"http://127.0.0.1:{idp_port}/.well-known/openid-configuration"
    wait_for(lambda: _answers(discovery), timeout=20)
    config = home / "config.toml"
    config.write_text(
        config.read_text() + f'\n[dashboard]\noidc_discovery = "{discovery}"\noidc_client_id = "hubproxy"\n'
        'oidc_client_secret_env = "SSO_SECRET"\noidc_domains = ["example.com"]\noidc_admins = ["boss@example.com"]\n'
    )
    monkeypatch.setenv("SSO_SECRET", CLIENT_SECRET)
    gw.start()
    yield gw
    gw.stop()
    idp.terminate()
    idp.wait(10)


def _answers(url: str) -> bool:
    try:
        return raw_request("GET", url).status == 200
    except OSError:
        return False


def sign_in(browser, gw: Gateway, email: str):  # noqa: F811
    """A fresh browser signs in through the provider's own login and consent pages."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(base(gw) + "/login")
    page.click("#sso")
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", "anything")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if page.locator("button[type=submit]", has_text="Continue").count():
        page.click("button[type=submit]")
    page.wait_for_url(lambda url: url.startswith(base(gw)), timeout=15000)
    return context, page


def test_a_user_signs_in_with_the_provider_and_is_matched_by_verified_email(browser, sso_gateway, cli):  # noqa: F811
    context, page = sign_in(browser, sso_gateway, "dev@example.com")
    assert page.url == base(sso_gateway) + "/" and page.locator("#balance").inner_text() == "$5.00"
    page.click("text=Log out")
    page.wait_for_url(base(sso_gateway) + "/login")
    assert page.goto(base(sso_gateway) + "/keys").url.startswith(base(sso_gateway) + "/login")
    context.close()
    context, page = sign_in(browser, sso_gateway, "new@example.com")
    assert page.url == base(sso_gateway) + "/" and page.locator("#balance").inner_text() == "$0.00"
    assert "new@example.com" in [u["email"] for u in cli.json("users", "list")]
    assert any(e["actor"] == "new@example.com (single sign-on)" for e in cli.json("audit"))
    assert page.goto(base(sso_gateway) + "/admin/users").status == 403
    context.close()


def test_a_wrong_domain_is_refused_and_an_admin_email_gets_the_admins_pages(browser, sso_gateway, cli):  # noqa: F811
    context, page = sign_in(browser, sso_gateway, "eve@evil.test")
    assert page.url.startswith(base(sso_gateway) + "/login/oidc/callback")
    assert "eve@evil.test is not in a domain allowed here" in page.content()
    assert "eve@evil.test" not in [u["email"] for u in cli.json("users", "list")]
    context.close()
    context, page = sign_in(browser, sso_gateway, "boss@example.com")
    assert page.goto(base(sso_gateway) + "/admin/users").status == 200
    context.close()


def test_a_forged_callback_and_password_login_off(browser, sso_gateway, cli):  # noqa: F811
    forged = raw_request("GET", base(sso_gateway) + "/login/oidc/callback?code=x&state=y")
    assert forged.status == 403 and b"was not started here" in forged.body
    config = sso_gateway.home / "config.toml"
    config.write_text(
        config.read_text().replace(
            'oidc_admins = ["boss@example.com"]', 'oidc_admins = ["boss@example.com"]\npassword_login = false'
        )
    )
    sso_gateway.stop()
    sso_gateway.start()
    page = raw_request("GET", base(sso_gateway) + "/login").body.decode()
    assert 'id="sso"' in page and 'name="password"' not in page
    context, page = sign_in(browser, sso_gateway, "dev@example.com")
    assert page.url == base(sso_gateway) + "/"
    context.close()
