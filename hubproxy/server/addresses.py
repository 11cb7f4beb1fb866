"""Where a call comes from: the caller's address (the peer, or what a trusted proxy forwards for) and
which browser origins may call."""

from __future__ import annotations

import re

from hubproxy.accounts.rules import IPNetwork, KeyPolicy, ip_allowed


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str | None:
    """The caller's address: the peer, unless the peer is a trusted proxy that says who it forwards."""
    if not forwarded_for or not trusted or not ip_allowed(KeyPolicy(networks=trusted), peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not ip_allowed(KeyPolicy(networks=trusted), hop):
            return hop
    return hops[0] if hops else peer


def origin_matcher(patterns: list[str]) -> re.Pattern[str] | None:
    """One regular expression for every allowed origin; None when there are none."""
    if not patterns:
        return None
    parts = []
    for pattern in patterns:
        if pattern == "*":
            parts.append(r"[^/]+//[^/]+")
        elif pattern.endswith(":*"):
            parts.append(re.escape(pattern[:-2]) + r"(:\d+)?")
        else:
            parts.append(re.escape(pattern))
    return re.compile("(?:" + "|".join(parts) + ")")
