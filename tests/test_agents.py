"""OpenCode (`opencode run`) and Qwen Code (`qwen -p`) themselves, headless, through hubproxy, each set
up only by `hubproxy connect TOOL --write` (and checked by `hubproxy doctor TOOL`): a plain answer from
a chat model (relayed) and from a Messages-only one (translated), and a turn that writes a file with the
tool's own write tool. Update checks, sharing and usage statistics are off; nothing leaves 127.0.0.1.

`.ci/run` installs the pinned tools outside the repo and sets HUBPROXY_OPENCODE and HUBPROXY_QWEN_CODE;
elsewhere these tests are skipped unless those variables name the binaries.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, run_cli, wait_for
from tests.fake_upstream import REPLY, WRITTEN

OPENCODE = os.environ.get("HUBPROXY_OPENCODE", "")
QWEN = os.environ.get("HUBPROXY_QWEN_CODE", "")
QWEN_QUIET = {
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


def set_up(hub: Gateway, tool: str, model: str, home: Path) -> None:
    wait_for(lambda: model in [m.id for m in hub.client().models.list()])  # a model just added: once served
    base = f"http://127.0.0.1:{hub.port}"
    connect = ["connect", tool, "--key", hub.key, "--model", model, "--base-url", base, "--write"]
    written = run_cli(hub.home, *connect, env={"HOME": str(home)})
    assert written.returncode == 0, written.stderr
    checked = run_cli(hub.home, "doctor", tool, env={"HOME": str(home)})
    assert checked.returncode == 0 and f"{tool}: ok" in checked.stdout, checked.stdout + checked.stderr


def run_tool(hub: Gateway, command: list[str], home: Path, extra_env: dict | None = None) -> str:
    workdir = home / "work"
    workdir.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), **(extra_env or {})}
    done = subprocess.run(
        command, env=env, cwd=workdir, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no route for" not in hub.log()
    return done.stdout


def calls_of(hub: Gateway, model: str) -> list[tuple]:
    with hub.db() as db:
        return db.execute("SELECT endpoint, status FROM usage WHERE model = ?", (model,)).fetchall()


# --- OpenCode ---------------------------------------------------------------------------------------

needs_opencode = pytest.mark.skipif(not Path(OPENCODE).is_file(), reason="HUBPROXY_OPENCODE does not name OpenCode")
OPENCODE_QUIET = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_SHARE": "1",
}


def opencode(hub: Gateway, model: str, prompt: str, home: Path) -> str:
    set_up(hub, "opencode", model, home)
    return run_tool(hub, [OPENCODE, "run", "--auto", prompt], home, OPENCODE_QUIET)


@needs_opencode
@pytest.mark.parametrize("model", ["deepseek-chat", "claude-native"], ids=["chat", "messages"])
def test_opencode_gets_an_answer(hub, tmp_path, model):
    assert REPLY in opencode(hub, model, "say hello", tmp_path)
    assert calls_of(hub, model) and all(row == ("/chat/completions", "ok") for row in calls_of(hub, model))


@needs_opencode
def test_opencode_writes_a_file_the_model_asks_for(hub, cli, tmp_path):
    cli(*("models", "add", "opencode-writer", "--provider", "fake", "--input-price", "0.27", "--output-price", "1.10"))
    (tmp_path / "work").mkdir()
    opencode(hub, "opencode-writer", "write note.txt", tmp_path)
    assert (tmp_path / "work" / "note.txt").read_text() == WRITTEN
    last = [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"][-1]["messages"]
    assert last[-1]["role"] == "tool"


# --- Qwen Code --------------------------------------------------------------------------------------

needs_qwen = pytest.mark.skipif(not Path(QWEN).is_file(), reason="HUBPROXY_QWEN_CODE does not name Qwen Code")


def qwen(hub: Gateway, model: str, prompt: str, home: Path) -> dict:
    (home / ".qwen").mkdir()
    (home / ".qwen" / "settings.json").write_text(json.dumps(QWEN_QUIET))
    set_up(hub, "qwen-code", model, home)
    out = run_tool(hub, [QWEN, "-p", prompt, "--output-format", "json", "--approval-mode", "yolo"], home)
    return json.loads(out[out.index("[") :])[-1]


@needs_qwen
@pytest.mark.parametrize("model", ["deepseek-chat", "claude-native"], ids=["chat", "messages"])
def test_qwen_code_gets_an_answer(hub, tmp_path, model):
    result = qwen(hub, model, "say hello", tmp_path)
    assert result["is_error"] is False and result["result"].split() == REPLY.split()
    assert calls_of(hub, model) and all(row == ("/chat/completions", "ok") for row in calls_of(hub, model))


@needs_qwen
def test_qwen_code_writes_a_file_the_model_asks_for(hub, cli, tmp_path):
    cli(*("models", "add", "qwen-writer", "--provider", "fake", "--input-price", "0.27", "--output-price", "1.10"))
    (tmp_path / "work").mkdir()
    result = qwen(hub, "qwen-writer", "write note.txt", tmp_path)
    assert result["is_error"] is False
    assert (tmp_path / "work" / "note.txt").read_text() == WRITTEN
