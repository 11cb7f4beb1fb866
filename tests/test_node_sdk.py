"""The official OpenAI Node SDK (`openai` on npm), run by node against a test hubproxy: chat plain and
streamed, `responses.create` plain, streamed and with a tool call, and an error as the SDK's typed
error. The script is tests/clients/openai_node.mjs.

`.ci/run` installs the pinned SDK outside the repo and sets HUBPROXY_OPENAI_NODE (its directory);
elsewhere this test is skipped unless that variable names one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fake_upstream import REPLY

SDK = os.environ.get("HUBPROXY_OPENAI_NODE", "")
SCRIPT = Path(__file__).parent / "clients" / "openai_node.mjs"
pytestmark = pytest.mark.skipif(
    not (Path(SDK) / "node_modules" / "openai").is_dir() or shutil.which("node") is None,
    reason="HUBPROXY_OPENAI_NODE does not name an install of the openai npm package",
)


def test_the_openai_node_sdk_works_through_hubproxy(hub):
    done = subprocess.run(
        ["node", str(SCRIPT), f"http://127.0.0.1:{hub.port}/v1", hub.key],
        env={"PATH": os.environ["PATH"], "NODE_PATH": str(Path(SDK) / "node_modules")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["chat"] == REPLY and got["streamed"].split() == REPLY.split()
    assert got["response"] == REPLY and got["responseStream"].split() == REPLY.split()
    assert got["completedUsage"] == 7
    assert got["call"]["type"] == "function_call" and got["call"]["name"] == "get_weather"
    assert got["refused"] == {"status": 404, "code": "model_not_found"}
    with hub.db() as db:
        endpoints = [row[0] for row in db.execute("SELECT endpoint FROM usage ORDER BY id")]
    assert endpoints == ["/chat/completions"] * 2 + ["/responses"] * 3
