"""The pure arithmetic of time that the store and its users share: a spend cap's budget period and
the rate limits' sliding window. It sits below `store/`, `accounts/` and `ratelimit/`, so that none of
them imports another for it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

WINDOW = 60.0
"""The rate limits' sliding window, in seconds (rpm, tpm)."""


def period_start(period: str | None, today: date | None = None) -> str:
    """First day (YYYY-MM-DD) of the budget period containing `today`; "" for a lifetime budget."""
    if period is None:
        return ""
    today = today or datetime.now(UTC).date()
    if period == "day":
        start = today
    elif period == "week":
        start = today - timedelta(days=today.weekday())
    else:
        start = today.replace(day=1)
    return start.isoformat()


def tokens_free_in(entries: Iterable[tuple[float, int]], excess: int, now: float) -> float:
    """Seconds until enough of the window's (started, tokens) entries, oldest first, leave it to
    free `excess` tokens."""
    for started, tokens in entries:
        excess -= tokens
        if excess <= 0:
            return started + WINDOW - now
    return WINDOW
