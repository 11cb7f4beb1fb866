"""Who is calling and may they: key lookup, account state and balance reservations, all in memory.

The hot path never touches SQLite: the gate holds every key (by hash) and every user's balance.
The store's writer thread tells it about changes made elsewhere (the CLI revoking a key, a top-up)
and about its own committed charges, always in commit order, so memory and database agree.
Available balance = committed balance - charges queued but not yet committed - open reservations.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from hubproxy import errors
from hubproxy.accounts.rules import KeyPolicy, PolicyError, expiry_timestamp, parse_models, parse_networks, period_start
from hubproxy.apikey import key_digest
from hubproxy.money import format_usd
from hubproxy.store.sqlite import accounts

log = logging.getLogger("hubproxy.accounts.keys")
NO_RULES = KeyPolicy()
DIGEST_CACHE = 10_000


@dataclass(slots=True)
class UserState:
    id: int
    email: str
    active: bool
    balance: int
    plan: str | None = None
    pending: int = 0
    reserved: int = 0
    lease: int = 0  # with several workers: this worker's slice of the balance (leases.py)
    token_version: int = 0  # login tokens of another version have ended (logout, new password, disabled)

    @property
    def available(self) -> int:
        return self.balance - self.pending - self.reserved


@dataclass(slots=True)
class KeyState:
    id: str
    user_id: int
    name: str
    active: bool
    policy: KeyPolicy = NO_RULES
    spent: int = 0
    period: str = ""
    reserved: int = 0

    def budget_left(self) -> int | None:
        """What the key may still spend in its current budget period (None: no cap)."""
        limit = self.policy.spend_limit
        if limit is None:
            return None
        current = period_start(self.policy.budget_period)
        if current != self.period:
            self.period, self.spent = current, 0
        return limit - self.spent - self.reserved


def key_policy(row: tuple) -> KeyPolicy:
    models, allow_ips, spend_limit, budget_period, expires_at, rpm, tpm, max_parallel = row
    return KeyPolicy(
        models=parse_models(models),
        networks=parse_networks(json.loads(allow_ips) if allow_ips else ()),
        spend_limit=spend_limit,
        budget_period=budget_period,
        expires_at=expiry_timestamp(expires_at),
        rpm=rpm,
        tpm=tpm,
        max_parallel=max_parallel,
    )


def insufficient_quota(amount: int, available: int | None) -> errors.GatewayError:
    have = "" if available is None else f" and ${format_usd(max(available, 0))} is available"
    return errors.insufficient_quota(
        f"Insufficient balance: this call may cost up to ${format_usd(amount)}{have}. Top up to continue."
    )


def over_key_budget(key: KeyState, left: int, amount: int) -> errors.GatewayError:
    period = f" this {key.policy.budget_period}" if key.policy.budget_period else ""
    return errors.insufficient_quota(
        f"This key's spend limit of ${format_usd(key.policy.spend_limit or 0)}{period} leaves "
        f"${format_usd(max(left, 0))}; this call may cost up to ${format_usd(amount)}."
    )


Changes = tuple[list[accounts.UserRow], list[tuple[tuple, int]]]


class Gate:
    def __init__(self) -> None:
        self.users: dict[int, UserState] = {}
        self.keys: dict[bytes, KeyState] = {}
        self._digests: dict[str, bytes] = {}  # presented key → its SHA-256, for keys that exist
        self._user_rev = -1
        self._key_rev = -1
        self.on_users_changed: Callable[[list[int]], None] | None = None

    def read_changes(self, conn: sqlite3.Connection) -> Changes:
        """Rows changed since the last applied ones, with what capped keys spent in their current
        budget period (runs on the writer thread)."""
        keys = []
        for row in accounts.keys_changed_since(conn, self._key_rev):
            spend_limit, budget_period = row[8], row[9]
            spent = 0
            if spend_limit is not None:
                spent = accounts.key_spend_since(conn, row[0], period_start(budget_period))
            keys.append((row, spent))
        return accounts.users_changed_since(conn, self._user_rev), keys

    def apply_changes(self, changes: Changes) -> None:
        """Install changed rows (runs on the event loop)."""
        users, keys = changes
        if users and self.on_users_changed is not None:
            self.on_users_changed([row.id for row in users if row.id in self.users])
        for row in users:
            state = self.users.get(row.id)
            if state is None:
                self.users[row.id] = UserState(
                    row.id, row.email, row.status == "active", row.balance, row.plan, token_version=row.token_version
                )
            else:
                state.active = row.status == "active"
                state.balance = row.balance
                state.plan = row.plan
                state.token_version = row.token_version
            self._user_rev = max(self._user_rev, row.rev)
        for row, spent in keys:
            key_id, user_id, name, status, key_hash, rev = row[:6]
            try:
                policy = key_policy(row[6:])
            except (PolicyError, ValueError) as exc:
                log.error("key %s has unreadable rules (%s); refusing it until they are fixed", key_id, exc)
                policy, status = NO_RULES, "invalid"
            digest = bytes.fromhex(key_hash)
            state = self.keys.get(digest)
            if state is None:
                state = self.keys[digest] = KeyState(key_id, user_id, name, status == "active")
            state.name, state.active, state.policy, state.spent = name, status == "active", policy, spent
            state.period = period_start(policy.budget_period)
            self._key_rev = max(self._key_rev, rev)

    def load(self, conn: sqlite3.Connection) -> None:
        self.apply_changes(self.read_changes(conn))

    def authenticate(self, key: str | None) -> tuple[KeyState, UserState]:
        if not key:
            raise errors.invalid_api_key("Missing API key. Send 'Authorization: Bearer sk-hp-…'.")
        digest = self._digests.get(key)
        if digest is None:
            digest = key_digest(key)
            if digest in self.keys:  # remember real keys only, so junk keys cannot grow the cache
                if len(self._digests) >= DIGEST_CACHE:
                    self._digests.clear()
                self._digests[key] = digest
        state = self.keys.get(digest)
        if state is None:
            raise errors.invalid_api_key()
        if not state.active:
            raise errors.invalid_api_key("This API key has been revoked.")
        expires = state.policy.expires_at
        if expires is not None and time.time() >= expires:
            raise errors.invalid_api_key(
                f"This API key expired at {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(expires))}."
            )
        user = self.users[state.user_id]
        if not user.active:
            raise errors.invalid_api_key("The account this key belongs to is disabled.")
        return state, user

    @staticmethod
    def check_key_budget(key: KeyState, amount: int) -> None:
        """Refuse with 402 if this call could take the key past its spend cap."""
        left = key.budget_left()
        if left is not None and left < amount:
            raise over_key_budget(key, left, amount)

    def reserve(self, user: UserState, key: KeyState, amount: int) -> None:
        """Hold `amount` of the user's balance (and of the key's budget) for one call, or refuse with 402."""
        self.check_key_budget(key, amount)
        if user.available < amount or (amount == 0 and user.available < 0):
            raise insufficient_quota(amount, user.available)
        user.reserved += amount
        key.reserved += amount

    @staticmethod
    def charge_queued(user: UserState, key: KeyState, reserved: int, cost: int) -> None:
        user.reserved -= reserved
        user.pending += cost
        key.reserved -= reserved
        key.spent += cost

    @staticmethod
    def charge_committed(user: UserState, cost: int, new_balance: int) -> None:
        user.pending -= cost
        user.balance = new_balance
