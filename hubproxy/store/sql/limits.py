"""Rate limits and spend caps shared by worker processes, in the database.

One process counts calls and spend in memory (ratelimit.windows, billing.budget). Worker processes
cannot, so for keys that have limits or a spend cap each admission is decided in the writer's
transaction, which SQLite serializes across processes (and PostgreSQL across instances, under the
writers' lock): the same windows and caps, seen by every worker. Keys without them never come here.
"""

from __future__ import annotations

from hubproxy.periods import WINDOW, tokens_free_in
from hubproxy.store.records import LimitRefusal
from hubproxy.store.sql import Connection
from hubproxy.store.sql.accounts import key_spend_since

AdmitAsk = tuple[str, str, int | None, int | None, int | None, int, float]
# request id, key id, rpm, tpm, max_parallel, tokens, now (unix seconds)
Refusal = LimitRefusal | None  # None: admitted


def admit_calls(conn: Connection, asks: list[AdmitAsk]) -> list[Refusal]:
    """Admit each call (and record it) or say which limit refuses it and for how long."""
    results: list[Refusal] = []
    for request_id, key_id, rpm, tpm, max_parallel, tokens, now in asks:
        cutoff = now - WINDOW
        if max_parallel:
            running = conn.execute("SELECT count(*) FROM limit_calls WHERE key_id = ? AND open = 1", (key_id,))
            if running.fetchone()[0] >= max_parallel:
                results.append(LimitRefusal("parallel", 1.0))
                continue
        recent = conn.execute(
            "SELECT started, tokens FROM limit_calls WHERE key_id = ? AND started > ? ORDER BY started",
            (key_id, cutoff),
        ).fetchall()
        if rpm and len(recent) >= rpm:
            results.append(LimitRefusal("rpm", recent[len(recent) - rpm][0] + WINDOW - now))
            continue
        if tpm:
            excess = sum(t for _, t in recent) + tokens - tpm
            if excess > 0:
                results.append(LimitRefusal("tpm", tokens_free_in(recent, excess, now)))
                continue
        conn.execute(
            "INSERT INTO limit_calls (id, key_id, started, tokens) VALUES (?, ?, ?, ?)",
            (request_id, key_id, now, tokens),
        )
        results.append(None)
    return results


def finish_calls(conn: Connection, done: list[tuple[str, str, int | None, float]]) -> list[None]:
    """Calls (request id, key id, tokens used or None, now) ended: close them, count their real tokens,
    and forget these keys' closed calls that left the window."""
    conn.executemany(
        "UPDATE limit_calls SET open = 0, tokens = coalesce(?, tokens) WHERE id = ?",
        [(tokens, request_id) for request_id, _, tokens, _ in done],
    )
    expired = {key_id: now - WINDOW for _, key_id, _, now in done}
    conn.executemany(
        "DELETE FROM limit_calls WHERE key_id = ? AND started <= ? AND open = 0",
        list(expired.items()),
    )
    return [None] * len(done)


BudgetAsk = tuple[str, str, int, str, int]  # request id, key id, spend limit, period's first day, amount


def hold_budgets(conn: Connection, asks: list[BudgetAsk]) -> list[int | None]:
    """Hold each call's worst case against its key's cap: None when held, else what the cap leaves.

    Spent = the key's committed costs since the period began (daily totals) + the holds of its calls
    in flight; `record_calls` drops a call's hold in the transaction that adds its cost.
    """
    results: list[int | None] = []
    for request_id, key_id, limit, since, amount in asks:
        spent = key_spend_since(conn, key_id, since)
        held = conn.execute("SELECT coalesce(sum(amount), 0) FROM key_holds WHERE key_id = ?", (key_id,)).fetchone()[0]
        left = limit - spent - held
        if left < amount:
            results.append(left)
            continue
        conn.execute("INSERT INTO key_holds (id, key_id, amount) VALUES (?, ?, ?)", (request_id, key_id, amount))
        results.append(None)
    return results


def release_budgets(conn: Connection, request_ids: list[str]) -> None:
    conn.executemany("DELETE FROM key_holds WHERE id = ?", [(r,) for r in request_ids])


def clear_limit_calls(conn: Connection, request_prefix: str | None = None) -> None:
    """Calls a killed worker left open hold no rate-limit slot and no budget: all of them (nothing
    runs yet), or those whose request ids start with `request_prefix` (one worker died)."""
    if request_prefix is None:
        conn.execute("DELETE FROM limit_calls")
        conn.execute("DELETE FROM key_holds")
        return
    for table in ("limit_calls", "key_holds"):
        conn.execute(f"DELETE FROM {table} WHERE substr(id, 1, ?) = ?", (len(request_prefix), request_prefix))
