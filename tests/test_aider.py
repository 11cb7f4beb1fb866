"""Aider itself, headless (`aider --message … --yes`), through hubproxy's /v1/chat/completions,
configured only by `hubproxy connect aider --write` (its `.aider.conf.yml`: the OpenAI base URL, the
key and `openai/MODEL`), streamed as Aider asks by default and billed: a plain answer, and an edit
Aider applies to a file it was given.

`.ci/run` installs the pinned Aider into a venv outside the repo and sets HUBPROXY_AIDER; elsewhere
this test is skipped unless that variable names the binary. Aider's update check and analytics are
off, and litellm reads its bundled price map (LITELLM_LOCAL_MODEL_COST_MAP): nothing leaves the machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, run_cli
from tests.fake_upstream import REPLY

AIDER = os.environ.get("HUBPROXY_AIDER", "")
pytestmark = pytest.mark.skipif(not Path(AIDER).is_file(), reason="HUBPROXY_AIDER does not name Aider")


def aider(hub: Gateway, model: str, message: str, workdir: Path, *files: str) -> subprocess.CompletedProcess:
    written = run_cli(
        hub.home,
        "connect",
        "aider",
        "--model",
        model,
        "--base-url",
        f"http://127.0.0.1:{hub.port}",
        "--key",
        hub.key,
        "--write",
        cwd=workdir,
    )
    assert written.returncode == 0 and (workdir / ".aider.conf.yml").is_file(), written.stderr
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "AIDER_ANALYTICS_DISABLE": "true",
    }
    flags = ["--yes-always", "--no-git", "--no-check-update", "--analytics-disable", "--no-show-model-warnings"]
    flags += ["--no-show-release-notes", "--no-pretty", "--map-tokens", "0"]
    return subprocess.run(
        [AIDER, *flags, "--message", message, *files],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_aider_gets_an_answer_through_hubproxy_and_the_call_is_billed(hub, tmp_path):
    done = aider(hub, "deepseek-chat", "say hello", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no route for" not in hub.log()  # nothing the client called is missing
    assert REPLY in " ".join(done.stdout.split())
    with hub.db() as db:
        rows = db.execute("SELECT model, status, completion_tokens FROM usage").fetchall()
    assert rows and all(row[:2] == ("deepseek-chat", "ok") for row in rows)
    asked = [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"]
    assert asked[-1]["stream"] is True and asked[-1]["messages"][-1]["content"].startswith("say hello")


def test_aider_applies_an_edit_the_model_sends_through_hubproxy(hub, tmp_path):
    (tmp_path / "note.txt").write_text("the original text\n")
    done = aider(hub, "aider-edit", "rewrite note.txt", tmp_path, "note.txt")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no route for" not in hub.log()  # nothing the client called is missing
    assert (tmp_path / "note.txt").read_text() == "edited through hubproxy\n", done.stdout
    sent = [r["body"] for r in hub.upstream.requests if r["path"] == "/v1/chat/completions"][-1]
    assert "the original text" in str(sent["messages"])  # Aider sent the file's content up
