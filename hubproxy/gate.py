"""Who is calling and may they: key lookup, account state and balance reservations, all in memory.

The hot path never touches SQLite: the gate holds every key (by hash) and every user's balance.
The store's writer thread tells it about changes made elsewhere (the CLI revoking a key, a top-up)
and about its own committed charges, always in commit order, so memory and database agree.
Available balance = committed balance - charges queued but not yet committed - open reservations.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hubproxy import errors
from hubproxy.apikey import key_digest
from hubproxy.money import format_usd
from hubproxy.store import accounts


@dataclass(slots=True)
class UserState:
    id: int
    email: str
    active: bool
    balance: int
    pending: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.balance - self.pending - self.reserved


@dataclass(slots=True)
class KeyState:
    id: str
    user_id: int
    name: str
    active: bool


def insufficient_quota(amount: int, available: int | None) -> errors.GatewayError:
    have = "" if available is None else f" and ${format_usd(max(available, 0))} is available"
    return errors.insufficient_quota(
        f"Insufficient balance: this call may cost up to ${format_usd(amount)}{have}. Top up to continue."
    )


Changes = tuple[list[accounts.UserRow], list[tuple]]


class Gate:
    def __init__(self) -> None:
        self.users: dict[int, UserState] = {}
        self.keys: dict[bytes, KeyState] = {}
        self._user_rev = -1
        self._key_rev = -1

    def read_changes(self, conn: sqlite3.Connection) -> Changes:
        """Rows changed since the last applied ones (runs on the writer thread)."""
        return accounts.users_changed_since(conn, self._user_rev), accounts.keys_changed_since(conn, self._key_rev)

    def apply_changes(self, changes: Changes) -> None:
        """Install changed rows (runs on the event loop)."""
        users, keys = changes
        for row in users:
            state = self.users.get(row.id)
            if state is None:
                self.users[row.id] = UserState(row.id, row.email, row.status == "active", row.balance)
            else:
                state.active = row.status == "active"
                state.balance = row.balance
            self._user_rev = max(self._user_rev, row.rev)
        for key_id, user_id, name, status, key_hash, rev in keys:
            self.keys[bytes.fromhex(key_hash)] = KeyState(key_id, user_id, name, status == "active")
            self._key_rev = max(self._key_rev, rev)

    def load(self, conn: sqlite3.Connection) -> None:
        self.apply_changes(self.read_changes(conn))

    def authenticate(self, key: str | None) -> tuple[KeyState, UserState]:
        if not key:
            raise errors.invalid_api_key("Missing API key. Send 'Authorization: Bearer sk-hp-…'.")
        state = self.keys.get(key_digest(key))
        if state is None:
            raise errors.invalid_api_key()
        if not state.active:
            raise errors.invalid_api_key("This API key has been revoked.")
        user = self.users[state.user_id]
        if not user.active:
            raise errors.invalid_api_key("The account this key belongs to is disabled.")
        return state, user

    def reserve(self, user: UserState, amount: int) -> None:
        """Hold `amount` of the user's balance for one call, or refuse with 402."""
        if user.available < amount or (amount == 0 and user.available < 0):
            raise insufficient_quota(amount, user.available)
        user.reserved += amount

    @staticmethod
    def charge_queued(user: UserState, reserved: int, cost: int) -> None:
        user.reserved -= reserved
        user.pending += cost

    @staticmethod
    def charge_committed(user: UserState, cost: int, new_balance: int) -> None:
        user.pending -= cost
        user.balance = new_balance
