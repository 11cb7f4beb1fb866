"""The CLI against PostgreSQL: a laptop's SQLite store copied up with `hubproxy db migrate-to`, the
money and keys intact there; URLs with a password refused in config.toml; the URL shown without its
password."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import configure, run_cli, serving


def test_a_sqlite_store_with_calls_is_copied_up_whole(home, cli, upstream, postgres_url):
    configure(cli, upstream)
    for gateway in serving(home, cli, upstream):
        results = asyncio.run(gateway.fire(gateway.key, 5))
        assert not [r for r in results if isinstance(r, Exception)]
        cli("users", "topup", "dev@example.com", "1.25")
    before = cli.json("users", "list")
    report = cli.json("usage", "report", "--by", "model")
    copied = run_cli(home, "db", "migrate-to", postgres_url, "--json")
    assert copied.returncode == 0, copied.stderr
    assert '"usage": 5' in copied.stdout.replace("\n", " ").replace("  ", " ")
    on_postgres = {"HUBPROXY_DATABASE_URL": postgres_url}
    listed = run_cli(home, "users", "list", "--json", env=on_postgres)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == before
    again = run_cli(home, "usage", "report", "--by", "model", "--format", "json", env=on_postgres)
    assert json.loads(again.stdout) == report
    twice = run_cli(home, "db", "migrate-to", postgres_url)
    assert twice.returncode == 1 and "already has users" in twice.stderr and "Traceback" not in twice.stderr
    added = run_cli(home, "users", "add", "new@example.com", env=on_postgres)
    assert added.returncode == 0, added.stderr  # the id sequences continue after the copied rows


def test_a_password_in_config_toml_is_refused_in_one_line(home, cli):
    cli("init")
    config = home / "config.toml"
    config.write_text(config.read_text() + '\n[store]\nurl = "postgresql://hub:secret@db/hubproxy"\n')
    listed = run_cli(home, "users", "list")
    assert listed.returncode == 1 and "keep the password out of config.toml" in listed.stderr
    assert "secret" not in listed.stderr and "Traceback" not in listed.stderr


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_init_on_postgres_names_the_database_without_its_password(home, postgres_url):
    shown = run_cli(home, "init", env={"HUBPROXY_DATABASE_URL": postgres_url.replace("postgres@", "postgres:pw@")})
    assert shown.returncode == 0, shown.stderr
    assert "postgres:***@" in shown.stdout and ":pw@" not in shown.stdout


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_password_kept_by_db_set_password_is_used_and_never_written_to_config(home, postgres_url):
    """The test server trusts every local connection, so what is checked is that hubproxy sends a
    password (the URL it shows has one, redacted) and that config.toml never holds it."""
    kept = run_cli(home, "db", "set-password", postgres_url, input="s3cret-pw\n")
    assert kept.returncode == 0 and "kept in" in kept.stdout, kept.stderr
    shown = run_cli(home, "init", env={"HUBPROXY_DATABASE_URL": postgres_url})
    assert shown.returncode == 0, shown.stderr
    assert "postgres:***@" in shown.stdout and "s3cret" not in shown.stdout
    assert "s3cret" not in (home / "config.toml").read_text()
    empty = run_cli(home, "db", "set-password", postgres_url, input="\n")
    assert empty.returncode == 1 and "no password on stdin" in empty.stderr
