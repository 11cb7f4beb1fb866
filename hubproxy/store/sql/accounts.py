"""Users, API keys and the ledger.

Every balance change is a ledger row written in the same transaction as the balance, so
`users.balance == sum(ledger.amount)` holds at every commit. Rows that the server caches carry a
`rev`, bumped on every change made here, so the server reloads only what changed.
"""

from __future__ import annotations

import re
import time

from hubproxy import apikey
from hubproxy.store.records import EMAIL_RE, POLICY_COLUMNS, AccountError, ConflictError, KeyRow, NotFoundError, UserRow
from hubproxy.store.sql import Connection, audit, transaction


def utc_now() -> str:
    """Now as the columns' defaults write it: 2026-12-02T21:39:33.123Z."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


KEY_NAME_RE = re.compile(r"^[\w .:@/-]{1,64}$")


USER_COLUMNS = "id, email, balance, status, created_at, rev, plan, token_version"
KEY_COLUMNS = (
    "k.id, k.user_id, u.email, k.name, k.key_hash, k.prefix, k.last4, k.status, k.created_at, "
    "k.revoked_at, k.last_used_at, k.rev, " + ", ".join(f"k.{c}" for c in POLICY_COLUMNS)
)
KEY_FROM = "api_keys k JOIN users u ON u.id = k.user_id"


def _next_rev(conn: Connection, table: str) -> int:
    """The next change number: the change feed reads rows above the last one it saw, so no two
    writers may hand out numbers at once (on PostgreSQL the writers' lock holds until the commit)."""
    return conn.execute(f"SELECT coalesce(max(rev), 0) + 1 FROM {table}").fetchone()[0]


def add_ledger(conn: Connection, user_id: int, kind: str, amount: int, note: str | None = None) -> None:
    """Move a balance and record why, in the caller's transaction. Money in (a top-up, a grant) also
    sets what the user has been funded with, the base of balance alerts (store/sql/alerts.py)."""
    (row_id,) = conn.execute(
        "INSERT INTO ledger (user_id, kind, amount, note) VALUES (?, ?, ?, ?) RETURNING id",
        (user_id, kind, amount, note),
    ).fetchone()
    conn.execute(
        "UPDATE users SET balance = balance + ?, rev = ? WHERE id = ?", (amount, _next_rev(conn, "users"), user_id)
    )
    if amount > 0:
        conn.execute("UPDATE users SET funded_balance = balance, funded_id = ? WHERE id = ?", (row_id, user_id))


def charge_many(conn: Connection, charges: list[tuple[int, int, str]], created_at: str) -> dict[int, int]:
    """The server's own charges, (user_id, cost, request_id) each, in bulk and in the caller's
    transaction: one ledger row per charge, one balance update per user. Returns new balances.
    `created_at` is the batch's time, given rather than left to the column default (SQLite would
    format the time anew for every row).

    The rows' `rev` is left alone: the server already knows about its own charges, and bumping it
    would make every CLI command reload every user the server charged since.
    """
    conn.executemany(
        "INSERT INTO ledger (user_id, kind, amount, request_id, created_at) VALUES (?, 'charge', ?, ?, ?)",
        [(uid, -cost, request_id, created_at) for uid, cost, request_id in charges if cost],
    )
    totals: dict[int, int] = {}
    for uid, cost, _ in charges:
        totals[uid] = totals.get(uid, 0) + cost
    conn.executemany("UPDATE users SET balance = balance - ? WHERE id = ?", [(c, u) for u, c in totals.items() if c])
    return {u: conn.value("SELECT balance FROM users WHERE id = ?", (u,)) for u in totals}


def add_user(conn: Connection, email: str, balance: int = 0, plan: str | None = None) -> UserRow:
    email = email.strip()
    if not EMAIL_RE.match(email):
        raise AccountError(f"{email!r} is not an email address")
    with transaction(conn):
        if conn.execute("SELECT 1 FROM users WHERE email = ?", (email,)).fetchone():
            raise ConflictError(f"user {email} already exists")
        (user_id,) = conn.execute(
            "INSERT INTO users (email, plan, rev) VALUES (?, ?, ?) RETURNING id",
            (email, plan, _next_rev(conn, "users")),
        ).fetchone()
        if balance:
            add_ledger(conn, user_id, "grant", balance, "initial balance")
        audit.record(conn, "user.add", email, None, {"balance": balance, "plan": plan})
    return get_user(conn, email)


def set_user_plan(conn: Connection, email: str, plan: str | None) -> UserRow:
    with transaction(conn):
        user = get_user(conn, email)
        conn.execute("UPDATE users SET plan = ?, rev = ? WHERE id = ?", (plan, _next_rev(conn, "users"), user.id))
        audit.record(conn, "user.plan", user.email, {"plan": user.plan}, {"plan": plan})
    return get_user(conn, email)


def register_user(conn: Connection, email: str, password_hash: str, grant: int) -> tuple[UserRow, str]:
    """A self-registered user with a password, the signup grant, and a first key (returned in full once)."""
    with transaction(conn):
        user = add_user(conn, email)
        if grant:
            add_ledger(conn, user.id, "signup_grant", grant, "signup grant")
            audit.record(conn, "money.signup_grant", user.email, {"balance": 0}, {"balance": grant})
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user.id))
        _, full = create_key(conn, user.email, "default")
    return get_user(conn, user.email), full


def password_hash_of(conn: Connection, email: str) -> tuple[int, str | None] | None:
    row = conn.execute("SELECT id, password_hash FROM users WHERE email = ?", (email.strip(),)).fetchone()
    return None if row is None else (row[0], row[1])


def list_keys_of(conn: Connection, user_id: int) -> list[KeyRow]:
    return [
        KeyRow(*r)
        for r in conn.execute(
            f"SELECT {KEY_COLUMNS} FROM {KEY_FROM} WHERE k.user_id = ? ORDER BY k.created_at", (user_id,)
        )
    ]


def key_owner(conn: Connection, key_id: str) -> int | None:
    """The user id a key belongs to, or None when there is no such key."""
    row = conn.execute("SELECT user_id FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return None if row is None else row[0]


def _check_owner(conn: Connection, user_id: int | None, key_id: str) -> None:
    """Anyone else's key id is reported as not found (`user_id=None`: any key, the admin's)."""
    owner = key_owner(conn, key_id)
    if owner is None or (user_id is not None and owner != user_id):
        raise NotFoundError(f"no key {key_id!r}")


def revoke_key_of(conn: Connection, user_id: int | None, key_id: str) -> KeyRow:
    """Revoke one of this user's keys."""
    _check_owner(conn, user_id, key_id)
    return revoke_key(conn, key_id)


def update_key_of(conn: Connection, user_id: int | None, key_id: str, rules: dict) -> KeyRow:
    """Change the rules of one of this user's keys."""
    _check_owner(conn, user_id, key_id)
    return update_key(conn, key_id, rules)


def grant_monthly_credits(conn: Connection, credits: dict[str, int], month: str) -> int:
    """Give each user on a plan with included credit that credit once for `month` (YYYY-MM).

    Idempotent: the ledger row (kind `plan_credit`, note = the month) is the record that it was given.
    """
    granted = 0
    with transaction(conn):
        for plan, credit in credits.items():
            if credit <= 0:
                continue
            rows = conn.execute(
                "SELECT id FROM users WHERE plan = ? AND status = 'active' AND NOT EXISTS (SELECT 1 FROM ledger "
                "WHERE ledger.user_id = users.id AND kind = 'plan_credit' AND note = ?)",
                (plan, month),
            ).fetchall()
            for (uid,) in rows:
                add_ledger(conn, uid, "plan_credit", credit, month)
                email = conn.execute("SELECT email FROM users WHERE id = ?", (uid,)).fetchone()[0]
                audit.record(conn, "money.plan_credit", email, None, {"amount": credit, "plan": plan, "month": month})
                granted += 1
    return granted


def get_user(conn: Connection, email: str) -> UserRow:
    row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE email = ?", (email.strip(),)).fetchone()
    if row is None:
        raise NotFoundError(f"no user {email!r}; see `hubproxy users list`")
    return UserRow(*row)


def list_users(conn: Connection) -> list[UserRow]:
    return [UserRow(*r) for r in conn.execute(f"SELECT {USER_COLUMNS} FROM users ORDER BY id")]


def topup(conn: Connection, email: str, amount: int, kind: str = "topup", note: str | None = None) -> UserRow:
    with transaction(conn):
        user = get_user(conn, email)
        add_ledger(conn, user.id, kind, amount, note)
        after = {"balance": user.balance + amount, "amount": amount, "note": note}
        audit.record(conn, f"money.{kind}", user.email, {"balance": user.balance}, after)
    return get_user(conn, email)


def set_user_status(conn: Connection, email: str, status: str) -> UserRow:
    """Enable or disable; disabling also ends the user's login tokens."""
    with transaction(conn):
        user = get_user(conn, email)
        ended = 1 if status != "active" else 0
        conn.execute(
            "UPDATE users SET status = ?, token_version = token_version + ?, rev = ? WHERE id = ?",
            (status, ended, _next_rev(conn, "users"), user.id),
        )
        audit.record(conn, "user.status", user.email, {"status": user.status}, {"status": status})
    return get_user(conn, email)


def set_password(conn: Connection, email: str, password_hash: str) -> UserRow:
    """A new password hash; every login token issued before it ends."""
    with transaction(conn):
        user = get_user(conn, email)
        conn.execute(
            "UPDATE users SET password_hash = ?, token_version = token_version + 1, rev = ? WHERE id = ?",
            (password_hash, _next_rev(conn, "users"), user.id),
        )
        audit.record(conn, "user.password", user.email, None, {"password": "changed"})  # never the hash
    return get_user(conn, email)


def end_login_tokens(conn: Connection, user_id: int) -> UserRow:
    """Log out everywhere: every login token this user holds ends."""
    with transaction(conn):
        conn.execute(
            "UPDATE users SET token_version = token_version + 1, rev = ? WHERE id = ?",
            (_next_rev(conn, "users"), user_id),
        )
        row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is not None:
            audit.record(conn, "user.logout", UserRow(*row).email, None, {"login_tokens": "ended"})
    if row is None:
        raise NotFoundError(f"no user {user_id}")
    return UserRow(*row)


def create_key(conn: Connection, email: str, name: str, rules: dict | None = None) -> tuple[KeyRow, str]:
    """Create a key; the full key is returned here once and never stored.

    `rules` maps policy columns (see POLICY_COLUMNS) to already validated values.
    """
    if not KEY_NAME_RE.match(name):
        raise AccountError(f"key name {name!r} must be 1-64 letters, digits, spaces or .:@/-_")
    rules = _check_rules(rules or {})
    full = apikey.new_key()
    key_id = apikey.new_key_id()
    columns = ["id", "user_id", "name", "key_hash", "prefix", "last4", "rev", *rules]
    with transaction(conn):
        user = get_user(conn, email)
        values = [key_id, user.id, name, apikey.hash_key(full), full[:9], full[-4:], _next_rev(conn, "api_keys")]
        conn.execute(
            f"INSERT INTO api_keys ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [*values, *rules.values()],
        )
        audit.record(conn, "key.create", key_id, None, {"user": user.email, "name": name, **rules})  # never the key
    return get_key(conn, key_id), full


def update_key(conn: Connection, key_id: str, rules: dict) -> KeyRow:
    """Change a key's rules (None clears one); a running server applies them within a second."""
    rules = _check_rules(rules)
    if not rules:
        raise AccountError("nothing to change; see `hubproxy keys update --help`")
    with transaction(conn):
        before = get_key(conn, key_id)
        assignments = ", ".join(f"{column} = ?" for column in rules)
        conn.execute(
            f"UPDATE api_keys SET {assignments}, rev = ? WHERE id = ?",
            [*rules.values(), _next_rev(conn, "api_keys"), key_id],
        )
        audit.record(conn, "key.update", key_id, {c: getattr(before, c) for c in rules}, rules)
    return get_key(conn, key_id)


def _check_rules(rules: dict) -> dict:
    unknown = set(rules) - set(POLICY_COLUMNS)
    if unknown:
        raise AccountError(f"unknown key rule {sorted(unknown)[0]!r}")
    return rules


def get_key(conn: Connection, key_id: str) -> KeyRow:
    row = conn.execute(f"SELECT {KEY_COLUMNS} FROM {KEY_FROM} WHERE k.id = ?", (key_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no key {key_id!r}; see `hubproxy keys list`")
    return KeyRow(*row)


def list_keys(conn: Connection, email: str | None = None) -> list[KeyRow]:
    if email is None:
        rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM {KEY_FROM} ORDER BY k.created_at")
    else:
        user = get_user(conn, email)
        rows = conn.execute(
            f"SELECT {KEY_COLUMNS} FROM {KEY_FROM} WHERE k.user_id = ? ORDER BY k.created_at", (user.id,)
        )
    return [KeyRow(*r) for r in rows]


def revoke_key(conn: Connection, key_id: str) -> KeyRow:
    with transaction(conn):
        key = get_key(conn, key_id)
        if key.status == "revoked":
            raise ConflictError(f"key {key_id} is already revoked")
        conn.execute(
            "UPDATE api_keys SET status = 'revoked', rev = ?, revoked_at = ? WHERE id = ?",
            (_next_rev(conn, "api_keys"), utc_now(), key_id),
        )
        audit.record(conn, "key.revoke", key_id, {"status": key.status}, {"status": "revoked"})
    return get_key(conn, key_id)


def users_changed_since(conn: Connection, rev: int) -> list[UserRow]:
    return [UserRow(*r) for r in conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE rev > ?", (rev,))]


def keys_changed_since(conn: Connection, rev: int) -> list[tuple]:
    """(id, user_id, name, status, key_hash, rev, *policy columns) of keys changed since `rev`: only
    what the server keeps in memory, so 100,000 keys load fast and small."""
    return conn.execute(
        f"SELECT id, user_id, name, status, key_hash, rev, {', '.join(POLICY_COLUMNS)} FROM api_keys WHERE rev > ?",
        (rev,),
    ).fetchall()


def key_spend_since(conn: Connection, key_id: str, day: str) -> int:
    """What a key has spent from `day` on (day granularity, from the daily totals)."""
    row = conn.execute(
        "SELECT coalesce(sum(cost), 0) FROM usage_daily WHERE key_id = ? AND day >= ?", (key_id, day)
    ).fetchone()
    return row[0]


def touch_keys(conn: Connection, last_used: dict[str, str]) -> None:
    """Record when keys were last used (batched by the server; does not bump rev)."""
    conn.executemany("UPDATE api_keys SET last_used_at = ? WHERE id = ?", [(t, k) for k, t in last_used.items()])


def ledger_mismatches(conn: Connection) -> list[tuple[str, int, int]]:
    """Users whose balance differs from the sum of their ledger (should always be empty)."""
    return conn.execute(
        "SELECT u.email, u.balance, coalesce(sum(l.amount), 0) FROM users u "
        "LEFT JOIN ledger l ON l.user_id = u.id GROUP BY u.id HAVING u.balance != coalesce(sum(l.amount), 0)"
    ).fetchall()
