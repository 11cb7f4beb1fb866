"""Continue's CLI (`cn`, from @continuedev/cli) headless (`cn -p …`), through hubproxy's
/v1/chat/completions, configured only by `hubproxy connect continue --write` (a model in
`~/.continue/config.yaml`: `provider: openai`, the base URL with /v1, the key).

`.ci/run` installs the pinned CLI outside the repo and sets HUBPROXY_CONTINUE; elsewhere this test is
skipped unless that variable names the binary. Its metrics are off (CONTINUE_CLI_ENABLE_TELEMETRY=0,
CONTINUE_METRICS_ENABLED=0; read in its dist/index.js, 1.5.47) and headless it skips its update check.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, run_cli
from tests.fake_upstream import REPLY

CONTINUE = os.environ.get("HUBPROXY_CONTINUE", "")
pytestmark = pytest.mark.skipif(not Path(CONTINUE).is_file(), reason="HUBPROXY_CONTINUE does not name cn")


def continue_cli(hub: Gateway, model: str, prompt: str, home: Path) -> subprocess.CompletedProcess:
    written = run_cli(
        hub.home,
        *("connect", "continue", "--model", model, "--base-url", f"http://127.0.0.1:{hub.port}"),
        *("--key", hub.key, "--write"),
        env={"HOME": str(home)},
    )
    assert written.returncode == 0, written.stderr
    config = home / ".continue" / "config.yaml"
    assert config.is_file()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CONTINUE_CLI_ENABLE_TELEMETRY": "0"}
    env["CONTINUE_METRICS_ENABLED"] = "0"
    return subprocess.run(
        [CONTINUE, "-p", prompt, "--config", str(config)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_continue_cli_gets_an_answer_through_hubproxy(hub, tmp_path):
    done = continue_cli(hub, "deepseek-chat", "say hello", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no route for" not in hub.log()  # nothing the client called is missing
    assert " ".join(done.stdout.split()) == REPLY
    with hub.db() as db:
        rows = db.execute("SELECT model, status FROM usage").fetchall()
    assert rows and set(rows) == {("deepseek-chat", "ok")}
