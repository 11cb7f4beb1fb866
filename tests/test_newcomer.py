"""What trips a newcomer, checked as one meets it: help that says what it means, tables that read as
typed, a probe that works for every wire API, mistakes named with what to do instead."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import HELLO, raw_request, run_cli


def test_help_keeps_its_bracketed_words_and_names_every_option(cli):
    assert "[store] url in config.toml" in " ".join(cli("--help").output.replace("│", " ").split())
    assert "responses" in cli("providers", "add", "--help").output
    update = cli("keys", "update", "--help").output
    for option in ("Requests per minute", "Tokens per minute", "Calls in flight"):
        assert option in update


def test_rules_read_as_they_were_typed(cli):
    cli("init")
    cli("providers", "add", "d", "--base-url", "https://d.test/v1")
    cli("users", "add", "dev@example.com")
    cli("keys", "create", "--user", "dev@example.com", "--models", "ds,deepseek/*", "--rpm", "10")
    listed = cli("keys", "list").output
    assert "models=ds,deepseek/*; rpm=10" in listed.replace("\n", "").replace(" ", "").replace(";", "; ")
    assert "['" not in listed


def test_a_messages_only_provider_is_probed_anthropics_way_and_listed_with_its_apis(hub):
    probed = run_cli(hub.home, "providers", "test", "claude", env={"UPSTREAM_KEY": hub.upstream.api_key})
    assert probed.returncode == 0 and "claude: OK" in probed.stdout, probed.stderr
    asked = hub.upstream.requests[-1]
    assert asked["path"] == "/v1/models" and asked["headers"]["x-api-key"] == hub.upstream.api_key
    listed = {p["name"]: p["apis"] for p in json.loads(run_cli(hub.home, "providers", "list", "--json").stdout)}
    assert listed == {"fake": ["chat"], "claude": ["messages"], "oai": ["responses"]}
    assert "messages" in run_cli(hub.home, "providers", "list").stdout


def test_a_path_missing_or_doubling_v1_is_told_the_url_to_use(gateway):
    root = f"http://127.0.0.1:{gateway.port}"
    headers = {"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"}
    body = json.dumps({"model": "deepseek-chat", "messages": HELLO}).encode()
    for path, right in (
        ("/chat/completions", "/v1/chat/completions"),
        ("/v1/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/v1/messages", "/v1/messages"),
    ):
        answer = raw_request("POST", root + path, body, headers)
        assert answer.status == 404 and right in answer.json()["error"]["message"], path


def test_a_base_url_with_the_endpoint_and_a_rule_for_no_model_are_named(cli):
    cli("init")
    doubled = cli("providers", "add", "d", "--base-url", "https://d.test/v1/chat/completions", ok=False)
    assert (
        doubled.exit_code == 1
        and "without '/chat/completions'" in doubled.output
        and "'https://d.test/v1'" in doubled.output
    )
    cli("providers", "add", "d", "--base-url", "https://d.test/v1")
    cli("models", "add", "ds", "--provider", "d", "--input-price", "1", "--output-price", "1")
    cli("users", "add", "dev@example.com")
    typo = cli("keys", "create", "--user", "dev@example.com", "--models", "dss")
    assert "warning: --models 'dss' matches no model served here (models: ds)" in typo.output
    fine = cli("keys", "create", "--user", "dev@example.com", "--models", "ds,d/*")
    assert "warning" not in fine.output


def test_usage_report_says_when_nothing_matches_names_keys_and_agrees_across_formats(gateway):
    assert "no calls since 2999-01-01 yet" in gateway.cli("usage", "report", "--since", "2999-01-01").stdout
    unknown = gateway.cli("usage", "report", "--user", "nobody@example.com", ok=False)
    assert unknown.exit_code == 1 and "nobody@example.com" in unknown.output
    gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    by_key = gateway.cli.json("usage", "report", "--by", "key")
    assert by_key[0]["group"] == gateway.key_id and by_key[0]["name"] == "test"
    assert f"{gateway.key_id} (test)" in " ".join(gateway.cli("usage", "report", "--by", "key").stdout.split())
    free = gateway.cli.json("usage", "report", "--by", "model")
    table = gateway.cli("usage", "report", "--by", "model").stdout
    assert free[0]["cost_usd"] in table


def test_the_cli_starts_without_the_web_stack_or_the_postgresql_driver():
    """--version and the account commands start in a fraction of a second: the server, the dashboard
    and the PostgreSQL driver are imported only by the commands that use them."""
    probe = (
        "import sys; from hubproxy.cli import app; "
        "print(sorted(m for m in ('aiohttp', 'jinja2', 'psycopg', 'jwt') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_test_command_names_what_the_machine_lacks_in_one_line(tmp_path):
    """.ci/run checks its requirements before installing anything: here a machine without npm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(Path(sys.executable).resolve())  # the interpreter itself, not a shim
    for tool in ("dirname", "timeout", "openssl", "bash"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    script = Path(__file__).parent.parent / ".ci" / "run"
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    result = subprocess.run([shutil.which("bash"), str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(".ci/run: npm is missing: install Node.js 20 with npm")


def test_ids_are_never_cut_at_a_middling_terminal_width(home, cli):
    cli("init")
    cli("providers", "add", "deepseek", "--base-url", "https://api.deepseek.com/v1")
    long_model, long_upstream = "deepseek-chat-very-long-model-name-v3", "deepseek-chat-very-long-upstream-name"
    cli("models", "add", long_model, "--provider", "deepseek", "--upstream-model", long_upstream, *PRICES)
    email = "a-rather-long-email-address@example-company.com"
    cli("users", "add", email)
    cli("keys", "create", "--user", email, "--models", long_model)
    for columns in ("90", "100", "120"):
        env = {"COLUMNS": columns}
        models = run_cli(home, "models", "list", env=env).stdout
        keys = run_cli(home, "keys", "list", env=env).stdout
        assert long_model in models and long_upstream in models, columns
        assert email in keys, columns


PRICES = ["--input-price", "0.27", "--output-price", "1.10"]


def test_a_messages_client_with_v1_in_its_base_url_is_told_in_anthropics_shape(gateway):
    headers = {"x-api-key": gateway.key, "Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    body = json.dumps({"model": "deepseek-chat", "max_tokens": 9, "messages": HELLO}).encode()
    answer = raw_request("POST", f"http://127.0.0.1:{gateway.port}/v1/v1/messages", body, headers).json()
    assert answer["type"] == "error" and answer["error"]["type"] == "not_found_error"
    assert "without /v1" in answer["error"]["message"]
