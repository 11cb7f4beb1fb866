"""`hubproxy doctor TOOL`: each tool's config read as the tool reads it, checked against the running
gateway, with one small call in the tool's own wire format; every mistake users make named with its
fix (the CLI as a separate process, HOME a fresh directory)."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway, run_cli, wait_for

TOOLS = ["claude-code", "codex", "gemini-cli", "aider", "continue"]


def doctor(gateway: Gateway, home, tool: str, env: dict | None = None, *args: str):
    return run_cli(
        gateway.home,
        "doctor",
        tool,
        *args,
        env={"HOME": str(home), "CODEX_HOME": str(home / "codex"), **(env or {})},
        cwd=home,
    )


def connect(gateway: Gateway, home, tool: str, base: str, model: str = "deepseek-chat", key: str | None = None):
    written = run_cli(
        gateway.home,
        *("connect", tool, "--key", key or gateway.key, "--model", model, "--base-url", base, "--write"),
        env={"HOME": str(home), "CODEX_HOME": str(home / "codex")},
        cwd=home,
    )
    assert written.returncode == 0, written.stderr


@pytest.mark.parametrize("tool", TOOLS)
def test_a_tool_set_up_by_connect_passes_and_its_call_is_made_in_its_format(gateway, tmp_path, tool):
    base = f"http://127.0.0.1:{gateway.port}"
    connect(gateway, tmp_path, tool, base)
    checked = doctor(gateway, tmp_path, tool, {"HUBPROXY_API_KEY": gateway.key})
    assert checked.returncode == 0 and f"{tool}: ok" in checked.stdout, checked.stdout + checked.stderr
    paths = {"claude-code": "/messages", "codex": "/responses", "gemini-cli": "/generateContent"}
    with gateway.db() as db:
        (endpoint,) = db.execute("SELECT endpoint FROM usage ORDER BY id DESC LIMIT 1").fetchone()
    assert endpoint == paths.get(tool, "/chat/completions")


def test_each_mistake_is_named_with_its_fix(gateway, tmp_path, cli):
    base = f"http://127.0.0.1:{gateway.port}"
    connect(gateway, tmp_path, "claude-code", base)
    settings = tmp_path / ".claude" / "settings.json"
    settings.write_text(settings.read_text().replace(f'"{base}"', f'"{base}/v1"'))
    said = doctor(gateway, tmp_path, "claude-code")
    assert said.returncode == 1 and f"use {base}" in said.stdout and "ends in /v1" in said.stdout
    connect(gateway, tmp_path, "aider", base + "/v1/v1")  # connect writes it right whatever it is given
    assert doctor(gateway, tmp_path, "aider").returncode == 0
    aider = tmp_path / ".aider.conf.yml"
    aider.write_text(aider.read_text().replace(f"{base}/v1", base))
    assert "lacks /v1" in doctor(gateway, tmp_path, "aider").stdout
    aider.write_text(aider.read_text().replace(base, f"{base}/v1/v1"))
    assert "/v1 twice" in doctor(gateway, tmp_path, "aider").stdout
    connect(gateway, tmp_path, "gemini-cli", "http://127.0.0.1:1")
    assert "cannot connect to 127.0.0.1:1" in doctor(gateway, tmp_path, "gemini-cli").stdout
    connect(gateway, tmp_path, "gemini-cli", base)
    dotenv = tmp_path / ".gemini" / ".env"
    dotenv.write_text(dotenv.read_text().replace("GEMINI_MODEL=deepseek-chat", "GEMINI_MODEL=no-such-model"))
    said = doctor(gateway, tmp_path, "gemini-cli").stdout
    assert "'no-such-model' is not one this key may call" in said and "deepseek-chat" in said
    connect(gateway, tmp_path, "claude-code", base, model="fail-500")
    said = doctor(gateway, tmp_path, "claude-code").stdout
    assert "a test call to /v1/messages failed with HTTP 500" in said
    key_id = cli.json("keys", "list", "--user", "dev@example.com")[0]["id"]
    connect(gateway, tmp_path, "claude-code", base)
    cli("keys", "revoke", key_id)
    wait_for(lambda: not gateway.key_works(gateway.key))
    said = doctor(gateway, tmp_path, "claude-code")
    assert said.returncode == 1 and "the key is refused" in said.stdout and "keys create" in said.stdout
    codex = doctor(gateway, tmp_path, "codex")
    assert "no gateway address" in codex.stdout or "HUBPROXY_API_KEY is not set" in codex.stdout
    unknown = run_cli(gateway.home, "doctor", "vim")
    assert unknown.returncode != 0 and "no tool 'vim'" in unknown.stderr + unknown.stdout
    assert "Traceback" not in said.stderr
