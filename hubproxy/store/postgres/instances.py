"""Instances sharing one PostgreSQL database, and what happens when one dies.

Each instance beats every `BEAT` seconds (its row in `instances`, stamped with the database's own
clock, so hosts' clocks do not matter). One whose beat is older than `DEAD_AFTER` is taken for dead
by whichever instance sees it first: the row is deleted (`DELETE … RETURNING`, so one instance and
only one wins) and, in that transaction, its open reservations are billed as `interrupted` and its
leases dropped, so the money it held serves the others again. An instance reaps only after beating
without a break for `DEAD_AFTER` itself: after the database was away, everyone first gets the time
to beat again. And a call billed this way is not billed again if its instance was only slow (see
`usage.still_open`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hubproxy.store.sql import transaction
from hubproxy.store.sql.usage import settle_leftover_reservations

log = logging.getLogger("hubproxy.store")

BEAT = 1.0
DEAD_AFTER = 10.0
CLOCK = "extract(epoch from clock_timestamp())"


class Heart:
    """This instance's heartbeat and the reaping of dead ones, run by the writer thread between batches."""

    def __init__(self, holder: str, request_prefix: str) -> None:
        self.holder, self.request_prefix = holder, request_prefix
        self.last_beat = 0.0
        self.beating_since: float | None = None
        self.reaped = 0

    def tick(self, conn: Any) -> bool:
        """Beat if it is time (and reap if it is safe); False if the database did not answer."""
        now = time.monotonic()
        if now - self.last_beat < BEAT:
            return True
        try:
            self.beat(conn)
        except Exception as exc:  # the database is away: the writer reports it
            self.beating_since = None
            log.debug("heartbeat failed: %s", exc)
            return False
        if self.beating_since is None or now - self.last_beat > DEAD_AFTER / 2:
            self.beating_since = now
        self.last_beat = now
        if now - self.beating_since >= DEAD_AFTER:
            self.reap(conn)
        return True

    def beat(self, conn: Any) -> None:
        conn.execute(
            f"INSERT INTO instances (holder, request_prefix, seen) VALUES (?, ?, {CLOCK}) "
            "ON CONFLICT (holder) DO UPDATE SET seen = excluded.seen",
            (self.holder, self.request_prefix),
        )

    def reap(self, conn: Any) -> None:
        dead = conn.execute(f"SELECT holder FROM instances WHERE seen < {CLOCK} - ?", (DEAD_AFTER,)).fetchall()
        for (holder,) in dead:
            with transaction(conn):
                row = conn.execute(
                    f"DELETE FROM instances WHERE holder = ? AND seen < {CLOCK} - ? RETURNING request_prefix",
                    (holder, DEAD_AFTER),
                ).fetchone()
                settled = 0 if row is None else settle_leftover_reservations(conn, holder=holder, request_prefix=row[0])
            if row is not None:
                self.reaped += 1
                log.warning("instance %s stopped beating: settled %d call(s) it left open", holder, settled)

    def stop(self, conn: Any) -> None:
        """A clean stop: this instance's leases were given back; its row goes."""
        conn.execute("DELETE FROM instances WHERE holder = ?", (self.holder,))
