"""One `hubproxy serve` per home, and the CLI finding it: a second server on a served home refuses with
one line; the running server's address is left in the home for `dashboard`, `connect` and `providers
status`; plus the operator-facing details of the same probe (secrets kept out of argv and logs, missing
extras, unset key variables, HTTP odds)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tomllib

import orjson
import tomli_w

from tests.conftest import HELLO, free_port, raw_request, run_cli, wait_for


def serve(home, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A `hubproxy serve` that is expected to stop on its own (refused), as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "hubproxy", "--home", str(home), "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_a_second_serve_on_a_served_home_refuses_in_one_line(gateway):
    second_port = free_port()
    refused = serve(gateway.home, "--port", str(second_port))
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert f"pid {gateway.proc.pid}" in lines[0] and f":{gateway.port}" in lines[0] and "--workers" in lines[0]
    try:
        raw_request("GET", f"http://127.0.0.1:{second_port}/health")
        raise AssertionError("the second server listens")
    except OSError:
        pass
    # the one server holds the balance alone: a balance that covers one hold admits one call
    key = gateway.new_user("twice@example.com", "0.0015")
    wait_for(lambda: gateway.key_works(key))
    gateway.upstream.delay = 0.5
    results = asyncio.run(gateway.fire(key, 2, max_tokens=1000))
    assert sum(not isinstance(r, Exception) for r in results) == 1


def test_the_cli_finds_the_running_server_and_forgets_a_killed_one(gateway, tmp_path):
    address = json.loads((gateway.home / "serving.json").read_text())
    assert address["port"] == gateway.port and address["pid"] == gateway.proc.pid
    link = run_cli(gateway.home, "dashboard").stdout
    assert f"http://localhost:{gateway.port}/login/link?token=" in link
    status = run_cli(gateway.home, "providers", "status")
    assert status.returncode == 0, status.stderr
    env = {"HOME": str(tmp_path)}
    written = run_cli(
        gateway.home,
        "connect",
        "claude-code",
        "--model",
        "ds",
        "--key",
        "-",
        "--write",
        input=gateway.key + "\n",
        env=env,
    )
    assert written.returncode == 0, written.stderr
    settings = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    assert settings["env"]["ANTHROPIC_BASE_URL"] == f"http://localhost:{gateway.port}"
    assert settings["env"]["ANTHROPIC_AUTH_TOKEN"] == gateway.key
    from_env = run_cli(gateway.home, "connect", "openai", "--model", "ds", env={"HUBPROXY_KEY": gateway.key})
    assert f"OPENAI_API_KEY={gateway.key}" in from_env.stdout
    gateway.stop(signal.SIGKILL)
    assert (gateway.home / "serving.json").exists()  # left behind, and ignored: nobody holds the lock
    assert "localhost:8080" in run_cli(gateway.home, "dashboard").stdout
    stale = run_cli(gateway.home, "providers", "status")
    assert stale.returncode == 1 and "no `hubproxy serve` is running" in stale.stderr
    gateway.start()  # a killed server's home is served again at once
    gateway.stop()
    assert not (gateway.home / "serving.json").exists()


def test_client_mistakes_are_logged_at_info_without_the_callers_input(gateway):
    gateway.stop()
    path = gateway.home / "config.toml"
    config = tomllib.loads(path.read_text())
    config["server"]["accounts_api"] = True
    path.write_text(tomli_w.dumps(config))
    gateway.start()
    root = f"http://127.0.0.1:{gateway.port}"
    body = json.dumps({"email": "twice@example.com", "password": "secret123"}).encode()
    headers = {"Content-Type": "application/json"}
    assert raw_request("POST", root + "/auth/register", body, headers).status in (200, 201)
    assert raw_request("POST", root + "/auth/register", body, headers).status == 409
    wait_for(lambda: '"POST /auth/register" 409' in gateway.log())
    log = gateway.log()
    assert " ERROR " not in log and "twice@example.com" not in log


def test_missing_drivers_are_one_line_naming_the_extra(home, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("psycopg", "redis"):
        (blocked / f"{name}.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}'\", name='{name}')\n")
    env = {"PYTHONPATH": str(blocked), "HUBPROXY_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"}
    listed = run_cli(home, "users", "list", env=env)
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert listed.stderr.strip() == (
        "Error: PostgreSQL needs the psycopg package, which this install lacks: pip install 'hubproxy[postgres]'"
    )
    served = serve(
        home, "--port", str(free_port()), "--redis", "redis://127.0.0.1:6379/0", env={"PYTHONPATH": str(blocked)}
    )
    assert served.returncode == 1 and "Traceback" not in served.stderr
    assert "pip install 'hubproxy[postgres]'" in served.stderr and len(served.stderr.strip().splitlines()) == 1


def test_database_is_taken_after_serve_too_and_a_password_in_it_is_warned_about(home):
    served = serve(home, "--database", "postgresql://someone:hunter2@127.0.0.1:1/nowhere", "--port", str(free_port()))
    assert "No such option" not in served.stderr
    assert "warning: the password in --database shows in `ps`" in served.stderr
    assert served.returncode == 1 and "Traceback" not in served.stderr and "hunter2" not in served.stderr


def test_an_unset_key_variable_is_named_at_start_and_in_the_provider_list(gateway):
    gateway.cli("providers", "add", "later", "--base-url", "https://later.test/v1", "--api-key-env", "LATER_KEY_UNSET")
    listed = run_cli(gateway.home, "providers", "list", "--json")
    unset = {p["name"]: p["api_key_env_unset"] for p in json.loads(listed.stdout)}
    assert unset["later"] is True
    table = run_cli(gateway.home, "providers", "list", env={"COLUMNS": "200"}).stdout
    assert "env:LATER_KEY_UNSET (not set here)" in table
    gateway.stop()
    gateway.start()
    assert "provider later's key variable LATER_KEY_UNSET is not set" in gateway.log()


def test_http_odds_get_the_right_status(gateway):
    root = f"http://127.0.0.1:{gateway.port}"
    auth = {"Authorization": f"Bearer {gateway.key}"}
    wrong = raw_request("GET", root + "/v1/chat/completions", headers=auth)
    assert wrong.status == 405 and "POST" in wrong.headers["allow"]
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert raw_request("DELETE", root + "/v1/models", headers=auth).status == 405
    assert raw_request("GET", root + "/v1/nothing-here", headers=auth).status == 404
    assert raw_request("HEAD", root + "/health").status == 200
    assert raw_request("HEAD", root + "/v1/models", headers=auth).status == 200
    assert raw_request("HEAD", root + "/login").status == 200  # a dashboard page
    body = orjson.dumps({"model": "deepseek-chat", "messages": HELLO})
    coded = raw_request(
        "POST",
        root + "/v1/chat/completions",
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
        {**auth, "Content-Type": "application/json", "Transfer-Encoding": "gzip, chunked"},
    )
    assert coded.status == 501 and coded.headers["x-should-retry"] == "false"
    wrong_type = orjson.dumps(
        {"model": "deepseek-chat", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    )
    refused = raw_request(
        "POST", root + "/v1/chat/completions", wrong_type, {**auth, "Content-Type": "application/json"}
    )
    assert refused.status == 400 and "text" in refused.json()["error"]["message"]
    assert len(gateway.upstream.requests) == 0
