"""`hubproxy connect TOOL`: the exact setup for one tool, printed, or written into the tool's own config.

Each tool gets the address in the form it expects (Anthropic and Gemini clients without `/v1`, OpenAI
ones with it) and the wire API it speaks (Claude Code: Messages; Codex: Responses; Gemini CLI:
Gemini's; the rest: chat). With
`--write` the tool's config file is merged, never replaced: what else it holds stays, a copy of the
old file is kept beside it (`.hubproxy-backup`), and files that hold a key are written 0600.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomli_w
import typer
import yaml

from hubproxy.cli.context import CliError, console, database, load_config, paths
from hubproxy.running import server_url
from hubproxy.store.sql import accounts

app = typer.Typer(help="Point a tool at hubproxy: print its setup, or write it (--write).", no_args_is_help=True)
PLACEHOLDER_KEY = "sk-hp-…"
KEY_ENV = "HUBPROXY_KEY"


@dataclass
class Setup:
    base_url: str  # without /v1
    key: str
    model: str
    statusline: bool = False  # Claude Code: show the key's spend and balance in its status line

    @property
    def openai_url(self) -> str:
        return self.base_url + "/v1"


BACKUP = ".hubproxy-backup"  # the file as it was before the first `connect --write`; later ones are numbered
NO_FILE = ".hubproxy-none"  # there was no file before the first `connect --write`


def tool_files(tool: str) -> list[Path]:
    """The config files `connect TOOL --write` writes (and `disconnect TOOL` restores)."""
    home = Path.home()
    return {
        "claude-code": [home / ".claude" / "settings.json"],
        "codex": [Path(os.environ.get("CODEX_HOME") or home / ".codex") / "config.toml"],
        "gemini-cli": [home / ".gemini" / "settings.json", home / ".gemini" / ".env"],
        "qwen-code": [home / ".qwen" / "settings.json", home / ".qwen" / ".env"],
        "opencode": [Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "opencode" / "opencode.json"],
        "aider": [Path.cwd() / ".aider.conf.yml"],
        "continue": [home / ".continue" / "config.yaml"],
    }.get(tool, [])


def keep_backup(path: Path) -> None:
    """The file as it is, kept beside it: the first time as `NAME.hubproxy-backup` (or a marker that
    there was none), later as `NAME.hubproxy-backup.N`, so that no later write loses the original."""
    first = path.with_name(path.name + BACKUP)
    if not first.exists() and not path.with_name(path.name + NO_FILE).exists():
        if path.exists():
            shutil.copy2(path, first)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(path.name + NO_FILE).touch()
        return
    if path.exists():
        number = 1
        while path.with_name(f"{path.name}{BACKUP}.{number}").exists():
            number += 1
        shutil.copy2(path, path.with_name(f"{path.name}{BACKUP}.{number}"))


def restore(path: Path) -> str:
    """`path` as it was before the first `connect --write` (the backups removed); what was done."""
    first, none = path.with_name(path.name + BACKUP), path.with_name(path.name + NO_FILE)
    numbered = sorted(path.parent.glob(f"{path.name}{BACKUP}.*"))
    if first.exists():
        os.replace(first, path)
        done = f"restored {path}"
    elif none.exists():
        path.unlink(missing_ok=True)
        none.unlink()
        done = f"removed {path} (there was none before)"
    else:
        return f"left {path} alone (no backup of hubproxy's)"
    for extra in numbered:
        extra.unlink()
    return done


def merge_file(
    path: Path, read: Callable[[str], dict], write: Callable[[dict], str], change: Callable[[dict], None]
) -> Path:
    """Read `path` (if any), apply `change`, write it back 0600 through a temp file; keep a backup."""
    current: dict = {}
    if path.exists():
        try:
            current = read(path.read_text(encoding="utf-8")) or {}
        except (ValueError, yaml.YAMLError) as exc:
            raise CliError(f"{path} is not readable as its format ({exc}); fix or move it first") from None
        if not isinstance(current, dict):
            raise CliError(f"{path} does not hold a table at its top; fix or move it first")
    keep_backup(path)
    change(current)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".hubproxy-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(write(current))
    os.replace(tmp, path)
    return path


def statusline_command() -> str:
    """How Claude Code should run `hubproxy statusline`: this install's own executable."""
    found = shutil.which("hubproxy")
    return f"{shlex.quote(found)} statusline" if found else f"{shlex.quote(sys.executable)} -m hubproxy statusline"


def claude_code(setup: Setup, write: bool) -> None:
    env = {
        "ANTHROPIC_BASE_URL": setup.base_url,
        "ANTHROPIC_AUTH_TOKEN": setup.key,
        "ANTHROPIC_MODEL": setup.model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": setup.model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    if write:
        (path,) = tool_files("claude-code")

        def change(doc: dict) -> None:
            doc.setdefault("env", {}).update(env)
            if setup.statusline:
                doc["statusLine"] = {"type": "command", "command": statusline_command()}

        merge_file(path, json.loads, lambda doc: json.dumps(doc, indent=2) + "\n", change)
        shown = " and its statusLine" if setup.statusline else ""
        console.print(f"wrote the env block{shown} of {path}; run: claude")
        return
    console.print("# Claude Code: in your shell (or the `env` block of ~/.claude/settings.json)")
    for name, value in env.items():
        console.print(f"export {name}={value}", soft_wrap=True)


def codex(setup: Setup, write: bool) -> None:
    provider = {
        "name": "hubproxy",
        "base_url": setup.openai_url,
        "env_key": "HUBPROXY_API_KEY",
        "wire_api": "responses",
        # one socket per session instead of a request per turn (hubproxy serves /v1/responses over a
        # WebSocket unless `[server] websocket = false`, which answers Codex's upgrade with the 426 it
        # falls back to HTTP on)
        "supports_websockets": True,
    }

    def change(doc: dict) -> None:
        doc["model"] = setup.model
        doc["model_provider"] = "hubproxy"
        doc.setdefault("model_providers", {})["hubproxy"] = provider

    if write:
        path = merge_file(tool_files("codex")[0], tomllib.loads, tomli_w.dumps, change)
        console.print(f"wrote model_provider hubproxy into {path}; then:")
        console.print(f"export HUBPROXY_API_KEY={setup.key}", soft_wrap=True)
        return
    doc: dict = {}
    change(doc)
    console.print("# Codex: in $CODEX_HOME/config.toml (default ~/.codex/config.toml)")
    console.print(tomli_w.dumps(doc), soft_wrap=True, markup=False)
    console.print(f"export HUBPROXY_API_KEY={setup.key}", soft_wrap=True)


def read_dotenv(text: str) -> dict:
    """A `.env` file's `NAME=value` lines (comments and blank lines are not kept; the backup has them)."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name and not name.startswith("#"):
            found[name.strip()] = value.strip()
    return found


def write_dotenv(values: dict) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


def env_and_settings(tool: str, title: str, sign_in: str, env: dict, setup: Setup, write: bool) -> None:
    """A Gemini CLI-style tool: variables in its `.env` and, in its settings.json, the sign-in that uses
    them and the model."""
    settings_path, dotenv_path = tool_files(tool)

    def change(doc: dict) -> None:
        doc.setdefault("security", {}).setdefault("auth", {})["selectedType"] = sign_in
        doc.setdefault("model", {})["name"] = setup.model

    if write:
        settings = merge_file(settings_path, json.loads, lambda doc: json.dumps(doc, indent=2) + "\n", change)
        dotenv = merge_file(dotenv_path, read_dotenv, write_dotenv, lambda doc: doc.update(env))
        console.print(f"wrote {settings} and {dotenv}; run: {title.split()[0].lower()}")
        return
    doc: dict = {}
    change(doc)
    folder = f"~/{dotenv_path.parent.name}"
    console.print(f"# {title}: in {folder}/.env (or your shell)")
    for name, value in env.items():
        console.print(f"{name}={value}", soft_wrap=True)
    console.print(f"# and in {folder}/settings.json")
    console.print(json.dumps(doc, indent=2), soft_wrap=True, markup=False)


def gemini_cli(setup: Setup, write: bool) -> None:
    """Gemini CLI speaks Gemini's API: its address without /v1beta (the SDK adds it). Its 0.61 release
    takes GOOGLE_GEMINI_BASE_URL as a "gateway" sign-in that headless runs then refuse ("Invalid auth
    method selected"), so the settings name the API-key sign-in, which uses the same address."""
    env = {"GOOGLE_GEMINI_BASE_URL": setup.base_url, "GEMINI_API_KEY": setup.key, "GEMINI_MODEL": setup.model}
    env_and_settings("gemini-cli", "Gemini CLI", "gemini-api-key", env, setup, write)


def qwen_code(setup: Setup, write: bool) -> None:
    """Qwen Code (a Gemini CLI fork) speaks chat: the OpenAI sign-in, its address with /v1."""
    env = {"OPENAI_BASE_URL": setup.openai_url, "OPENAI_API_KEY": setup.key, "OPENAI_MODEL": setup.model}
    env_and_settings("qwen-code", "Qwen Code", "openai", env, setup, write)


def opencode(setup: Setup, write: bool) -> None:
    """OpenCode: a provider of its own over the OpenAI-compatible SDK it bundles, and its model."""
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "name": "hubproxy",
        "options": {"baseURL": setup.openai_url, "apiKey": setup.key},
        "models": {setup.model: {"name": setup.model}},
    }

    def change(doc: dict) -> None:
        doc.setdefault("$schema", "https://opencode.ai/config.json")
        doc.setdefault("provider", {})["hubproxy"] = provider
        doc["model"] = f"hubproxy/{setup.model}"

    if write:
        (path,) = tool_files("opencode")
        merge_file(path, json.loads, lambda doc: json.dumps(doc, indent=2) + "\n", change)
        console.print(f"wrote the hubproxy provider into {path}; run: opencode")
        return
    doc: dict = {}
    change(doc)
    console.print("# OpenCode: in ~/.config/opencode/opencode.json (or opencode.json in the project)")
    console.print(json.dumps(doc, indent=2), soft_wrap=True, markup=False)


def aider(setup: Setup, write: bool) -> None:
    settings = {"openai-api-base": setup.openai_url, "openai-api-key": setup.key, "model": f"openai/{setup.model}"}
    if write:
        (path,) = tool_files("aider")
        merge_file(
            path,
            yaml.safe_load,
            lambda doc: yaml.safe_dump(doc, sort_keys=False, allow_unicode=True),
            lambda doc: doc.update(settings),
        )
        console.print(f"wrote {path}; run: aider")
        return
    console.print(
        f"aider --openai-api-base {setup.openai_url} --openai-api-key {setup.key} --model openai/{setup.model}",
        soft_wrap=True,
    )


def continue_dev(setup: Setup, write: bool) -> None:
    model = {
        "name": f"{setup.model} (hubproxy)",
        "provider": "openai",
        "model": setup.model,
        "apiBase": setup.openai_url,
        "apiKey": setup.key,
    }

    def change(doc: dict) -> None:
        models = [m for m in doc.get("models") or [] if not (isinstance(m, dict) and m.get("name") == model["name"])]
        doc["models"] = [*models, model]
        doc.setdefault("name", "hubproxy")
        doc.setdefault("version", "1.0.0")
        doc.setdefault("schema", "v1")

    if write:
        (path,) = tool_files("continue")
        merge_file(path, yaml.safe_load, lambda doc: yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), change)
        console.print(f"added the model to {path}")
        return
    console.print("# Continue: in ~/.continue/config.yaml, under models:")
    console.print(
        yaml.safe_dump({"models": [model]}, sort_keys=False, allow_unicode=True), soft_wrap=True, markup=False
    )


def cursor(setup: Setup, write: bool) -> None:
    if write:
        raise CliError("Cursor keeps its settings in its own app: follow the steps `hubproxy connect cursor` prints")
    console.print(
        "Cursor → Settings → Models:\n"
        f"  1. OpenAI API Key: {setup.key}\n"
        f"  2. Override OpenAI Base URL: {setup.openai_url}  (must be an https URL Cursor's servers can reach:\n"
        '     a tunnel or --tls-cert; see README, "Cursor, and anything that calls from the internet")\n'
        f"  3. Add model: {setup.model}, and turn the others off",
        soft_wrap=True,
        markup=False,
    )


def openai_sdk(setup: Setup, write: bool) -> None:
    if write:
        raise CliError("the OpenAI SDKs read their settings from the environment: export what this prints")
    console.print(f"export OPENAI_BASE_URL={setup.openai_url}", soft_wrap=True)
    console.print(f"export OPENAI_API_KEY={setup.key}", soft_wrap=True)
    console.print(f'# and ask for the model "{setup.model}": client.chat.completions.create(model="{setup.model}", …)')


def setup_text(tool: str, setup: Setup) -> str:
    """What `hubproxy connect TOOL` prints, as text: the dashboard shows it for each tool, for machines
    where hubproxy is not installed."""
    with console.capture() as captured:
        TOOLS[tool](setup, False)
    return captured.get().strip()


def chosen_model(model: str | None, served: list[str]) -> str:
    """The model the tool will ask for. Checked against this home's models where it has any; a
    machine with none (a team member's, pointing at a shared gateway) takes --model as given. Never
    a silent pick among several."""
    if model is None:
        if len(served) == 1:
            return served[0]
        if not served:
            raise CliError(
                "give --model NAME: the gateway's model the tool should ask for (`GET /v1/models` lists them)"
            )
        raise CliError(f"give --model NAME, one of: {', '.join(served)}")
    if served and model not in served:
        raise CliError(f"no model {model!r} (models: {', '.join(served)})")
    return model


def read_key() -> str:
    """The key from stdin: asked for without echo at a terminal, else its first line."""
    key = typer.prompt("hubproxy key", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if not key:
        raise CliError("--key -: no key on stdin")
    return key


TOOLS = {
    "claude-code": claude_code,
    "codex": codex,
    "gemini-cli": gemini_cli,
    "qwen-code": qwen_code,
    "opencode": opencode,
    "aider": aider,
    "continue": continue_dev,
    "cursor": cursor,
    "openai": openai_sdk,
}


def connect(
    ctx: typer.Context,
    tool: str = typer.Argument(..., metavar="TOOL", help=f"One of: {', '.join(TOOLS)}."),
    key: str = typer.Option(
        None,
        "--key",
        metavar="KEY",
        envvar=KEY_ENV,
        help=f"The hubproxy key the tool will use; '-' reads it from stdin (or ${KEY_ENV}), keeping it out of "
        "`ps` and shell history.",
    ),
    user: str = typer.Option(None, "--user", metavar="EMAIL", help="Create a key for the tool for this user."),
    model: str = typer.Option(None, "--model", metavar="NAME", help="The model the tool asks for."),
    base_url: str = typer.Option(
        None, "--base-url", metavar="URL", help="hubproxy's address as the tool reaches it (default: config)."
    ),
    write: bool = typer.Option(False, "--write", help="Write the tool's own config file (merged, backed up)."),
    statusline: bool = typer.Option(
        False, "--statusline", help="claude-code: show the key's spend, cap left and balance in its status line."
    ),
) -> None:
    """Print the exact setup for TOOL, or write it into the tool's config (--write)."""
    if tool not in TOOLS:
        raise CliError(f"no tool {tool!r}; one of: {', '.join(TOOLS)}")
    if key and user:
        raise CliError("give --key or --user, not both")
    if statusline and tool != "claude-code":
        raise CliError("--statusline is for claude-code (its status line runs `hubproxy statusline`)")
    if key == "-":
        key = read_key()
    config = load_config(ctx)
    model = chosen_model(model, sorted(config.models))
    if user:
        with database(ctx) as store:
            _, key = store.run(accounts.create_key, user, tool)
        console.print(f"created a key named {tool} for {user} (shown once, below)")
    url = (base_url or server_url(paths(ctx), config)).rstrip("/")
    while url.endswith("/v1"):  # each tool gets /v1 where it wants it, once
        url = url.removesuffix("/v1").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--base-url must be an http(s) URL, got {base_url!r}")
    if write and not key and tool != "codex":  # Codex reads its key from the environment, not the file
        raise CliError("--write needs the key to write: give --key KEY or --user EMAIL")
    TOOLS[tool](Setup(url, key or PLACEHOLDER_KEY, model, statusline), write)


def disconnect(tool: str = typer.Argument(..., metavar="TOOL", help="A tool `connect --write` set up.")) -> None:
    """Put back the config files `connect TOOL --write` changed, as they were before its first write."""
    files = tool_files(tool)
    if not files:
        known = ", ".join(t for t in TOOLS if tool_files(t))
        raise CliError(f"no config files of {tool!r} to restore; one of: {known}")
    for path in files:
        console.print(restore(path))
