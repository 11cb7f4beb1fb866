"""`hubproxy connect TOOL`: printed setups in each tool's form, and --write merging into the tool's own
config without losing what was there."""

from __future__ import annotations

import json
import stat
import tomllib

import yaml

from tests.conftest import Cli


def setup_home(cli) -> None:
    cli("init")
    cli("providers", "add", "d", "--base-url", "https://d.test/v1")
    cli("models", "add", "ds", "--provider", "d", "--input-price", "1", "--output-price", "1")


def test_each_tool_gets_the_address_in_its_own_form(cli):
    setup_home(cli)
    claude = cli("connect", "claude-code", "--key", "sk-hp-x", "--base-url", "https://hub.example.com/v1").stdout
    assert "ANTHROPIC_BASE_URL=https://hub.example.com\n" in claude and "ANTHROPIC_MODEL=ds" in claude
    codex = cli("connect", "codex", "--key", "sk-hp-x").stdout
    assert 'base_url = "http://localhost:8080/v1"' in codex and 'wire_api = "responses"' in codex
    assert "export HUBPROXY_API_KEY=sk-hp-x" in codex
    assert "--openai-api-base http://localhost:8080/v1" in cli("connect", "aider").stdout
    assert "https" in cli("connect", "cursor").stdout
    gemini = cli("connect", "gemini-cli", "--key", "sk-hp-x", "--base-url", "https://hub.example.com/v1").stdout
    assert "GOOGLE_GEMINI_BASE_URL=https://hub.example.com\n" in gemini and "GEMINI_API_KEY=sk-hp-x" in gemini
    assert '"selectedType": "gemini-api-key"' in gemini
    qwen = cli("connect", "qwen-code", "--key", "sk-hp-x").stdout
    assert "OPENAI_BASE_URL=http://localhost:8080/v1" in qwen and '"selectedType": "openai"' in qwen
    opencode = cli("connect", "opencode", "--key", "sk-hp-x").stdout
    assert '"baseURL": "http://localhost:8080/v1"' in opencode and '"model": "hubproxy/ds"' in opencode


def test_write_merges_keeps_a_backup_and_hides_keys(cli, tmp_path, monkeypatch):
    setup_home(cli)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex"))
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"theme": "dark", "env": {"FOO": "1"}}))
    cli("connect", "claude-code", "--key", "sk-hp-x", "--write")
    written = json.loads(settings.read_text())
    assert (
        written["theme"] == "dark"
        and written["env"]["FOO"] == "1"
        and written["env"]["ANTHROPIC_AUTH_TOKEN"] == "sk-hp-x"
    )
    assert json.loads((settings.parent / "settings.json.hubproxy-backup").read_text())["theme"] == "dark"
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    (tmp_path / "codex").mkdir()
    (tmp_path / "codex" / "config.toml").write_text('approval_policy = "never"\n[model_providers.other]\nname = "o"\n')
    cli("connect", "codex", "--write")
    codex = tomllib.loads((tmp_path / "codex" / "config.toml").read_text())
    assert codex["approval_policy"] == "never" and set(codex["model_providers"]) == {"other", "hubproxy"}
    assert (
        codex["model_provider"] == "hubproxy" and codex["model_providers"]["hubproxy"]["env_key"] == "HUBPROXY_API_KEY"
    )
    cli("connect", "continue", "--key", "sk-hp-x", "--write")
    cli("connect", "continue", "--key", "sk-hp-y", "--write")
    models = yaml.safe_load((tmp_path / ".continue" / "config.yaml").read_text())["models"]
    assert len(models) == 1 and models[0]["apiKey"] == "sk-hp-y" and models[0]["provider"] == "openai"
    (tmp_path / ".gemini" / ".env").parent.mkdir()
    (tmp_path / ".gemini" / ".env").write_text("# mine\nOTHER=1\nGEMINI_API_KEY=old\n")
    cli("connect", "gemini-cli", "--key", "sk-hp-x", "--write")
    dotenv = (tmp_path / ".gemini" / ".env").read_text()
    assert "OTHER=1\n" in dotenv and "GEMINI_API_KEY=sk-hp-x\n" in dotenv and "old" not in dotenv
    assert stat.S_IMODE((tmp_path / ".gemini" / ".env").stat().st_mode) == 0o600
    gemini = json.loads((tmp_path / ".gemini" / "settings.json").read_text())
    assert gemini == {"security": {"auth": {"selectedType": "gemini-api-key"}}, "model": {"name": "ds"}}


def test_user_gets_a_key_named_after_the_tool(cli):
    setup_home(cli)
    cli("users", "add", "dev@example.com")
    out = cli("connect", "openai", "--user", "dev@example.com").stdout
    assert "export OPENAI_API_KEY=sk-hp-" in out
    assert [k["name"] for k in cli.json("keys", "list", "--user", "dev@example.com")] == ["openai"]


def test_connect_mistakes_are_one_line_errors(cli):
    setup_home(cli)
    for args, says in (
        (["connect", "vim"], "no tool 'vim'"),
        (["connect", "codex", "--model", "nope"], "no model 'nope'"),
        (["connect", "aider", "--write"], "--write needs the key"),
        (["connect", "cursor", "--key", "k", "--write"], "its own app"),
        (["connect", "openai", "--key", "k", "--user", "u@x.co"], "not both"),
    ):
        result = cli(*args, ok=False)
        assert result.exit_code != 0 and says in result.output and "Traceback" not in result.output


def test_the_model_is_never_a_silent_pick(cli, tmp_path):
    setup_home(cli)
    assert "ANTHROPIC_MODEL=ds" in cli("connect", "claude-code").stdout  # the one model served
    cli("models", "add", "another", "--provider", "d", "--input-price", "1", "--output-price", "1")
    several = cli("connect", "claude-code", ok=False)
    assert several.exit_code == 1 and "give --model NAME, one of: another, ds" in several.output
    assert 'model="another"' in cli("connect", "openai", "--model", "another").stdout
    elsewhere = Cli(tmp_path / "laptop")  # a team member's machine: no models of its own
    shared = elsewhere("connect", "claude-code", "--model", "team-model", "--base-url", "https://hub.example").stdout
    assert "ANTHROPIC_MODEL=team-model" in shared
    assert "give --model NAME" in elsewhere("connect", "codex", ok=False).output


def test_a_second_write_keeps_the_first_backup_and_disconnect_puts_everything_back(cli, tmp_path, monkeypatch):
    setup_home(cli)
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    original = json.dumps({"theme": "dark"})
    settings.write_text(original)
    cli("connect", "claude-code", "--key", "sk-hp-x", "--write")
    cli("connect", "claude-code", "--key", "sk-hp-y", "--write")
    assert (settings.parent / "settings.json.hubproxy-backup").read_text() == original
    first_write = json.loads((settings.parent / "settings.json.hubproxy-backup.1").read_text())
    assert first_write["env"]["ANTHROPIC_AUTH_TOKEN"] == "sk-hp-x"
    assert "restored" in cli("disconnect", "claude-code").stdout
    assert settings.read_text() == original
    assert sorted(p.name for p in settings.parent.iterdir()) == ["settings.json"]
    cli("connect", "gemini-cli", "--key", "sk-hp-x", "--write")  # no files before: disconnect removes them
    cli("connect", "gemini-cli", "--key", "sk-hp-y", "--write")
    assert "removed" in cli("disconnect", "gemini-cli").stdout
    assert not list((tmp_path / ".gemini").iterdir())
    assert "left" in cli("disconnect", "continue").stdout
    refused = cli("disconnect", "cursor", ok=False)
    assert refused.exit_code != 0 and "no config files" in refused.output
