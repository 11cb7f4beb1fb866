"""Who is acting: the actor every audit row names, set where a change comes in — the CLI (the OS user),
the dashboard (the signed-in email, or "admin link"), the account API (the token's user), the server
itself ("server") — and read where the change is written (`store.sql.audit.record`). A context
variable, carried onto the store's writer thread with each write (`store.sql.store`)."""

from __future__ import annotations

import contextvars
import getpass

ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("audit_actor", default="server")


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def acting_as(actor: str) -> contextvars.Token[str]:
    return ACTOR.set(actor)
