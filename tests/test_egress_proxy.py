"""Egress through an HTTP proxy: HTTPS_PROXY / HTTP_PROXY / NO_PROXY as the usual tools read them, a
provider's own `proxy`, CONNECT tunnels to https upstreams (a test CA), proxy credentials right and
wrong (never in a log), streams and kept-alive connections through the tunnel, and a proxy that is down
(a 502 naming it; the breaker does not blame the provider). The proxy is Debian's tinyproxy, started
by the tests on 127.0.0.1 (`.ci/run` installs it; elsewhere these tests are skipped without it)."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
from pathlib import Path

import openai
import pytest

from hubproxy.config.errors import ConfigError
from hubproxy.upstream.proxy import Proxy, bypassed, proxy_for
from tests.conftest import HELLO, Gateway, configure, free_port, raw_request, run_cli, wait_for
from tests.fake_upstream import REPLY, FakeUpstream
from tests.test_tls import self_signed

TINYPROXY = shutil.which("tinyproxy")
USER, PASSWORD, WRONG = "hub", "pr0xy-secret", "Wr0ng-pw-7731"
needs_proxy = pytest.mark.skipif(TINYPROXY is None, reason="tinyproxy is not installed (apt-get install tinyproxy)")


# --- the rules, as curl and Python's urllib read them ------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("api.example.com", 443, "example.com", True),
        ("api.example.com", 443, ".example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("api.example.com", 443, "example.com:8443", False),
        ("api.example.com", 8443, "example.com:8443", True),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("::1", 80, "::1", True),
        ("anything.net", 443, "*", True),
        ("anything.net", 443, "", False),
    ],
)
def test_no_proxy_matches_hosts_domains_ports_ranges_and_star(host, port, no_proxy, bypass):
    assert bypassed(host, port, no_proxy) is bypass


def test_which_proxy_a_provider_goes_through():
    env = {"HTTPS_PROXY": "http://u:p@proxy.corp:3128", "http_proxy": "http://plain.corp:80", "NO_PROXY": "internal"}
    through = proxy_for("https://api.deepseek.com/v1", None, env)
    assert through == Proxy("proxy.corp", 3128, "Basic " + base64.b64encode(b"u:p").decode())
    assert str(through) == "proxy.corp:3128" and "u:p" not in repr(through) and "Basic" not in repr(through)
    assert proxy_for("http://localhost:11434/v1", None, env) == Proxy("plain.corp", 80)
    assert proxy_for("https://gpu.internal/v1", None, env) is None
    assert proxy_for("https://api.deepseek.com/v1", "none", env) is None
    assert proxy_for("https://api.deepseek.com/v1", "env:CORP", {"CORP": "http://c:9"}) == Proxy("c", 9)
    assert proxy_for("https://api.deepseek.com/v1", None, {}) is None
    with pytest.raises(ConfigError) as refused:
        proxy_for("https://api.deepseek.com/v1", None, {"HTTPS_PROXY": "socks5://u:secret@h:1"})
    assert "secret" not in str(refused.value)


def test_a_proxy_setting_is_checked_and_never_holds_credentials(cli):
    cli("init")
    bad = cli("providers", "add", "p", "--base-url", "https://p.test/v1", "--proxy", "http://u:pw@proxy:3128", ok=False)
    assert bad.exit_code == 1 and "credentials do not belong in config.toml" in bad.output and "pw" not in bad.output
    assert cli("providers", "add", "p", "--base-url", "https://p.test/v1", "--proxy", "env:CORP_PROXY").exit_code == 0
    assert cli.json("providers", "list")[0]["proxy"] == "env:CORP_PROXY"


# --- through a real proxy ---------------------------------------------------------------------------


class TinyProxy:
    """tinyproxy on 127.0.0.1, asking for Basic credentials; its log says what went through it."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log_path = folder / "tinyproxy.log"
        config = folder / "tinyproxy.conf"
        config.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 100\nAllow 127.0.0.1\n"
            f"BasicAuth {USER} {PASSWORD}\nDisableViaHeader Yes\nLogLevel Connect\n"
        )
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.listening, timeout=10)

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def url(self, password: str = PASSWORD) -> str:
        return f"http://{USER}:{password}@127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def tinyproxy(tmp_path):
    proxy = TinyProxy(tmp_path)
    yield proxy
    proxy.stop()


@pytest.fixture
def tls_upstream(tmp_path):
    cert, key = self_signed(tmp_path)
    fake = FakeUpstream(tls=(cert, key)).start()
    fake.ca = cert
    yield fake
    fake.stop()


def gateway_with(home, cli, upstream: FakeUpstream, env: dict[str, str]) -> Gateway:
    configure(cli, upstream)
    gw = Gateway(home, cli, upstream, free_port())
    gw.key = gw.new_user("dev@example.com", "5")
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        gw.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return gw


@needs_proxy
def test_calls_go_through_the_proxy_and_no_proxy_hosts_bypass_it(home, cli, upstream, tinyproxy):
    gw = gateway_with(home, cli, upstream, {"HTTP_PROXY": tinyproxy.url(), "NO_PROXY": "localhost"})
    try:
        client = gw.client()
        assert client.chat.completions.create(model="deepseek-chat", messages=HELLO).choices[0].message.content == REPLY
        streamed = client.chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).split() == REPLY.split()
        assert tinyproxy.log().count(f"POST http://127.0.0.1:{upstream.port}/v1/chat/completions") == 2
        assert PASSWORD not in gw.log() and base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in gw.log()
    finally:
        gw.stop()
    gw = gateway_with(home, cli, upstream, {"HTTP_PROXY": tinyproxy.url(), "NO_PROXY": "127.0.0.0/8"})
    try:
        before = tinyproxy.log().count("POST ")
        gw.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
        assert tinyproxy.log().count("POST ") == before, "a NO_PROXY host is reached directly"
    finally:
        gw.stop()


@needs_proxy
def test_an_https_upstream_is_reached_through_a_connect_tunnel_kept_alive(home, cli, tls_upstream, tinyproxy):
    env = {"HTTPS_PROXY": tinyproxy.url(), "SSL_CERT_FILE": tls_upstream.ca}
    gw = gateway_with(home, cli, tls_upstream, env)
    try:
        client = gw.client()
        for _ in range(3):
            assert (
                client.chat.completions.create(model="deepseek-chat", messages=HELLO).choices[0].message.content
                == REPLY
            )
        streamed = client.chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).split() == REPLY.split()
        tunnels = tinyproxy.log().count(f"CONNECT 127.0.0.1:{tls_upstream.port}")
        assert 1 <= tunnels < 4, "calls one after another share a tunnel"
        assert len([r for r in tls_upstream.requests if r["path"] == "/v1/chat/completions"]) == 4
        assert PASSWORD not in gw.log()
    finally:
        gw.stop()


@needs_proxy
def test_wrong_proxy_credentials_and_a_proxy_that_is_down_are_named_and_do_not_trip_the_breaker(
    home, cli, tls_upstream, tinyproxy
):
    env = {"HTTPS_PROXY": tinyproxy.url(WRONG), "SSL_CERT_FILE": tls_upstream.ca}
    gw = gateway_with(home, cli, tls_upstream, env)
    try:
        with pytest.raises(openai.APIStatusError) as refused:
            gw.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
        assert refused.value.status_code == 502
        assert f"127.0.0.1:{tinyproxy.port} refused its credentials" in refused.value.message
        assert WRONG not in refused.value.message and WRONG not in gw.log()
    finally:
        gw.stop()
    dead = free_port()
    gw = gateway_with(home, cli, tls_upstream, {"HTTPS_PROXY": f"http://{USER}:{PASSWORD}@127.0.0.1:{dead}"})
    try:
        for _ in range(6):
            with pytest.raises(openai.APIStatusError) as refused:
                gw.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
            assert refused.value.status_code == 502 and f"the proxy 127.0.0.1:{dead}" in refused.value.message
        health = gw.health()["deployments"]
        assert all(d["state"] == "closed" for d in health.values()), health
        assert PASSWORD not in gw.log()
    finally:
        gw.stop()


@needs_proxy
def test_a_providers_own_proxy_setting_wins_over_the_environment(home, cli, upstream, tinyproxy):
    configure(cli, upstream)
    config = home / "config.toml"
    text = config.read_text()
    config.write_text(text.replace("[providers.fake]\n", '[providers.fake]\nproxy = "env:FAKE_PROXY"\n', 1))
    gw = Gateway(home, cli, upstream, free_port())
    gw.key = gw.new_user("dev@example.com", "5")
    os.environ["FAKE_PROXY"] = tinyproxy.url()
    try:
        gw.start()
    finally:
        del os.environ["FAKE_PROXY"]
    try:
        gw.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
        assert f"POST http://127.0.0.1:{upstream.port}/v1/chat/completions" in tinyproxy.log()
        status = raw_request("GET", f"http://127.0.0.1:{gw.port}/health").status
        assert status == 200
    finally:
        gw.stop()


@needs_proxy
def test_missing_credentials_for_a_plain_http_upstream_are_the_proxys_not_the_providers(home, cli, upstream, tinyproxy):
    """A plain http upstream is asked through the proxy itself: its 407 is the proxy's. (tinyproxy
    answers wrong credentials there with a 401 like a provider's, so that case cannot be told apart.)"""
    gw = gateway_with(home, cli, upstream, {"HTTP_PROXY": f"http://127.0.0.1:{tinyproxy.port}"})
    try:
        with pytest.raises(openai.APIStatusError) as refused:
            gw.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
        assert refused.value.status_code == 502 and "egress proxy" in refused.value.message
    finally:
        gw.stop()


def test_a_malformed_proxy_variable_stops_serve_in_one_line(home, cli, upstream):
    configure(cli, upstream)
    env = {"HTTP_PROXY": "socks5://u:Wr0ng-pw-7731@127.0.0.1:1", "NO_PROXY": ""}
    done = run_cli(home, "serve", "--port", str(free_port()), env=env)
    assert done.returncode == 1 and "HTTP_PROXY: the proxy must be an http://host:port URL" in done.stderr
    assert "Traceback" not in done.stderr and WRONG not in done.stderr + done.stdout


@needs_proxy
def test_providers_test_says_which_proxy_it_went_through(cli, upstream, tinyproxy, monkeypatch):
    cli("init")
    cli("providers", "add", "fake", "--base-url", upstream.base_url, "--api-key-env", "FAKE_KEY")
    monkeypatch.setenv("FAKE_KEY", upstream.api_key)
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url())
    said = cli("providers", "test", "fake").stdout
    assert f"through the proxy 127.0.0.1:{tinyproxy.port}" in said and PASSWORD not in said
    assert f"GET http://127.0.0.1:{upstream.port}/v1/models" in tinyproxy.log()
