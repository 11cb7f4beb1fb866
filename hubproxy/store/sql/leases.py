"""Balance leases: what each worker process may spend of a user's balance without asking.

With `serve --workers N` no process sees the others' reservations in memory. Instead of writing
every reservation to the database (a cross-process write lock per call), a worker takes a slice of
the user's balance, a lease, and reserves calls against it in memory; its charges shrink the lease
in the same transaction that lowers the balance. So at every commit

    balance - sum(leases of the user) = money no worker has promised,

and a grant is made only from that. Leases are only promises: deleting them (a worker stopping, or
the next start after a crash) never moves money.
"""

from __future__ import annotations

from collections.abc import Iterable

from hubproxy.store.sql import Connection

LeaseAsk = tuple[str, int, int, int]  # holder, user_id, need, want


def take_leases(conn: Connection, asks: list[LeaseAsk]) -> list[int]:
    """Grant each ask between `need` and `want` from the user's unpromised money, leaving some for
    other workers; 0 if not even `need` is free, and then the other holders are asked to give back."""
    granted = []
    for holder, user_id, need, want in asks:
        row = conn.execute(
            "SELECT balance - (SELECT coalesce(sum(amount), 0) FROM leases WHERE user_id = ?) FROM users WHERE id = ?",
            (user_id, user_id),
        ).fetchone()
        free = row[0] if row else 0
        if free < need:
            conn.execute(
                "UPDATE leases SET wanted = 1 WHERE user_id = ? AND holder != ? AND amount > 0", (user_id, holder)
            )
            granted.append(0)
            continue
        grant = min(want, max(need, free // 2))
        conn.execute(
            "INSERT INTO leases (user_id, holder, amount) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id, holder) DO UPDATE SET amount = leases.amount + excluded.amount",
            (user_id, holder, grant),
        )
        granted.append(grant)
    return granted


def give_back(conn: Connection, holder: str, amounts: dict[int, int]) -> None:
    """Return unused parts of this holder's leases (and clear any request to do so)."""
    conn.executemany(
        "UPDATE leases SET amount = amount - ?, wanted = 0 WHERE user_id = ? AND holder = ?",
        [(amount, user_id, holder) for user_id, amount in amounts.items()],
    )


def charge_leases(conn: Connection, holder: str, charges: Iterable[tuple[int, int, str]]) -> None:
    """Charges (user_id, cost, request_id), as `charge_many` takes them, made under this holder's
    leases use them up, in the charge's transaction."""
    totals: dict[int, int] = {}
    for user_id, cost, _ in charges:
        totals[user_id] = totals.get(user_id, 0) + cost
    conn.executemany(
        "UPDATE leases SET amount = amount - ? WHERE user_id = ? AND holder = ?",
        [(cost, user_id, holder) for user_id, cost in totals.items() if cost],
    )


def wanted_back(conn: Connection, holder: str) -> list[int]:
    """Users whose money another worker was refused while this holder has some leased."""
    return [row[0] for row in conn.execute("SELECT user_id FROM leases WHERE holder = ? AND wanted = 1", (holder,))]


def drop_leases(conn: Connection, holder: str | None = None) -> None:
    """Forget one holder's leases (it stopped), or all of them (nothing runs yet)."""
    if holder is None:
        conn.execute("DELETE FROM leases")
    else:
        conn.execute("DELETE FROM leases WHERE holder = ?", (holder,))
