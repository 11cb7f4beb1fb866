"""`hubproxy statusline`: one line for Claude Code's status line — the key's spend today, what is left
of its cap, and the balance — read from the gateway with the tool's own key (`GET /v1/key`).

Claude Code runs the command on each update with its own environment (the `env` block of its
settings: ANTHROPIC_BASE_URL, ANTHROPIC_AUTH_TOKEN) and a JSON description of the session on stdin,
and shows the first line printed (https://docs.anthropic.com/en/docs/claude-code/statusline, read
2026-12-07). So the line is always printed, a failure included, and the exit status is 0: a status
line that fails shows nothing at all.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import typer

TIMEOUT_SECONDS = 2.0
CENT = Decimal("0.01")


def figures(base_url: str, key: str) -> dict:
    url = base_url.rstrip("/").removesuffix("/v1") + "/v1/key"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
        return json.loads(answer.read(), parse_float=Decimal)


def cents(amount: object, rounding: str) -> str:
    """Dollars to the cent, rounded the cautious way (spend up, what is left down)."""
    value = Decimal(str(amount))
    return f"${value.quantize(CENT, rounding=rounding)}"


def line(status: dict) -> str:
    parts = [f"today {cents(status['spend_today'], ROUND_CEILING)}"]
    if status.get("spend_limit") is not None:
        period = status.get("budget_period") or "total"
        left, limit = cents(status["spend_left"], ROUND_FLOOR), cents(status["spend_limit"], ROUND_FLOOR)
        parts.append(f"cap left {left} of {limit}/{period}")
    parts.append(f"balance {cents(status['balance'], ROUND_FLOOR)}")
    return "hubproxy · " + " · ".join(parts)


def statusline(
    base_url: str = typer.Option(
        None, "--base-url", metavar="URL", help="The gateway (default: $ANTHROPIC_BASE_URL, as Claude Code has it)."
    ),
    key: str = typer.Option(
        None, "--key", metavar="KEY", help="The key (default: $ANTHROPIC_AUTH_TOKEN or $ANTHROPIC_API_KEY)."
    ),
) -> None:
    """One line for Claude Code's status line: the key's spend today, its cap left, the balance."""
    if not sys.stdin.isatty():
        sys.stdin.read()  # Claude Code's session description: not needed, but read so it never blocks
    env = os.environ
    base_url = base_url or env.get("ANTHROPIC_BASE_URL") or env.get("OPENAI_BASE_URL") or ""
    key = key or env.get("ANTHROPIC_AUTH_TOKEN") or env.get("ANTHROPIC_API_KEY") or env.get("HUBPROXY_KEY") or ""
    if not base_url or not key:
        print("hubproxy · no gateway or key (set ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN)")
        return
    try:
        print(line(figures(base_url, key)))
    except urllib.error.HTTPError as refused:
        print(f"hubproxy · the gateway refused the key (HTTP {refused.code})")
    except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        print(f"hubproxy · {base_url} unreachable ({reason})")
