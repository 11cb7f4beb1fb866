"""`GET /v1/key` and `hubproxy statusline`: a key's spend today, its cap left and the balance, for
Claude Code's status line, read with the tool's own key (the CLI as a separate process, as Claude Code
runs it, with the environment `connect claude-code --write --statusline` gives it)."""

from __future__ import annotations

import json
from decimal import Decimal

from tests.conftest import HELLO, raw_request, run_cli, wait_for


def test_a_key_sees_its_own_spend_cap_and_balance(gateway, cli):
    key = cli.json("keys", "create", "--user", "dev@example.com", "--name", "capped", "--spend-limit", "2")["key"]
    wait_for(lambda: gateway.key_works(key))
    gateway.client(key=key).chat.completions.create(model="deepseek-chat", messages=HELLO)
    url = f"http://127.0.0.1:{gateway.port}/v1/key"

    def status() -> dict:
        return raw_request("GET", url, headers={"Authorization": f"Bearer {key}"}).json()

    spent = wait_for(lambda: Decimal(str(status()["spend_today"])) > 0 and status())
    assert spent["name"] == "capped" and spent["budget_period"] is None  # a cap over the key's life
    assert Decimal(str(spent["spend_left"])) == Decimal("2") - Decimal(str(spent["spend_today"]))
    assert Decimal(str(spent["balance"])) == Decimal("5") - Decimal(str(spent["spend_today"]))
    plain = raw_request("GET", url, headers={"Authorization": f"Bearer {gateway.key}"}).json()
    assert plain["spend_limit"] is None and plain["spend_left"] is None and plain["spend_today"] == 0
    assert raw_request("GET", url, headers={"Authorization": "Bearer sk-hp-nope"}).status == 401


def test_statusline_prints_one_line_from_claude_codes_environment(gateway, cli, tmp_path):
    key = cli.json("keys", "create", "--user", "dev@example.com", "--name", "cc", "--spend-limit", "2")["key"]
    wait_for(lambda: gateway.key_works(key))
    gateway.client(key=key).chat.completions.create(model="deepseek-chat", messages=HELLO)
    base = f"http://127.0.0.1:{gateway.port}"
    written = run_cli(
        gateway.home,
        *(
            "connect",
            "claude-code",
            "--key",
            key,
            "--model",
            "deepseek-chat",
            "--base-url",
            base,
            "--write",
            "--statusline",
        ),
        env={"HOME": str(tmp_path)},
    )
    assert written.returncode == 0, written.stderr
    settings = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    assert settings["statusLine"]["type"] == "command" and settings["statusLine"]["command"].endswith("statusline")
    session = json.dumps({"session_id": "s", "model": {"id": "deepseek-chat"}})

    def shown() -> str:
        done = run_cli(gateway.home, "statusline", input=session, env=settings["env"])
        assert done.returncode == 0 and done.stdout.count("\n") == 1, done
        return done.stdout

    line = wait_for(lambda: "today $0.00 " not in shown() and shown())
    assert line == "hubproxy · today $0.01 · cap left $1.99 of $2.00/total · balance $4.99\n"
    refused = run_cli(
        gateway.home, "statusline", input=session, env={**settings["env"], "ANTHROPIC_AUTH_TOKEN": "sk-hp-no"}
    )
    assert refused.returncode == 0 and "refused the key (HTTP 401)" in refused.stdout
    away = run_cli(gateway.home, "statusline", "--base-url", "http://127.0.0.1:1", "--key", key, input=session)
    assert away.returncode == 0 and "unreachable" in away.stdout and away.stdout.count("\n") == 1
    wrong_tool = run_cli(gateway.home, "connect", "codex", "--statusline")
    assert wrong_tool.returncode != 0 and "--statusline is for claude-code" in wrong_tool.stderr + wrong_tool.stdout
