"""HTTPS for a hubproxy reachable from elsewhere (a tunnel for Cursor, a LAN): `serve --tls-cert
--tls-key`, and a warning when it listens on every interface over plain HTTP."""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
import time

import openai

from hubproxy.dashboard.sessions import login_link_token
from tests.conftest import Gateway, configure, free_port, run_cli
from tests.fake_upstream import REPLY


def self_signed(tmp_path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def test_serve_speaks_https_with_the_given_certificate(home, cli, upstream, tmp_path):
    configure(cli, upstream)
    key = Gateway(home, cli, upstream, 0).new_user("dev@example.com", "5")
    cert, private = self_signed(tmp_path)
    port = free_port()
    env = {**os.environ, "UPSTREAM_KEY": upstream.api_key}
    command = [sys.executable, "-m", "hubproxy", "--home", str(home), "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--tls-cert", cert, "--tls-key", private], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        trust = ssl.create_default_context(cafile=cert)
        deadline = time.monotonic() + 20
        while True:
            try:
                connection = http.client.HTTPSConnection("127.0.0.1", port, context=trust, timeout=2)
                connection.request("GET", "/health")
                assert connection.getresponse().status == 200
                break
            except (ConnectionRefusedError, ssl.SSLError, OSError):
                assert time.monotonic() < deadline, "no HTTPS server"
                time.sleep(0.1)
        client = openai.OpenAI(
            base_url=f"https://127.0.0.1:{port}/v1",
            api_key=key,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(verify=trust),
        )
        answer = client.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == REPLY
        dashboard = http.client.HTTPSConnection("127.0.0.1", port, context=trust, timeout=5)
        token = login_link_token((home / "admin-token").read_text().strip())
        dashboard.request("GET", f"/login/link?token={token}")
        login = dashboard.getresponse()
        assert login.status == 303 and "Secure" in login.getheader("Set-Cookie")  # the session cookie, HTTPS only
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            plain.request("GET", "/health")
            status = plain.getresponse().status
        except (http.client.HTTPException, ConnectionError):
            status = None
        assert status != 200  # no plain HTTP on that port
        link = run_cli(home, "dashboard").stdout
        assert f"https://localhost:{port}/login/link?token=" in link  # the running server's own address
        status = run_cli(home, "providers", "status")
        assert status.returncode == 0, status.stderr  # over HTTPS, trusting the certificate it serves with
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert f"https://localhost:{port}/v1" in out


def test_tls_mistakes_are_one_line_errors(cli, tmp_path):
    cli("init")
    half = cli("serve", "--tls-cert", str(tmp_path / "cert.pem"), ok=False)
    assert half.exit_code == 1 and "--tls-cert and --tls-key go together" in half.output
    missing = cli("serve", "--tls-cert", str(tmp_path / "no.pem"), "--tls-key", str(tmp_path / "no.key"), ok=False)
    assert missing.exit_code == 1 and "cannot serve HTTPS" in missing.output and "Traceback" not in missing.output


def test_listening_everywhere_over_plain_http_warns(home, cli, upstream):
    configure(cli, upstream)
    gateway = Gateway(home, cli, upstream, free_port()).start("--host", "0.0.0.0")
    try:
        assert "plain HTTP" in gateway.log() and "--tls-cert" in gateway.log()
    finally:
        gateway.stop()
