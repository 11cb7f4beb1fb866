"""Claude Code itself, headless (`claude -p … --output-format json`), through hubproxy: a plain answer,
a turn where the model calls Claude Code's Read tool and gets its result back, a thinking model, and a
native Messages upstream. Telemetry, error reports and update checks are off; nothing leaves 127.0.0.1.

`.ci/run` installs the pinned Claude Code outside the repo and sets HUBPROXY_CLAUDE; elsewhere these
tests are skipped unless that variable names the binary.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, run_cli
from tests.fake_upstream import REPLY

CLAUDE = os.environ.get("HUBPROXY_CLAUDE", "")
pytestmark = pytest.mark.skipif(not Path(CLAUDE).is_file(), reason="HUBPROXY_CLAUDE does not name Claude Code")
QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
}


def claude_code(hub: Gateway, model: str, prompt: str, workdir: Path) -> dict:
    """Run `claude -p` in `workdir`, set up only by `hubproxy connect claude-code --write` (its
    ~/.claude/settings.json, HOME being `workdir`)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), **QUIET}
    base = f"http://127.0.0.1:{hub.port}"
    connect = ["connect", "claude-code", "--key", hub.key, "--model", model, "--base-url", base, "--write"]
    written = run_cli(hub.home, *connect, env={"HOME": str(workdir)})
    assert written.returncode == 0, written.stderr
    settings = json.loads((workdir / ".claude" / "settings.json").read_text())
    assert settings["env"]["ANTHROPIC_AUTH_TOKEN"] == hub.key
    done = subprocess.run(
        [CLAUDE, "-p", prompt, "--output-format", "json"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no route for" not in hub.log()  # nothing the client called is missing
    return json.loads(done.stdout)


def billed_calls(hub: Gateway) -> list[tuple]:
    with hub.db() as db:
        return db.execute("SELECT model, status, cost FROM usage WHERE endpoint = '/messages'").fetchall()


def test_claude_code_gets_a_plain_answer_from_a_chat_only_model(hub, tmp_path):
    result = claude_code(hub, "deepseek-chat", "say hello", tmp_path)
    assert result["is_error"] is False and result["result"].split() == REPLY.split()
    assert [(model, status) for model, status, _ in billed_calls(hub)] == [("deepseek-chat", "ok")]
    assert hub.upstream.requests[-1]["body"]["tools"]  # Claude Code's tools, translated to chat functions


def test_claude_code_runs_a_tool_the_model_asks_for_and_sends_the_result_back(hub, tmp_path):
    (tmp_path / "note.txt").write_text("pineapple\n")
    result = claude_code(hub, "cc-tool", "what does note.txt say?", tmp_path)
    assert result["is_error"] is False and "pineapple" in result["result"] and result["num_turns"] == 2
    second = [r for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"][-1]["body"]["messages"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "Read"
    assert (
        second[-1]["role"] == "tool"
        and second[-1]["tool_call_id"] == "call_read"
        and "pineapple" in second[-1]["content"]
    )
    assert len(billed_calls(hub)) == 2 and all(cost > 0 for _, _, cost in billed_calls(hub))


def test_claude_code_takes_a_thinking_models_answer(hub, tmp_path):
    result = claude_code(hub, "reasoning", "think, then say hello", tmp_path)
    assert result["is_error"] is False and result["result"].split() == REPLY.split()


def test_claude_code_on_a_native_messages_upstream(hub, tmp_path):
    result = claude_code(hub, "claude-native", "say hello", tmp_path)
    assert result["is_error"] is False and result["result"].split() == REPLY.split()
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/messages"][-1]
    assert sent["headers"]["x-api-key"] == hub.upstream.api_key and sent["body"]["model"] == "claude-native"
    assert billed_calls(hub)[-1][:2] == ("claude-native", "ok")
