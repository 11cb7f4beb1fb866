"""Gemini CLI itself, headless (`gemini -p … --output-format json`), through hubproxy, set up only by
`hubproxy connect gemini-cli --write`: a plain answer and a turn that writes a file with Gemini CLI's
own write_file tool, on a model served over Gemini's API (relayed as bytes) and on a chat-only one
(translated). Usage statistics, telemetry and update checks are off; nothing leaves 127.0.0.1.

`.ci/run` installs the pinned Gemini CLI outside the repo and sets HUBPROXY_GEMINI_CLI; elsewhere
these tests are skipped unless that variable names the binary.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PRICE_IN, PRICE_OUT, Gateway, configure, run_cli, serving
from tests.fake_upstream import REPLY, WRITTEN

GEMINI = os.environ.get("HUBPROXY_GEMINI_CLI", "")
pytestmark = pytest.mark.skipif(not Path(GEMINI).is_file(), reason="HUBPROXY_GEMINI_CLI does not name Gemini CLI")
# what a user who wants nothing sent to Google sets; the test's machine has no route there anyway
QUIET_SETTINGS = {
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


@pytest.fixture
def gemini_hub(home, cli, upstream):
    configure(cli, upstream, native=True)
    origin = upstream.base_url.removesuffix("/v1")
    cli("providers", "add", "goog", "--base-url", origin, "--api", "gemini", "--api-key-env", "UPSTREAM_KEY")
    prices = ("--input-price", PRICE_IN, "--output-price", PRICE_OUT)
    cli("models", "add", "gemini-2.5-pro", "--provider", "goog", "--upstream-model", "gemini-native", *prices)
    cli("models", "add", "gemini-writes", "--provider", "goog", "--upstream-model", "gemini-writer", *prices)
    cli("models", "add", "chat-writes", "--provider", "fake", "--upstream-model", "gemini-writer", *prices)
    yield from serving(home, cli, upstream)


def gemini_cli(hub: Gateway, model: str, prompt: str, workdir: Path) -> dict:
    """Run `gemini -p` in `workdir` (also its HOME), after `hubproxy connect gemini-cli --write`."""
    (workdir / ".gemini").mkdir()
    (workdir / ".gemini" / "settings.json").write_text(json.dumps(QUIET_SETTINGS))
    base = f"http://127.0.0.1:{hub.port}"
    connect = ["connect", "gemini-cli", "--key", hub.key, "--model", model, "--base-url", base, "--write"]
    written = run_cli(hub.home, *connect, env={"HOME": str(workdir)})
    assert written.returncode == 0, written.stderr
    settings = json.loads((workdir / ".gemini" / "settings.json").read_text())
    assert settings["privacy"] == {"usageStatisticsEnabled": False}, "connect keeps what the file held"
    assert f"GEMINI_API_KEY={hub.key}" in (workdir / ".gemini" / ".env").read_text()
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "GEMINI_CLI_TRUST_WORKSPACE": "true"}
    done = subprocess.run(
        [GEMINI, "-p", prompt, "--output-format", "json", "--approval-mode", "yolo"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no route for" not in hub.log()  # nothing the client called is missing
    return json.loads(done.stdout[done.stdout.index("{") :])


def billed(hub: Gateway) -> list[tuple]:
    with hub.db() as db:
        return db.execute("SELECT model, endpoint, status, cost FROM usage ORDER BY id").fetchall()


def test_gemini_cli_gets_an_answer_from_a_model_served_over_geminis_api(gemini_hub, tmp_path):
    result = gemini_cli(gemini_hub, "gemini-2.5-pro", "say hello", tmp_path)
    assert result["response"].split() == REPLY.split()
    sent = [r for r in gemini_hub.upstream.requests if r["path"].startswith("/v1beta/")][-1]
    assert sent["path"] == "/v1beta/models/gemini-native:streamGenerateContent"
    assert sent["headers"]["x-goog-api-key"] == gemini_hub.upstream.api_key
    calls = billed(gemini_hub)
    assert calls and all(row[1:3] == ("/generateContent", "ok") and row[3] > 0 for row in calls)


def test_gemini_cli_gets_an_answer_from_a_chat_only_model(gemini_hub, tmp_path):
    result = gemini_cli(gemini_hub, "deepseek-chat", "say hello", tmp_path)
    assert result["response"].split() == REPLY.split()
    chat = [r for r in gemini_hub.upstream.requests if r["path"] == "/v1/chat/completions"][-1]["body"]
    assert chat["stream"] is True and chat["tools"]  # Gemini CLI's tools, as chat functions
    assert [row[:3] for row in billed(gemini_hub)][-1] == ("deepseek-chat", "/generateContent", "ok")


@pytest.mark.parametrize("model", ["gemini-writes", "chat-writes"])
def test_gemini_cli_writes_a_file_the_model_asks_for_and_sends_the_result_back(gemini_hub, tmp_path, model):
    result = gemini_cli(gemini_hub, model, "write note.txt", tmp_path)
    assert (tmp_path / "note.txt").read_text() == WRITTEN
    assert result["stats"]["tools"]["byName"]["write_file"]["success"] == 1
    assert result["response"].strip()
    last = gemini_hub.upstream.requests[-1]["body"]
    if model == "chat-writes":
        assert last["messages"][-1]["role"] == "tool" and "note.txt" in last["messages"][-1]["content"]
    else:
        (result_part,) = last["contents"][-1]["parts"]
        assert result_part["functionResponse"]["name"] == "write_file"
    assert len([row for row in billed(gemini_hub) if row[0] == model]) == 2
