"""hubproxy API keys: how they look, how they are hashed, how they are shown masked.

Keys are 190 random bits, so one fast SHA-256 is enough to store them safely (a slow KDF only helps
low-entropy secrets like passwords) and keeps the hot-path lookup to a hash and a dict access.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "sk-hp-"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(24).replace("-", "a").replace("_", "b")


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def hash_key(key: str) -> str:
    """What the database stores."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_digest(key: str) -> bytes:
    """What the server's in-memory index uses: the same hash as raw bytes (half the memory)."""
    return hashlib.sha256(key.encode()).digest()


def masked(prefix: str, last4: str) -> str:
    return f"{prefix}…{last4}"
