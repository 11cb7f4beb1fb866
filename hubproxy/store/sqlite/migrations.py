"""Schema migrations: an ordered list of small functions, each applied once and recorded.

Never edit a migration that has shipped; add the next one. The token classes' columns are the
exception that needs none: `token_columns` adds a new class's after the migrations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import sqlite_utils

from hubproxy.tokens import COLUMNS

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply every migration not yet recorded in `_migrations`, each in its own transaction."""
    db = sqlite_utils.Database(conn)
    if "_migrations" not in db.table_names():
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    for fn in MIGRATIONS:
        if fn.__name__ in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (fn.__name__,)).fetchone():
                fn(conn)
                conn.execute(
                    "INSERT INTO _migrations VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (fn.__name__,),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    token_columns(conn)


TOKEN_TABLES = ("usage", "usage_daily")


def missing_token_columns(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    have = {table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")} for table in TOKEN_TABLES}
    return [(table, column) for table in TOKEN_TABLES for column in COLUMNS if column not in have[table]]


def token_columns(conn: sqlite3.Connection) -> None:
    """A column in the usage rows and the daily totals for every token class (`tokens.COLUMNS`): a
    class added to that table gets its columns on the next start (0 for the calls before)."""
    if not missing_token_columns(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column in missing_token_columns(conn):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"


@migration
def m001_initial(conn: sqlite3.Connection) -> None:
    statements = f"""
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        balance INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'active',
        created_at TEXT NOT NULL DEFAULT {NOW},
        rev INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX users_rev ON users (rev);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id),
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        last4 TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        created_at TEXT NOT NULL DEFAULT {NOW},
        revoked_at TEXT,
        last_used_at TEXT,
        rev INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX api_keys_user ON api_keys (user_id);
    CREATE INDEX api_keys_rev ON api_keys (rev);
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id),
        kind TEXT NOT NULL,
        amount INTEGER NOT NULL,
        request_id TEXT,
        note TEXT,
        created_at TEXT NOT NULL DEFAULT {NOW}
    );
    CREATE INDEX ledger_user ON ledger (user_id);
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        stream INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost INTEGER NOT NULL,
        estimated INTEGER NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        created_at TEXT NOT NULL DEFAULT {NOW}
    );
    CREATE INDEX usage_created ON usage (created_at);
    CREATE INDEX usage_user ON usage (user_id, created_at);
    CREATE TABLE reservations (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        stream INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        prompt_cost INTEGER NOT NULL,
        created_at TEXT NOT NULL DEFAULT {NOW}
    );
    """
    for statement in statements.split(";"):
        if statement.strip():
            conn.execute(statement)


@migration
def m002_usage_daily(conn: sqlite3.Connection) -> None:
    """Per-day totals kept beside the raw rows, so reports stay fast however many calls were made."""
    conn.execute(
        """CREATE TABLE usage_daily (
            day TEXT NOT NULL,
            user_id INTEGER NOT NULL,
            key_id TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            requests INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cost INTEGER NOT NULL,
            estimated INTEGER NOT NULL,
            PRIMARY KEY (day, user_id, key_id, model, provider)
        ) WITHOUT ROWID"""
    )
    conn.execute(
        "INSERT INTO usage_daily SELECT substr(created_at, 1, 10), user_id, key_id, model, provider, count(*), "
        "sum(prompt_tokens), sum(completion_tokens), sum(cost), sum(estimated) FROM usage GROUP BY 1, 2, 3, 4, 5"
    )


@migration
def m003_reservations_by_user(conn: sqlite3.Connection) -> None:
    """Workers reserve against the database: the sum of a user's open reservations must be cheap."""
    conn.execute("CREATE INDEX reservations_user ON reservations (user_id)")


@migration
def m004_key_policy(conn: sqlite3.Connection) -> None:
    """Per-key rules: model allowlist, IP allowlist, spend cap and its period, expiry, rate limits."""
    for column in (
        "models TEXT",
        "allow_ips TEXT",
        "spend_limit INTEGER",
        "budget_period TEXT",
        "expires_at TEXT",
        "rpm INTEGER",
        "tpm INTEGER",
        "max_parallel INTEGER",
    ):
        conn.execute(f"ALTER TABLE api_keys ADD COLUMN {column}")


@migration
def m005_user_plan(conn: sqlite3.Connection) -> None:
    """Users may be on a plan from config.toml ([plans.NAME]): default limits, credit, price multiplier."""
    conn.execute("ALTER TABLE users ADD COLUMN plan TEXT")


@migration
def m006_user_password(conn: sqlite3.Connection) -> None:
    """Users who register through the account API log in with a password (scrypt hash only)."""
    conn.execute("ALTER TABLE users ADD COLUMN password_hash TEXT")


@migration
def m007_usage_attempts(conn: sqlite3.Connection) -> None:
    """Which deployments a call tried, in order, with what each answered ("deepseek/deepseek-chat:502,…").

    NULL when the first deployment answered: provider, upstream_model and http_status already say it.
    """
    conn.execute("ALTER TABLE usage ADD COLUMN attempts TEXT")


@migration
def m008_usage_cached_tokens(conn: sqlite3.Connection) -> None:
    """Prompt tokens the provider served from its cache (billed at the model's cached price, if set)."""
    conn.execute("ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")


@migration
def m009_drop_usage_created_index(conn: sqlite3.Connection) -> None:
    """Reports read the daily totals and a user's recent calls use (user_id, created_at): an index on
    created_at alone was only one more b-tree to update on every call."""
    conn.execute("DROP INDEX IF EXISTS usage_created")


@migration
def m010_leases(conn: sqlite3.Connection) -> None:
    """Worker processes hold slices of a user's balance (see store/leases.py): one row per user and
    holding process. `wanted` is set by a worker that was refused, asking the holders to give back."""
    conn.execute(
        """CREATE TABLE leases (
            user_id INTEGER NOT NULL,
            holder TEXT NOT NULL,
            amount INTEGER NOT NULL,
            wanted INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (user_id, holder)
        ) WITHOUT ROWID"""
    )


@migration
def m011_limit_calls(conn: sqlite3.Connection) -> None:
    """Calls counted against a key's rpm/tpm/max_parallel when worker processes share the limits
    (store/limits.py): open while the call runs, kept for the one-minute window after it started."""
    conn.execute(
        """CREATE TABLE limit_calls (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            started REAL NOT NULL,
            tokens INTEGER NOT NULL,
            open INTEGER NOT NULL DEFAULT 1
        ) WITHOUT ROWID"""
    )
    conn.execute("CREATE INDEX limit_calls_key ON limit_calls (key_id, started)")


@migration
def m012_drop_reservations_by_user(conn: sqlite3.Connection) -> None:
    """Workers no longer sum a user's open reservations (they hold leases, m010): nothing reads it."""
    conn.execute("DROP INDEX IF EXISTS reservations_user")


@migration
def m013_key_holds(conn: sqlite3.Connection) -> None:
    """Worst-case costs of calls in flight held against their key's spend cap, when worker processes
    share the caps (store/limits.py); each goes in the transaction that records its call."""
    conn.execute("CREATE TABLE key_holds (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, amount INTEGER NOT NULL)")
    conn.execute("CREATE INDEX key_holds_key ON key_holds (key_id)")


@migration
def m014_user_token_version(conn: sqlite3.Connection) -> None:
    """Login tokens carry the user's token version; bumping it (logout, a new password, a disabled
    account) ends every token issued before."""
    conn.execute("ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0")


@migration
def m015_usage_token_classes(conn: sqlite3.Connection) -> None:
    """Every token class a wire format reports (reasoning, cache writes), and `over_reservation`: the
    pico-USD a call cost beyond what was held for it (an upstream that ignored `max_tokens`)."""
    conn.execute("ALTER TABLE usage ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE usage ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE usage ADD COLUMN over_reservation INTEGER NOT NULL DEFAULT 0")


@migration
def m016_usage_daily_token_classes(conn: sqlite3.Connection) -> None:
    """Daily totals of the token classes usage rows record since m015, for `usage report` (not
    backfilled: rows before this version count as 0 there, the raw rows keep what they had)."""
    for column in ("cached_tokens", "cache_write_tokens", "reasoning_tokens"):
        conn.execute(f"ALTER TABLE usage_daily ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")


@migration
def m017_instances(conn: sqlite3.Connection) -> None:
    """Server instances sharing a PostgreSQL database, each with a heartbeat: what one that stops beating
    held is settled by another (store/postgres/instances.py). Unused on SQLite, where the parent of
    `serve --workers` watches its workers itself."""
    conn.execute("CREATE TABLE instances (holder TEXT PRIMARY KEY, request_prefix TEXT NOT NULL, seen REAL NOT NULL)")


HOURLY_TABLE = """CREATE TABLE usage_hourly (
    hour TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    PRIMARY KEY (hour, user_id)
)"""
DASHBOARD_STATEMENTS = (
    "INSERT INTO usage_hourly SELECT substr(created_at, 1, 13), user_id, count(*), "
    "sum(CASE WHEN status = 'ok' THEN 0 ELSE 1 END), sum(cost), sum(latency_ms) FROM usage GROUP BY 1, 2",
    "CREATE INDEX usage_created ON usage (created_at)",
    "CREATE INDEX usage_key ON usage (key_id, created_at)",
    "CREATE INDEX ledger_money ON ledger (id) WHERE kind <> 'charge'",
    "CREATE INDEX ledger_money_user ON ledger (user_id, id) WHERE kind <> 'charge'",
)


@migration
def m018_dashboard(conn: sqlite3.Connection) -> None:
    """What the dashboard reads fast on millions of calls: calls, errors, cost and latency per hour and
    user (the charts, the error rate), the usage log by time and by key, and the ledger's money
    movements apart from the per-call charges."""
    conn.execute(HOURLY_TABLE + " WITHOUT ROWID")
    for statement in DASHBOARD_STATEMENTS:
        conn.execute(statement)


PRICE_CHANGES = """CREATE TABLE price_changes (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    model TEXT NOT NULL,
    price_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    old TEXT,
    new TEXT
)"""
PRICE_STATEMENTS = (
    "CREATE INDEX price_changes_model ON price_changes (model, id)",
    "CREATE INDEX price_changes_id ON price_changes (price_id)",
    "ALTER TABLE usage ADD COLUMN price_id TEXT",
    "ALTER TABLE reservations ADD COLUMN price_id TEXT",
)


@migration
def m019_price_history(conn: sqlite3.Connection) -> None:
    """Every change of a model's prices (who, when, from where, before and after), and on each usage
    row and open reservation the id of the prices it is billed at."""
    conn.execute(PRICE_CHANGES)
    for statement in PRICE_STATEMENTS:
        conn.execute(statement)


AUDIT = """CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT,
    hash TEXT NOT NULL
)"""
AUDIT_STATEMENTS = ("CREATE INDEX audit_target ON audit (target, id)", "CREATE INDEX audit_actor ON audit (actor, id)")


@migration
def m020_audit(conn: sqlite3.Connection) -> None:
    """Who changed what: every change to users, keys, money, providers, models and plans, each row
    chained to the one before by its hash (store/sql/audit.py)."""
    conn.execute(AUDIT)
    for statement in AUDIT_STATEMENTS:
        conn.execute(statement)


ALERTS = """CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    email TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    period TEXT NOT NULL,
    receiver TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at TEXT NOT NULL,
    next_try REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at TEXT,
    last_error TEXT,
    UNIQUE (kind, target, threshold, period, receiver)
)"""
ALERT_STATEMENTS = (
    "CREATE INDEX alerts_due ON alerts (next_try) WHERE sent_at IS NULL",
    "CREATE INDEX alerts_email ON alerts (email, created_at)",
    # what a user had after their last top-up, the base of a balance alert's percent (store/sql/alerts.py)
    "ALTER TABLE users ADD COLUMN funded_balance INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN funded_id INTEGER NOT NULL DEFAULT 0",
    "UPDATE users SET funded_balance = balance, funded_id = coalesce((SELECT max(id) FROM ledger), 0)",
)


@migration
def m021_alerts(conn: sqlite3.Connection) -> None:
    """Budget alerts, each crossing once per period and receiver, kept until sent (store/sql/alerts.py)."""
    conn.execute(ALERTS)
    for statement in ALERT_STATEMENTS:
        conn.execute(statement)


OWN_THRESHOLDS = (
    "ALTER TABLE users ADD COLUMN alert_thresholds TEXT",
    "ALTER TABLE api_keys ADD COLUMN alert_thresholds TEXT",
)


@migration
def m022_own_thresholds(conn: sqlite3.Connection) -> None:
    """A user's or a key's own alert thresholds (JSON, null: its plan's or the global ones)."""
    for statement in OWN_THRESHOLDS:
        conn.execute(statement)
