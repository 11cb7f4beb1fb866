"""The CLI as a new user meets it: at 80 columns in a pipe, its help, its money, its mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubproxy import __version__


def hubproxy(home: Path, *args: str, columns: int = 80, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a pipe, as `hubproxy … | less` runs it."""
    env = {**os.environ, "COLUMNS": str(columns), "HUBPROXY_HOME": str(home)}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    return subprocess.run(
        [sys.executable, "-m", "hubproxy", *args], input=stdin, capture_output=True, text=True, timeout=60, env=env
    )


def test_ids_keys_and_urls_are_never_cut_at_80_columns(cli, home):
    cli("init")
    cli("users", "add", "someone.with.a.long.address@example.com", "--balance", "5")
    created = cli.json(
        "keys", "create", "--user", "someone.with.a.long.address@example.com", "--name", "a rather long key name"
    )
    listed = hubproxy(home, "keys", "list").stdout
    assert created["id"] in listed and created["key"][:9] in listed and created["key"][-4:] in listed
    assert "someone.with.a.long.address@example.com" in listed
    presets = hubproxy(home, "providers", "presets").stdout
    for url in (
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        "https://generativelanguage.googleapis.com/v1beta/openai",
    ):
        assert url in presets
    assert "…" not in presets
    wide = hubproxy(home, "providers", "presets", columns=250).stdout
    assert "┃ preset" in wide and "https://dashscope.aliyuncs.com/compatible-mode/v1" in wide, "a table when it fits"


def test_help_names_values_plainly(home):
    text = hubproxy(home, "keys", "create", "--help", columns=120).stdout
    assert "<bool>" not in text and "<str>" not in text and "<int>" not in text
    assert "--user" in text and "EMAIL" in text and "--spend-limit" in text and "USD" in text
    topup = hubproxy(home, "users", "topup", "--help", columns=120).stdout
    assert "EMAIL AMOUNT" in topup and "{email}" not in topup
    report = hubproxy(home, "usage", "report", "--help", columns=120).stdout
    assert "model|user|key|provider|day" in report


def test_a_provider_without_a_key_says_how_its_calls_authenticate(cli):
    cli("init")
    said = cli("providers", "add", "local", "--base-url", "http://127.0.0.1:11434/v1").stdout
    assert "no key" in said and "carry no credentials" in said


def test_negative_adjustments_read_naturally(cli, home):
    cli("init")
    cli("users", "add", "a@example.com", "--balance", "10")
    result = hubproxy(home, "users", "topup", "a@example.com", "-5", "--adjust", "--note", "refund error")
    assert result.returncode == 0, result.stderr
    assert "5.00" in result.stdout
    refused = hubproxy(home, "users", "topup", "a@example.com", "-5")
    assert refused.returncode == 1 and "--adjust" in refused.stderr and refused.stderr.count("\n") == 1
    assert cli.json("balance", "a@example.com")["balance"] == "5.00"


@pytest.mark.parametrize(
    "args",
    [
        ("users", "add", "b@example.com", "--balance", "1e3"),
        ("users", "topup", "a@example.com", "2E1"),
        ("models", "add", "m", "--provider", "p", "--input-price", "1e-1", "--output-price", "1"),
    ],
)
def test_money_with_an_exponent_is_refused(cli, home, args):
    cli("init")
    cli("users", "add", "a@example.com", "--balance", "1")
    cli("providers", "add", "p", "--base-url", "http://127.0.0.1:9/v1")
    result = hubproxy(home, *args)
    assert result.returncode == 1 and "plain number" in result.stderr, result.stderr
    assert cli.json("balance", "a@example.com")["balance"] == "1.00"


def test_report_costs_share_their_decimal_places(gateway):
    gateway.client().chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "x"}], max_tokens=5
    )
    gateway.cli(
        "models",
        "add",
        "free",
        "--provider",
        "fake",
        "--upstream-model",
        "deepseek-chat",
        "--input-price",
        "0",
        "--output-price",
        "0",
    )
    gateway.stop()
    gateway.start()
    gateway.client().chat.completions.create(model="free", messages=[{"role": "user", "content": "x"}])
    report = hubproxy(gateway.home, "usage", "report", "--by", "model", columns=150).stdout
    rows = [line.split("│") for line in report.splitlines() if line.startswith("│")]
    costs = [cells[5].strip() for cells in rows if cells[1].strip()]  # a row's first line (long headers wrap)
    assert len(costs) == 2 and len({len(c) for c in costs}) == 1, costs
    assert any(set(c) <= set("0.") for c in costs)


def test_mistakes_on_the_command_line_are_one_line(home):
    for args in (("usage", "report", "--by", "nonsense"), ("nosuch",), ("users", "add")):
        result = hubproxy(home, *args)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
        assert "Value error" not in result.stderr and "╭" not in result.stderr


def test_version(home):
    result = hubproxy(home, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"hubproxy {__version__}"
