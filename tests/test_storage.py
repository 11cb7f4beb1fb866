"""Storage that stays bounded and can be copied: `[store] keep_days` prunes old usage rows (the totals,
the ledger and reports stay whole), `db size` says what each table costs, `db backup` copies the SQLite
store while the server writes to it, checked, and `db restore` puts a copy into an empty home."""

from __future__ import annotations

import json
import threading
import time

from tests.conftest import BACKENDS, HELLO, balance_and_ledger, run_cli, wait_for


def old_rows(gateway, days_ago: float, count: int) -> None:
    """Move `count` of the newest usage rows `days_ago` days into the past (as if made then)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - days_ago * 86400))
    with gateway.db() as db:
        ids = [row[0] for row in db.execute("SELECT id FROM usage ORDER BY id DESC LIMIT ?", (count,)).fetchall()]
        for row_id in ids:
            db.execute("UPDATE usage SET created_at = ? WHERE id = ?", (stamp, row_id))


def count(gateway, sql: str):
    with gateway.db() as db:
        return db.execute(sql).fetchone()[0]


@BACKENDS
def test_usage_rows_past_keep_days_are_pruned_and_the_totals_stay(gateway, cli):
    client = gateway.client()
    for _ in range(5):
        client.chat.completions.create(model="deepseek-chat", messages=HELLO)
    wait_for(lambda: count(gateway, "SELECT count(*) FROM usage") == 5)
    old_rows(gateway, 3, 3)
    with gateway.db() as db:  # the daily totals say those calls were made then, as they would have
        db.execute("UPDATE usage_daily SET day = ?", (time.strftime("%Y-%m-%d", time.gmtime(time.time() - 3 * 86400)),))
    report = cli.json("usage", "report", "--by", "model")
    daily = count(gateway, "SELECT sum(requests) FROM usage_daily")
    config = gateway.home / "config.toml"
    assert "[store]" not in config.read_text()
    config.write_text(config.read_text() + "\n[store]\nkeep_days = 1\n")
    gateway.stop()
    gateway.start()
    wait_for(lambda: count(gateway, "SELECT count(*) FROM usage") == 2)
    assert count(gateway, "SELECT sum(requests) FROM usage_daily") == daily == 5
    assert cli.json("usage", "report", "--by", "model") == report, "reports answer from the totals"
    assert "are counted from the daily totals (their rows were pruned" in cli("usage", "report").stdout
    balance, ledger = balance_and_ledger(gateway, "dev@example.com")
    assert balance == ledger


def test_db_size_says_what_each_table_and_a_usage_row_cost(gateway, cli):
    for _ in range(3):
        gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    wait_for(lambda: count(gateway, "SELECT count(*) FROM usage") == 3)
    sized = cli.json("db", "size")
    tables = {row["table"]: row for row in sized["tables"]}
    assert tables["usage"]["rows"] == 3 and tables["usage"]["bytes"] > 0 and sized["bytes_per_usage_row"] > 0
    assert sized["keep_days"] == 400 and sized["calls_per_day"] > 0
    text = cli("db", "size").stdout
    assert "a call costs" in text and "kept 400 days" in text and sized["bytes_per_ledger_row"] > 0


def test_a_backup_made_under_load_checks_out_and_restores_into_an_empty_home(gateway, cli, tmp_path):
    client = gateway.client()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            client.chat.completions.create(model="deepseek-chat", messages=HELLO)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    wait_for(lambda: count(gateway, "SELECT count(*) FROM usage") > 10)
    copy = tmp_path / "hubproxy-backup.db"
    made = run_cli(gateway.home, "db", "backup", str(copy))
    stop.set()
    for worker in workers:
        worker.join(30)
    assert made.returncode == 0 and "every balance matches its ledger" in made.stdout, made.stderr
    again = run_cli(gateway.home, "db", "backup", str(copy))
    assert again.returncode == 1 and "exists" in again.stderr and again.stderr.count("\n") == 1
    empty = tmp_path / "new-home"
    restored = run_cli(empty, "db", "restore", str(copy))
    assert restored.returncode == 0, restored.stderr
    balance = json.loads(run_cli(empty, "users", "list", "--json").stdout)[0]["balance"]
    assert balance is not None
    over = run_cli(gateway.home, "db", "restore", str(copy))
    assert over.returncode == 1 and "restore into an empty home" in over.stderr
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    refused = run_cli(tmp_path / "other-home", "db", "restore", str(garbage))
    assert refused.returncode == 1 and "does not check out" in refused.stderr
    assert not (tmp_path / "other-home" / "hubproxy.db").exists()


@BACKENDS
def test_backup_on_postgresql_points_at_pg_dump(home, cli, backend):
    cli("init")
    said = cli("db", "backup", str(home / "copy.db"), ok=False)
    if backend == "postgres":
        assert said.exit_code == 1 and "pg_dump" in said.output
    else:
        assert said.exit_code == 0
