"""Other gateways measured beside hubproxy in the same run (`python -m bench.run --compare litellm portkey`).

Neither is a dependency of hubproxy: each is started from a command the user installed (LiteLLM in its
own venv, Portkey's gateway from npm), pointed at the same fake upstream, and skipped with a one-line
hint when its command is missing.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

LITELLM_KEY = "sk-bench-master"

INSTALL_HINTS = {
    "litellm": "python3 -m venv /opt/litellm && /opt/litellm/bin/pip install 'litellm[proxy]', "
    "then --litellm-cmd /opt/litellm/bin/litellm",
    "portkey": "npm install --prefix /opt/portkey @portkey-ai/gateway, "
    "then --portkey-cmd /opt/portkey/node_modules/.bin/gateway",
}


@dataclass
class Peer:
    name: str
    cmd: list[str]
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _command(text: str) -> list[str] | None:
    cmd = shlex.split(text)
    return cmd if cmd and shutil.which(cmd[0]) else None


def litellm(command: str, workdir: Path, upstream_url: str, port: int) -> Peer | None:
    """LiteLLM proxy, one worker, master key, no database: the configuration its docs start from."""
    cmd = _command(command)
    if cmd is None:
        return None
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench\n"
        f"      api_base: {upstream_url}\n"
        "      api_key: unused\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    return Peer(
        "litellm",
        [*cmd, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        port,
        {"Authorization": f"Bearer {LITELLM_KEY}"},
        {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
    )


def portkey(command: str, upstream_url: str, port: int) -> Peer | None:
    """Portkey's open-source gateway, told per request to use the fake upstream as a custom OpenAI host."""
    cmd = _command(command)
    if cmd is None:
        return None
    headers = {
        "Authorization": "Bearer unused",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream_url,
    }
    return Peer("portkey", [*cmd, f"--port={port}", "--headless"], port, headers)
