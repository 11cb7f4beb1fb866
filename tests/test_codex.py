"""Codex CLI itself, headless (`codex exec --skip-git-repo-check …`), through hubproxy's /v1/responses
over a WebSocket: a plain answer and a turn where the model runs a shell command through Codex's
`exec_command` tool and gets its output back, against a chat-only upstream (translated), and a plain
answer from an upstream that speaks Responses (relayed); and over HTTP when the server serves no
sockets (Codex falls back on the 426). Configured only by `hubproxy connect codex --write` (a
`[model_providers.hubproxy]` with `wire_api = "responses"` and `supports_websockets = true`) and the
key in HUBPROXY_API_KEY.

`.ci/run` installs the pinned Codex outside the repo and sets HUBPROXY_CODEX; elsewhere these tests
are skipped unless that variable names the binary.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, run_cli
from tests.fake_upstream import REPLY

CODEX = os.environ.get("HUBPROXY_CODEX", "")
pytestmark = pytest.mark.skipif(not Path(CODEX).is_file(), reason="HUBPROXY_CODEX does not name Codex")


def codex(hub: Gateway, model: str, prompt: str, tmp_path: Path) -> str:
    """`codex exec` with a fresh CODEX_HOME set up only by `hubproxy connect codex --write`; its stdout."""
    codex_home, workdir = tmp_path / "codex-home", tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{hub.port}"
    connect = ["connect", "codex", "--model", model, "--base-url", base, "--write"]
    written = run_cli(hub.home, *connect, env={"CODEX_HOME": str(codex_home)})
    assert written.returncode == 0 and "export HUBPROXY_API_KEY=" in written.stdout, written.stderr
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(codex_home),
        "CODEX_HOME": str(codex_home),
        "HUBPROXY_API_KEY": hub.key,
    }
    done = subprocess.run(
        [CODEX, "exec", "--skip-git-repo-check", prompt],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no route for" not in hub.log()  # nothing the client called is missing
    return done.stdout


def over_a_socket(hub: Gateway) -> bool:
    return '"GET /v1/responses" 101' in hub.log()


def billed(hub: Gateway) -> list[tuple]:
    with hub.db() as db:
        return db.execute("SELECT model, status FROM usage WHERE endpoint = '/responses'").fetchall()


def test_codex_gets_an_answer_from_a_chat_only_model(hub, tmp_path):
    assert codex(hub, "deepseek-chat", "say hello", tmp_path).split() == REPLY.split()
    assert over_a_socket(hub)
    assert billed(hub) == [("deepseek-chat", "ok")]  # its prewarm (`generate: false`) is not a call
    sent = [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"][-1]
    assert "exec_command" in [t["function"]["name"] for t in sent["tools"]]


def test_codex_runs_the_shell_command_the_model_asks_for_and_sends_the_output_back(hub, tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "note.txt").write_text("pineapple\n")
    out = codex(hub, "codex-tool", "what does note.txt say?", tmp_path)
    assert "the tool said" in out and "pineapple" in out
    second = [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"][-1]["messages"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "exec_command"
    assert second[-1]["role"] == "tool" and "pineapple" in second[-1]["content"]
    assert billed(hub) == [("codex-tool", "ok"), ("codex-tool", "ok")] and over_a_socket(hub)


def test_codex_on_a_responses_upstream(hub, tmp_path):
    assert codex(hub, "gpt-native", "say hello", tmp_path).split() == REPLY.split()
    sent = [r for r in hub.upstream.requests if r["path"] == "/v1/responses"][-1]
    assert sent["body"]["model"] == "gpt-native" and sent["body"]["stream"] is True and over_a_socket(hub)
    assert "generate" not in sent["body"]
    assert billed(hub) == [("gpt-native", "ok")]


def test_codex_falls_back_to_http_at_once_where_no_socket_is_served(hub, tmp_path):
    config = hub.home / "config.toml"
    config.write_text(config.read_text().replace("websocket = true", "websocket = false"))
    hub.stop()
    hub.start()
    assert codex(hub, "deepseek-chat", "say hello", tmp_path).split() == REPLY.split()
    assert '"GET /v1/responses" 426' in hub.log() and not over_a_socket(hub)
    assert billed(hub) == [("deepseek-chat", "ok")]
