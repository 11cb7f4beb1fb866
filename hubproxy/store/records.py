"""What crosses the store's boundary: typed rows in, typed rows out, and the errors a change can meet.

Every store backend takes and returns these, so nothing outside `store/` sees a connection, a
cursor or a tuple of columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import msgspec

from hubproxy import apikey
from hubproxy.tokens import Usage

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class DatabaseError(RuntimeError):
    """The database is missing, corrupt or locked; the message tells the user what to do."""


class AccountError(ValueError):
    """A user-caused problem with users or keys (unknown email, duplicate, bad name)."""


class NotFoundError(AccountError):
    """No such user or key (or not one the caller may see)."""


class ConflictError(AccountError):
    """The change clashes with what exists (a taken email, a key already revoked)."""


@dataclass(frozen=True)
class UserRow:
    id: int
    email: str
    balance: int
    status: str
    created_at: str
    rev: int
    plan: str | None
    token_version: int = 0


POLICY_COLUMNS = ("models", "allow_ips", "spend_limit", "budget_period", "expires_at", "rpm", "tpm", "max_parallel")


@dataclass(frozen=True)
class KeyRow:
    id: str
    user_id: int
    email: str
    name: str
    key_hash: str
    prefix: str
    last4: str
    status: str
    created_at: str
    revoked_at: str | None
    last_used_at: str | None
    rev: int
    models: str | None = None
    allow_ips: str | None = None
    spend_limit: int | None = None
    budget_period: str | None = None
    expires_at: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None

    def rules(self) -> dict:
        """The key's policy columns that are set."""
        return {c: getattr(self, c) for c in POLICY_COLUMNS if getattr(self, c) is not None}

    @property
    def masked(self) -> str:
        return apikey.masked(self.prefix, self.last4)


class Reservation(msgspec.Struct):
    """A call in flight: what it holds, and what it is billed if the process dies before it ends.
    (msgspec structs, not dataclasses, for the records made on every call: their constructor is C.)"""

    id: str
    user_id: int
    key_id: str
    model: str
    provider: str
    upstream_model: str
    endpoint: str
    stream: bool
    amount: int
    prompt_tokens: int
    prompt_cost: int
    price_id: str = ""  # the prices it is billed at (config.prices.price_version; the price history)

    def row(self) -> tuple:
        """The fields in order, as the reservations table and the journal hold them."""
        return msgspec.structs.astuple(self)


class CallRecord(msgspec.Struct, kw_only=True):
    """One finished call, as written to `usage` (and to `ledger` when it cost something): built with
    keywords. `usage`: its tokens, class by class (`tokens.TOKEN_CLASSES`: each has its column)."""

    reservation: Reservation
    usage: Usage
    cost: int
    estimated: bool
    status: str
    http_status: int
    latency_ms: int = 0
    persisted: bool = False
    attempts: str = ""
    budget_held: bool = False  # workers: a hold on the key's spend cap to drop with this record
    over_reservation: int = 0  # cost beyond the hold: the upstream gave more than max_tokens

    @classmethod
    def interrupted(cls, reservation: Reservation, persisted: bool) -> CallRecord:
        """A call whose server died before it ended: billed its prompt estimate, marked estimated."""
        usage = Usage(reservation.prompt_tokens, 0)
        return cls(
            reservation=reservation,
            usage=usage,
            cost=reservation.prompt_cost,
            estimated=True,
            status="interrupted",
            http_status=0,
            persisted=persisted,
        )


@dataclass(frozen=True, slots=True)
class CachedKey:
    """What the server keeps in memory of a key: its rules as stored, and what a capped key has
    spent in its current budget period."""

    id: str
    user_id: int
    name: str
    status: str
    key_hash: str
    rev: int
    models: str | None
    allow_ips: str | None
    spend_limit: int | None
    budget_period: str | None
    expires_at: str | None
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    spent: int = 0


@dataclass(slots=True)
class AccountChanges:
    """Users and keys changed since the revisions the server last saw."""

    users: list[UserRow] = field(default_factory=list)
    keys: list[CachedKey] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LimitRefusal:
    """Which shared limit refused a call ("parallel", "rpm", "tpm") and how long until it would pass."""

    limit: str
    wait: float


USAGE_COLUMNS = (  # a usage log row, as `Store.usage_page` returns it
    "id",
    "request_id",
    "created_at",
    "email",
    "key_id",
    "model",
    "provider",
    "endpoint",
    "stream",
    "status",
    "http_status",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "web_search_requests",
    "cost",
    "estimated",
    "latency_ms",
    "price_id",
)


@dataclass(frozen=True)
class UsageFilter:
    """One page of the usage log: whose calls, which, and where the previous page ended."""

    user_id: int | None = None
    key_id: str | None = None
    model: str | None = None
    status: str | None = None  # "ok", "error" (anything else), or one exact status
    since: str | None = None  # YYYY-MM-DD, inclusive
    until: str | None = None  # YYYY-MM-DD, inclusive
    before: tuple[str, int] | None = None  # (created_at, id) of the last row shown


@dataclass(frozen=True)
class UsagePage:
    """Usage log rows, newest first. `searched_to`: a filtered search stopped at this time (an hour,
    `YYYY-MM-DDTHH`); when it holds fewer rows than asked, older calls may still match."""

    rows: list[dict]
    searched_to: str | None = None
