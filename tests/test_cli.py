"""The CLI contract: names, flags, --json, --home, secrets handling, and one-line errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib

import pytest

from hubproxy.config.prices import price_version
from tests.conftest import run_cli


def test_init_prints_both_paths_and_creates_them(cli, home):
    out = cli("init").stdout
    assert str(home / "config.toml") in out and str(home / "hubproxy.db") in out
    assert (home / "config.toml").exists() and (home / "hubproxy.db").exists()
    again = cli.json("init")
    assert again["created_config"] is False


def test_home_option_and_env_var_choose_the_directory(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("HUBPROXY_HOME", str(b))
    assert run_cli(a, "init").returncode == 0, "--home wins over the env var"
    assert (a / "config.toml").exists() and not b.exists()
    proc = subprocess.run([sys.executable, "-m", "hubproxy", "init"], capture_output=True, text=True, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    assert (b / "config.toml").exists()


def test_provider_key_from_stdin_goes_to_a_0600_file_without_keyring_never_to_config(cli, home):
    cli("init")
    out = cli(
        "providers",
        "add",
        "qwen",
        "--base-url",
        "https://example.invalid/v1",
        "--api-key-stdin",
        input="sk-very-secret\n",
    ).stdout
    assert "no OS keyring" in out and "credentials.json" in out
    creds = home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert "sk-very-secret" in creds.read_text()
    assert "sk-very-secret" not in (home / "config.toml").read_text()
    assert tomllib.loads((home / "config.toml").read_text())["providers"]["qwen"]["api_key_stored"] is True
    cli("providers", "remove", "qwen")
    assert "sk-very-secret" not in creds.read_text()


def test_provider_env_reference_stores_only_the_name(cli, home):
    cli("init")
    cli("providers", "add", "deepseek", "--base-url", "https://api.deepseek.com/v1", "--api-key-env", "DS_KEY")
    providers = cli.json("providers", "list")
    assert providers == [
        {
            "name": "deepseek",
            "base_url": "https://api.deepseek.com/v1",
            "api_style": "openai",
            "api_key": "env:DS_KEY",
            "api_key_env_unset": True,
            "headers": [],
            "stream_usage": True,
            "timeout": None,
            "max_concurrent": None,
            "preset": None,
            "apis": ["chat"],
            "messages_base_url": None,
            "gemini_base_url": None,
            "responses_socket": False,
            "proxy": None,
            "reasoning": "within",
        }
    ]


def test_models_add_list_remove_with_alias(cli):
    cli("init")
    cli("providers", "add", "deepseek", "--base-url", "https://api.deepseek.com/v1", "--api-key-env", "K")
    cli(
        "models",
        "add",
        "ds",
        "--provider",
        "deepseek",
        "--upstream-model",
        "deepseek-chat",
        "--input-price",
        "0.27",
        "--output-price",
        "1.10",
    )
    assert cli.json("models", "list") == [
        {
            "name": "ds",
            "provider": "deepseek",
            "upstream_model": "deepseek-chat",
            "input_price": "0.27",
            "output_price": "1.1",
            "cached_input_price": None,
            "cache_write_price": None,
            "tiers": [],
            "hours": [],
            "price_id": price_version({"input_price": "0.27", "output_price": "1.1"}),
            "max_output_tokens": None,
        }
    ]
    bad = cli("providers", "remove", "deepseek", ok=False)
    assert bad.exit_code == 1 and "used by models ds" in bad.output
    cli("models", "remove", "ds")
    assert cli.json("models", "list") == []


def test_users_keys_balance_round_trip(cli):
    cli("init")
    user = cli.json("users", "add", "dev@example.com", "--balance", "5")
    assert user["balance"] == "5.00" and user["balance_pico_usd"] == 5 * 10**12
    created = cli.json("keys", "create", "--user", "dev@example.com", "--name", "laptop")
    assert created["key"].startswith("sk-hp-") and created["id"].startswith("key_")
    listed = cli.json("keys", "list", "--user", "dev@example.com")
    assert listed[0]["id"] == created["id"]
    assert created["key"] not in str(listed), "listing must be masked"
    assert listed[0]["key"].endswith(created["key"][-4:])
    assert cli.json("users", "topup", "dev@example.com", "2.5")["balance"] == "7.50"
    assert cli.json("balance", "dev@example.com")["balance"] == "7.50"
    assert cli.json("keys", "revoke", created["id"])["status"] == "revoked"
    assert cli.json("users", "disable", "dev@example.com")["status"] == "disabled"
    assert [u["email"] for u in cli.json("users", "list")] == ["dev@example.com"]


def test_usage_report_formats_on_empty_database(cli):
    cli("init")
    assert cli.json("usage", "report", "--by", "model") == []
    assert cli("usage", "report", "--by", "user", "--format", "csv").stdout.startswith("group,requests")


@pytest.mark.parametrize(
    "args,message",
    [
        (["users", "add", "not-an-email"], "is not an email address"),
        (["users", "add", "a@b.co", "--balance", "lots"], "must be a plain number"),
        (["users", "topup", "nobody@example.com", "5"], "no user"),
        (["users", "topup", "a@b.co", "0.0000000000001"], "more than 12 decimal places"),
        (["keys", "create", "--user", "nobody@example.com"], "no user"),
        (["keys", "revoke", "key_nope"], "no key"),
        (["models", "add", "m", "--provider", "nope", "--input-price", "1", "--output-price", "1"], "no provider"),
        (["providers", "add", "Bad Name", "--base-url", "https://x.y/v1"], "provider name"),
        (["providers", "add", "p", "--base-url", "ftp://x"], "base_url must be an http(s) URL"),
        (["providers", "add", "p", "--base-url", "https://x.y", "--api-key-env", "1BAD"], "environment variable"),
        (["providers", "add", "p", "--base-url", "https://x.y", "--header", "X-A: b\r\nX-B: c"], "line breaks"),
        (["providers", "test", "nope"], "no provider"),
        (["balance", "nobody@example.com"], "no user"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_changes_nothing(cli, home, args, message):
    cli("init")
    cli("users", "add", "a@b.co", "--balance", "1")
    before = ((home / "config.toml").read_bytes(), cli("users", "list", "--json").stdout)
    proc = run_cli(home, *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert ((home / "config.toml").read_bytes(), cli("users", "list", "--json").stdout) == before


def test_commands_before_init_say_what_to_do(home):
    proc = run_cli(home, "users", "list")
    assert proc.returncode == 1
    assert "run `hubproxy init` first" in proc.stderr


def test_corrupt_database_is_a_clear_error(home):
    assert run_cli(home, "init").returncode == 0
    (home / "hubproxy.db").write_bytes(b"this is not sqlite" * 100)
    for suffix in ("-wal", "-shm"):
        (home / f"hubproxy.db{suffix}").unlink(missing_ok=True)
    proc = run_cli(home, "users", "list")
    assert proc.returncode == 1 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr


def test_broken_config_is_a_clear_error(home):
    assert run_cli(home, "init").returncode == 0
    (home / "config.toml").write_text("[server\nport = 'x'")
    proc = run_cli(home, "models", "list")
    assert proc.returncode == 1 and "not valid TOML" in proc.stderr
    (home / "config.toml").write_text("[server]\nport = 'x'\n")
    proc = run_cli(home, "models", "list")
    assert proc.returncode == 1 and "port must be int" in proc.stderr
    (home / "config.toml").write_text('[providers.x]\nbase_url = "https://x.y/v1"\nheaders = {A = "b\\r\\nC: d"}\n')
    proc = run_cli(home, "providers", "list")
    assert proc.returncode == 1 and "cannot contain line breaks" in proc.stderr


def test_config_toml_refuses_a_secret(home):
    assert run_cli(home, "init").returncode == 0
    (home / "config.toml").write_text('[providers.x]\nbase_url = "https://x.y/v1"\napi_key = "sk-oops"\n')
    proc = run_cli(home, "providers", "list")
    assert proc.returncode == 1 and "secrets do not belong in config.toml" in proc.stderr


def test_config_example_loads_and_documents_every_setting():
    from dataclasses import fields
    from pathlib import Path

    from hubproxy.config import BillingSettings, Config, ServerSettings, StoreSettings, Timeouts

    example = Path(__file__).parent.parent / "config.example.toml"
    config = Config.load(example)
    assert config.models["ds"].upstream_model == "deepseek-chat"
    text = example.read_text()
    for kind in (ServerSettings, Timeouts, BillingSettings, StoreSettings):
        for field in fields(kind):
            line = next(line for line in text.splitlines() if line.startswith(f"{field.name} ="))
            assert "#" in line, f"{field.name} needs a comment"
            assert str(getattr(kind(), field.name)).lower() in line.lower(), f"{field.name} default differs"


def test_providers_test_reaches_the_upstream_with_its_key(cli, upstream, monkeypatch):
    cli("init")
    cli("providers", "add", "fake", "--base-url", upstream.base_url, "--api-key-env", "FAKE_KEY")
    monkeypatch.setenv("FAKE_KEY", upstream.api_key)
    assert "OK, 7 models" in cli("providers", "test", "fake").stdout
    monkeypatch.setenv("FAKE_KEY", "wrong")
    bad = cli("providers", "test", "fake", ok=False)
    assert bad.exit_code == 1 and "HTTP 401" in bad.output


def test_providers_test_sends_the_providers_own_headers_as_calls_do(cli, upstream, monkeypatch):
    cli("init")
    cli(
        "providers",
        "add",
        "fake",
        "--base-url",
        upstream.base_url,
        "--api-key-env",
        "FAKE_KEY",
        "--header",
        "X-Org: t7",
    )
    monkeypatch.setenv("FAKE_KEY", upstream.api_key)
    assert "OK, 7 models" in cli("providers", "test", "fake").stdout
    probe = [r for r in upstream.requests if r["path"] == "/v1/models"][-1]
    assert probe["headers"]["X-Org"] == "t7" and probe["headers"]["Authorization"] == f"Bearer {upstream.api_key}"
    assert probe["headers"]["User-Agent"].startswith("hubproxy/")


def test_presets_fill_the_base_url_and_key_variable(cli):
    cli("init")
    presets = cli.json("providers", "presets")
    names = {p["name"] for p in presets}
    assert {
        "deepseek",
        "qwen",
        "glm",
        "moonshot",
        "doubao",
        "openai",
        "anthropic",
        "gemini",
        "openrouter",
        "groq",
        "mistral",
        "xai",
        "together",
        "siliconflow",
        "ollama",
        "vllm",
        "lmstudio",
    } <= names
    assert all(p["source"].startswith("http") for p in presets)
    assert {"deepseek", "openai", "anthropic", "gemini", "glm", "moonshot", "xai"} <= {
        p["name"] for p in presets if p["models"] and p["catalog"]
    }
    added = cli.json("providers", "add", "kimi", "--preset", "moonshot")
    assert added["base_url"] == "https://api.moonshot.ai/v1" and added["api_key"] == "env:MOONSHOT_API_KEY"
    assert added["preset"] == "moonshot" and added["models_added"] == ["kimi-k2.6", "kimi-k3"]
    listed = {m["name"]: m for m in cli.json("models", "list")}
    # genai-prices 0.2.5, moonshotai/kimi-k2.6 (https://platform.kimi.ai/docs/pricing/chat.md)
    assert listed["kimi-k2.6"]["input_price"] == "0.95" and listed["kimi-k2.6"]["output_price"] == "4"
    assert listed["kimi-k2.6"]["cached_input_price"] == "0.16"
    again = cli.json("providers", "add", "kimi2", "--preset", "moonshot")
    assert again["models_added"] == [], "models already served are left to their first provider"
    bare = cli.json("providers", "add", "ds", "--preset", "deepseek", "--no-models")
    assert bare["models_added"] == [] and "deepseek-chat" not in {m["name"] for m in cli.json("models", "list")}
    shown = cli("providers", "add", "oa", "--preset", "openai").stdout
    assert "gpt-5.4-mini: genai-prices " in shown and "openai/gpt-5.4-mini" in shown
    cli("providers", "add", "gm", "--preset", "gemini")
    pro = {m["name"]: m for m in cli.json("models", "list")}["gemini-2.5-pro"]
    assert pro["tiers"] == [
        {"above_prompt_tokens": 200000, "input_price": "2.5", "output_price": "15", "cached_input_price": "0.25"}
    ]
    xai = cli.json("providers", "add", "grok", "--preset", "xai")
    assert xai["reasoning"] == "added", "xAI counts reasoning beside the completion tokens"
    anth = cli.json("providers", "add", "anth", "--preset", "anthropic", "--no-models")
    assert anth["messages_base_url"] == "https://api.anthropic.com"
    elsewhere = ("--base-url", "http://127.0.0.1:9/v1", "--no-models", "--replace")
    moved = cli.json("providers", "add", "anth", "--preset", "anthropic", *elsewhere)
    assert moved["messages_base_url"] is None, "another base URL is not paired with the vendor's Messages address"


def test_config_toml_keeps_the_users_comments_and_layout_through_every_change(cli, home):
    """Every CLI change goes into the user's own file: comments, their order and what did not change
    stay as written; what changed is there, and the file still loads."""
    cli("init")
    cli("providers", "add", "fake", "--base-url", "http://127.0.0.1:9/v1", "--api-key-env", "X")
    config = home / "config.toml"
    text = config.read_text()
    text = text.replace("[providers.fake]", "# the team's proxy, ask Ana before changing\n[providers.fake]  # primary")
    text = text.replace("[billing]\n", "[billing]\n# raised for long agent runs\n", 1)
    config.write_text(text)
    cli("models", "add", "m", "--provider", "fake", "--input-price", "1", "--output-price", "2")
    cli("providers", "add", "other", "--base-url", "http://127.0.0.1:8/v1", "--api-key-env", "Y")
    cli("models", "add", "m", "--provider", "fake", "--input-price", "1.5", "--output-price", "2", "--replace")
    cli("models", "add", "gone", "--provider", "other", "--input-price", "1", "--output-price", "2")
    cli("models", "remove", "gone")
    after = config.read_text()
    assert "# the team's proxy, ask Ana before changing\n[providers.fake]  # primary" in after
    assert "[billing]\n# raised for long agent runs\n" in after
    loaded = tomllib.loads(after)
    assert loaded["models"]["m"]["input_price"] == "1.5" and "gone" not in loaded["models"]
    assert loaded["providers"]["other"]["base_url"] == "http://127.0.0.1:8/v1"
    assert after.index("[providers.fake]") < after.index("[providers.other]") < after.index("[models.m]")
