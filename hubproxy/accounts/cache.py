"""Who is calling: every key (by hash) and every user, in memory, kept current by the store's change feed.

The hot path never touches the database: authenticating a call is a hash and two dict lookups. The
store tells the cache about changes made elsewhere (the CLI revoking a key, a top-up, another
worker) in commit order. The money fields of a `UserState` and `KeyState` (`pending`, `reserved`,
`lease`, `spent`) belong to `billing.budget`, which alone changes them; the cache installs the
committed balance the database reports.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from hubproxy import errors
from hubproxy.accounts.rules import KeyPolicy, PolicyError, expiry_timestamp, parse_models, parse_networks
from hubproxy.apikey import key_digest
from hubproxy.periods import period_start
from hubproxy.store.records import AccountChanges, CachedKey

log = logging.getLogger("hubproxy.accounts")
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
    lease: int = 0  # with several workers: this worker's slice of the balance (billing.budget.LeasedBudget)
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


def key_policy(key: CachedKey) -> KeyPolicy:
    return KeyPolicy(
        models=parse_models(key.models),
        networks=parse_networks(json.loads(key.allow_ips) if key.allow_ips else ()),
        spend_limit=key.spend_limit,
        budget_period=key.budget_period,
        expires_at=expiry_timestamp(key.expires_at),
        rpm=key.rpm,
        tpm=key.tpm,
        max_parallel=key.max_parallel,
    )


class AccountCache:
    def __init__(self) -> None:
        self.users: dict[int, UserState] = {}
        self.keys: dict[bytes, KeyState] = {}
        self._digests: dict[str, bytes] = {}  # presented key → its SHA-256, for keys that exist
        self.on_users_changed: Callable[[list[int]], None] | None = None

    def apply(self, changes: AccountChanges) -> None:
        """Install changed rows (runs on the event loop, in commit order)."""
        if changes.users and self.on_users_changed is not None:
            self.on_users_changed([row.id for row in changes.users if row.id in self.users])
        for row in changes.users:
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
        for key_row in changes.keys:
            status = key_row.status
            try:
                policy = key_policy(key_row)
            except (PolicyError, ValueError) as exc:
                log.error("key %s has unreadable rules (%s); refusing it until they are fixed", key_row.id, exc)
                policy, status = NO_RULES, "invalid"
            digest = bytes.fromhex(key_row.key_hash)
            key = self.keys.get(digest)
            if key is None:
                key = self.keys[digest] = KeyState(key_row.id, key_row.user_id, key_row.name, status == "active")
            key.name, key.active, key.policy, key.spent = key_row.name, status == "active", policy, key_row.spent
            key.period = period_start(policy.budget_period)

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
