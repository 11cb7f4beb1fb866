"""`hubproxy doctor [TOOL]`: read a tool's own config as the tool would, then check what users of these
tools get wrong — the address (scheme, reachable, `/v1` where that tool wants it), the key (known, not
revoked, money left), the model (served to this key, priced) — and make one small call in the tool's
own wire format. Each problem is one line that says what to change. It runs on any machine (a team
member's too): it needs only the tool's config and the gateway's address, not this home.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import typer
import yaml

from hubproxy.cli.connect import TOOLS, read_dotenv, tool_files
from hubproxy.cli.context import CliError, console

TIMEOUT_SECONDS = 10.0
# the tools that want the gateway's address without /v1 (their SDKs add /v1/messages, /v1beta/…)
BARE_ADDRESS = frozenset(("claude-code", "gemini-cli"))
PROBE = "Reply with the word ok."


@dataclass
class ToolSetup:
    """What a tool will use, as it reads its config: where from, for the messages."""

    base_url: str = ""
    key: str = ""
    model: str = ""
    source: str = ""
    problems: list[str] = field(default_factory=list)


def _read(path: Path, parse) -> dict:
    if not path.exists():
        return {}
    try:
        found = parse(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{path} is not readable ({exc}); the tool cannot read it either") from None
    return found if isinstance(found, dict) else {}


def claude_code() -> ToolSetup:
    (path,) = tool_files("claude-code")
    env = {**os.environ, **{k: str(v) for k, v in (_read(path, json.loads).get("env") or {}).items()}}
    key = env.get("ANTHROPIC_AUTH_TOKEN") or env.get("ANTHROPIC_API_KEY", "")
    return ToolSetup(
        env.get("ANTHROPIC_BASE_URL", ""), key, env.get("ANTHROPIC_MODEL", ""), f"{path} and the environment"
    )


def codex() -> ToolSetup:
    (path,) = tool_files("codex")
    config = _read(path, tomllib.loads)
    name = config.get("model_provider", "openai")
    provider = (config.get("model_providers") or {}).get(name) or {}
    env_key = provider.get("env_key", "OPENAI_API_KEY")
    setup = ToolSetup(provider.get("base_url", ""), os.environ.get(env_key, ""), config.get("model", ""), str(path))
    if not setup.key:
        setup.problems.append(f"${env_key} is not set in this shell; Codex reads the key from it (export it)")
    return setup


def gemini_cli() -> ToolSetup:
    settings_path, dotenv_path = tool_files("gemini-cli")
    env = {**_read(dotenv_path, read_dotenv), **os.environ}  # Gemini CLI lets the shell's variables win
    model = env.get("GEMINI_MODEL") or (_read(settings_path, json.loads).get("model") or {}).get("name", "")
    return ToolSetup(env.get("GOOGLE_GEMINI_BASE_URL", ""), env.get("GEMINI_API_KEY", ""), model, f"{dotenv_path}")


def qwen_code() -> ToolSetup:
    settings_path, dotenv_path = tool_files("qwen-code")
    env = {**_read(dotenv_path, read_dotenv), **os.environ}
    model = env.get("OPENAI_MODEL") or (_read(settings_path, json.loads).get("model") or {}).get("name", "")
    return ToolSetup(env.get("OPENAI_BASE_URL", ""), env.get("OPENAI_API_KEY", ""), model, str(dotenv_path))


def opencode() -> ToolSetup:
    (path,) = tool_files("opencode")
    config = _read(path, json.loads)
    provider_name, _, model = str(config.get("model", "")).partition("/")
    options = ((config.get("provider") or {}).get(provider_name) or {}).get("options") or {}
    return ToolSetup(str(options.get("baseURL", "")), str(options.get("apiKey", "")), model, str(path))


def aider() -> ToolSetup:
    (path,) = tool_files("aider")
    config = _read(path, yaml.safe_load)
    model = str(config.get("model", "")).removeprefix("openai/")
    return ToolSetup(str(config.get("openai-api-base", "")), str(config.get("openai-api-key", "")), model, str(path))


def continue_dev() -> ToolSetup:
    (path,) = tool_files("continue")
    models = [m for m in _read(path, yaml.safe_load).get("models") or [] if isinstance(m, dict)]
    ours = [m for m in models if str(m.get("name", "")).endswith("(hubproxy)")] or models
    if not ours:
        return ToolSetup(source=str(path))
    chosen = ours[0]
    return ToolSetup(
        str(chosen.get("apiBase", "")), str(chosen.get("apiKey", "")), str(chosen.get("model", "")), str(path)
    )


def openai_sdk() -> ToolSetup:
    env = os.environ
    return ToolSetup(env.get("OPENAI_BASE_URL", ""), env.get("OPENAI_API_KEY", ""), "", "the environment")


READERS = {
    "claude-code": claude_code,
    "codex": codex,
    "gemini-cli": gemini_cli,
    "qwen-code": qwen_code,
    "opencode": opencode,
    "aider": aider,
    "continue": continue_dev,
    "openai": openai_sdk,
}


def address_problems(tool: str, base_url: str) -> list[str]:
    """The address as this tool uses it: scheme, and `/v1` where the tool wants it."""
    if not base_url:
        return ["no gateway address is configured: run `hubproxy connect " + tool + " --write`"]
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"the address {base_url!r} is not an http(s) URL"]
    path = parts.path.rstrip("/")
    bare = parts._replace(path="").geturl().rstrip("/")
    if tool in BARE_ADDRESS and path.endswith("/v1"):
        return [f"the address ends in /v1, which {tool} adds itself: use {bare}"]
    if tool not in BARE_ADDRESS and path.endswith("/v1/v1"):
        return [f"the address has /v1 twice: use {bare}/v1"]
    if tool not in BARE_ADDRESS and not path.endswith("/v1"):
        return [f"the address lacks /v1, which {tool} needs: use {bare}/v1"]
    return []


def reachable(base_url: str) -> str | None:
    parts = urllib.parse.urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=TIMEOUT_SECONDS).close()
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port} ({exc.strerror or exc}): is `hubproxy serve` running there?"
    return None


def ask(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS + 50) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        status, raw = refused.code, refused.read()
    try:
        parsed = json.loads(raw, parse_float=Decimal)
    except ValueError:
        parsed = {}
    return status, parsed if isinstance(parsed, dict) else {}


def error_message(answer: dict) -> str:
    error = answer.get("error")
    return str(error.get("message", "")) if isinstance(error, dict) else str(answer)[:200]


def call_in_format(tool: str, root: str, key: str, model: str) -> tuple[str, int, dict]:
    """One small call as the tool makes it: its path, status and answer."""
    if tool == "claude-code":
        body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": PROBE}]}
        return "/v1/messages", *ask("POST", root + "/v1/messages", key, body)
    if tool == "codex":
        body = {"model": model, "input": PROBE, "max_output_tokens": 16}
        return "/v1/responses", *ask("POST", root + "/v1/responses", key, body)
    if tool == "gemini-cli":
        path = f"/v1beta/models/{model}:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": PROBE}]}], "generationConfig": {"maxOutputTokens": 16}}
        return path, *ask("POST", root + path, key, body)
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": PROBE}]}
    return "/v1/chat/completions", *ask("POST", root + "/v1/chat/completions", key, body)


def examine(tool: str, setup: ToolSetup, model: str | None) -> list[str]:
    """Every problem found, in the order a fix would go; an empty list is a working setup."""
    problems = list(setup.problems) + address_problems(tool, setup.base_url)
    if problems and not setup.base_url:
        return problems
    if problems:
        return problems
    root = setup.base_url.rstrip("/").removesuffix("/v1")
    unreachable = reachable(setup.base_url)
    if unreachable:
        return [unreachable]
    if not setup.key:
        return [f"no key is configured: run `hubproxy connect {tool} --key - --write`"]
    status, figures = ask("GET", root + "/v1/key", setup.key)
    if status == 404:
        return [f"{root} answers, but not as hubproxy (no /v1/key there): is the address the gateway's?"]
    if status in (401, 403):
        return [f"the key is refused ({error_message(figures)}): make a new one with `hubproxy keys create`"]
    if status != 200:
        return [f"{root}/v1/key answered HTTP {status}: {error_message(figures)}"]
    if figures.get("balance", 0) <= 0:
        problems.append(f"the balance is ${figures.get('balance')}: calls will be refused (`hubproxy users topup`)")
    if figures.get("spend_left") is not None and figures["spend_left"] <= 0:
        problems.append("the key has spent its cap for this period (`hubproxy keys update --spend-limit`)")
    model = model or setup.model
    if not model:
        return [*problems, f"no model is configured for {tool}: give one with `hubproxy connect {tool} --model NAME`"]
    status, listed = ask("GET", root + "/v1/models", setup.key)
    served = [m.get("id") for m in listed.get("data") or [] if isinstance(m, dict)]
    if model not in served:
        choices = ", ".join(str(s) for s in served[:12]) or "none"
        return [*problems, f"the model {model!r} is not one this key may call (priced and allowed: {choices})"]
    path, status, answer = call_in_format(tool, root, setup.key, model)
    if status != 200:
        return [*problems, f"a test call to {path} failed with HTTP {status}: {error_message(answer)}"]
    return problems


def doctor(
    tool: str = typer.Argument(
        None, metavar="[TOOL]", help=f"One of: {', '.join(READERS)} (default: each configured)."
    ),
    model: str = typer.Option(None, "--model", metavar="NAME", help="Check this model instead of the tool's."),
) -> None:
    """Check a tool's setup against the gateway: address, key, model, and one small (billed) call."""
    if tool is not None and tool not in READERS:
        raise CliError(f"no tool {tool!r}; one of: {', '.join(t for t in TOOLS if t in READERS)}")
    tools = [tool] if tool else [t for t in READERS if any(p.exists() for p in tool_files(t))]
    if not tools:
        raise CliError("no tool is set up on this machine; name one: hubproxy doctor claude-code")
    failed = False
    for name in tools:
        setup = READERS[name]()
        problems = examine(name, setup, model)
        if problems:
            failed = True
            console.print(f"{name}: {len(problems)} problem(s) in {setup.source}", markup=False)
            for problem in problems:
                console.print(f"  - {problem}", markup=False, soft_wrap=True)
        else:
            console.print(
                f"{name}: ok ({setup.base_url}, model {model or setup.model}, one call answered)", markup=False
            )
    if failed:
        raise typer.Exit(1)
