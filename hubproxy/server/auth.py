"""Who is calling: the key from the request's headers, checked against the account cache and the key's IP rules."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from hubproxy import errors
from hubproxy.accounts.cache import KeyState, UserState
from hubproxy.accounts.rules import ip_allowed
from hubproxy.server.state import STATE, GatewayState

if TYPE_CHECKING:
    from hubproxy.server.http import CallRequest


def api_key_from(headers) -> str | None:
    """Bearer token, else `x-api-key` (Anthropic-style clients), `api-key` (Azure-style) or
    `x-goog-api-key` (Gemini's clients).

    Every key and token hubproxy issues is ASCII; anything else (bytes that are not UTF-8 arrive
    as surrogates) is refused here, before it reaches a hash or a comparison that would choke on it."""
    token = None
    auth = headers.get("Authorization")
    if auth:
        scheme, _, bearer = auth.partition(" ")
        if scheme.lower() == "bearer" and bearer.strip():
            token = bearer.strip()
    if token is None:
        token = headers.get("x-api-key") or headers.get("api-key") or headers.get("x-goog-api-key")
    if token is not None and not token.isascii():
        raise errors.invalid_api_key("The API key holds characters that no hubproxy key has.")
    return token


def authorize(request: CallRequest) -> tuple[KeyState, UserState]:
    """The calling key and its user (the key from the headers, or on Gemini's routes `?key=`), or 401
    (unknown, revoked, expired, disabled) / 403 (address)."""
    state = request.app[STATE]
    token = api_key_from(request.headers)
    if token is None and request.path.startswith("/v1beta/"):  # Google's clients may put it in the URL
        token = request.query.get("key")
        if token is not None and not token.isascii():
            raise errors.invalid_api_key("The API key holds characters that no hubproxy key has.")
    key, user = state.accounts.authenticate(token)
    if key.policy.networks:
        address = socket_client(request, state) or state.caller_address(request)
        if not ip_allowed(key.policy, address):
            raise errors.ip_not_allowed(address)
    return key, user


def socket_client(request: CallRequest, state: GatewayState) -> str | None:
    """The caller of a WebSocket whose call this server makes to itself (`server.responses_socket`),
    whose IP rules were checked at the upgrade: named in a header that only a request from this machine
    (loopback, or the server's own address) with the server's admin token may set."""
    named = request.headers.get("X-Hubproxy-Socket-Client")
    if named is None or not state.admin_token:
        return None
    transport = request.transport
    local = transport.get_extra_info("sockname") if transport is not None else None
    if request.remote not in ("127.0.0.1", "::1") and (not local or request.remote != local[0]):
        return None
    token = request.headers.get("X-Hubproxy-Socket-Token", "")
    return named if hmac.compare_digest(token.encode(), state.admin_token.encode()) else None
