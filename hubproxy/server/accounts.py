"""The account API of the hosted hubs (off by default): register, log in, own keys, balance, usage.

Same shapes as the API Hub documentation: JWT (HS256) for account actions, either the JWT or an
API key for billing reads, and the legacy OpenAI dashboard endpoints that chat apps read a balance
from. Writes go through the store's writer; reads run on its read pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import jwt
import orjson
from aiohttp import web

from hubproxy import errors
from hubproxy.accounts.cache import UserState
from hubproxy.accounts.rules import Limits
from hubproxy.apikey import PREFIX
from hubproxy.audit import ACTOR
from hubproxy.money import format_usd, parse_usd
from hubproxy.passwords import MIN_LENGTH, hash_password, verify_password
from hubproxy.ratelimit.windows import RateLimiter
from hubproxy.secrets import jwt_secret
from hubproxy.server.auth import api_key_from, authorize
from hubproxy.server.errors import openai_errors
from hubproxy.server.request_body import read_request
from hubproxy.server.state import STATE
from hubproxy.store.records import EMAIL_RE, AccountError, ConflictError, KeyRow, NotFoundError
from hubproxy.store.sql import accounts
from hubproxy.store.sql import usage as usage_rows

TOKEN_SECONDS = 7 * 24 * 3600
LOGIN_PER_EMAIL_AND_ADDRESS = Limits(rpm=5)
LOGIN_PER_ADDRESS = Limits(rpm=20)
LOGIN_PER_EMAIL = Limits(rpm=60)
LOGIN_WINDOWS = 10_000
SECRET = web.AppKey("jwt_secret", str)
LOGINS = web.AppKey("login_limiter", RateLimiter)


def add_account_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(load_secret)
    app[LOGINS] = RateLimiter()
    routes = [
        ("POST", "/auth/register", register),
        ("POST", "/auth/login", login),
        ("POST", "/auth/logout", logout),
        ("POST", "/auth/password", change_password),
        ("GET", "/api-keys", list_keys),
        ("POST", "/api-keys", create_key),
        ("DELETE", "/api-keys/{key_id}", revoke_key),
        ("GET", "/billing/balance", balance),
        ("GET", "/billing/usage", usage),
        ("GET", "/v1/dashboard/billing/subscription", subscription),
        ("GET", "/v1/dashboard/billing/usage", dashboard_usage),
    ]
    for method, path, handler in routes:
        if method == "GET":
            app.router.add_get(path, openai_errors(handler))  # and HEAD
        else:
            app.router.add_route(method, path, openai_errors(handler))


async def load_secret(app: web.Application):
    loop = asyncio.get_running_loop()
    app[SECRET] = await loop.run_in_executor(None, jwt_secret, app[STATE].paths)
    yield


def usd(pico: int) -> orjson.Fragment:
    """An exact decimal JSON number."""
    return orjson.Fragment(format_usd(pico, min_places=1).encode())


def respond(data: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def json_fields(request: web.Request, *names: str) -> list[str]:
    """The named string fields of a JSON body, or 400."""
    try:
        body = orjson.loads(await read_request(request, request.app[STATE].config.server))
    except orjson.JSONDecodeError:
        raise errors.invalid_request("Request body is not valid JSON.") from None
    values = [body.get(name) for name in names] if isinstance(body, dict) else [None] * len(names)
    strings = [value for value in values if isinstance(value, str)]
    if len(strings) != len(names):
        raise errors.invalid_request(" and ".join(f"'{name}'" for name in names) + " are required strings.")
    return strings


async def credentials(request: web.Request) -> tuple[str, str]:
    email, password = await json_fields(request, "email", "password")
    return email.strip(), password


def check_new_password(password: str, param: str = "password") -> None:
    if len(password) < MIN_LENGTH:
        raise errors.invalid_request(f"The password must be at least {MIN_LENGTH} characters.", param=param)


def issue_token(request: web.Request, user: UserState) -> str:
    """A login token; `ver` is the user's token version, which logout, a new password or a disabled
    account moves on, ending every token issued before."""
    now = int(time.time())
    claims = {
        "sub": str(user.id),
        "email": user.email,
        "ver": user.token_version,
        "iat": now,
        "exp": now + TOKEN_SECONDS,
    }
    return jwt.encode(claims, request.app[SECRET], algorithm="HS256")


def token_user(request: web.Request) -> int:
    """The user id of a valid JWT in `Authorization: Bearer …`, or 401."""
    token = api_key_from(request.headers)
    if not token or token.startswith(PREFIX):
        raise errors.invalid_api_key("This endpoint needs the token from POST /auth/login.")
    try:
        claims = jwt.decode(token, request.app[SECRET], algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise errors.invalid_api_key("The login token has expired; log in again.") from None
    except jwt.InvalidTokenError:
        raise errors.invalid_api_key("Invalid login token.") from None
    subject = claims["sub"]
    user = (
        request.app[STATE].accounts.users.get(int(subject))
        if isinstance(subject, str) and subject.isascii() and subject.isdigit()
        else None
    )
    if user is None:
        raise errors.invalid_api_key("Invalid login token.")
    if not user.active:
        raise errors.invalid_api_key("The account is disabled.")
    ACTOR.set(user.email)  # this request's account changes are this user's (the audit log)
    if claims.get("ver", 0) != user.token_version:
        raise errors.invalid_api_key("This login token has ended (logged out or password changed); log in again.")
    return user.id


def caller_user(request: web.Request) -> int:
    """Billing reads accept an API key or a login token."""
    token = api_key_from(request.headers)
    if token and token.startswith(PREFIX):
        _, user = authorize(request)
        ACTOR.set(user.email)
        return user.id
    return token_user(request)


@contextlib.contextmanager
def account_errors() -> Iterator[None]:
    """A refused account change, as the HTTP error it is."""
    try:
        yield
    except NotFoundError as exc:
        raise errors.GatewayError(404, "not_found", str(exc)) from None
    except ConflictError as exc:
        raise errors.GatewayError(409, "conflict", str(exc)) from None
    except AccountError as exc:
        raise errors.invalid_request(str(exc)) from None


def limit_logins(request: web.Request, email: str | None) -> None:
    """Guessing passwords is slowed per address, per email from one address, and per email overall;
    the last is high enough that failing logins from one address cannot lock the owner out.
    Registering (no email to guess for) counts per address only."""
    limiter = request.app[LOGINS]
    if len(limiter) > LOGIN_WINDOWS:
        limiter.prune()
    address = request.app[STATE].caller_address(request)
    email = email.lower() if email is not None else None
    buckets = [(f"address:{address}", LOGIN_PER_ADDRESS)]
    if email is not None:
        buckets.append((f"email:{email} from:{address}", LOGIN_PER_EMAIL_AND_ADDRESS))
        buckets.append((f"email:{email}", LOGIN_PER_EMAIL))
    for bucket, limits in buckets:
        try:
            limiter.admit(bucket, limits, 0)
        except errors.GatewayError as refused:
            wait = int(refused.headers["retry-after-ms"]) / 1000
            raise errors.rate_limited(f"Too many login attempts; try again in {math.ceil(wait)} s.", wait) from None


async def register(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.config.server.allow_registration:
        raise errors.GatewayError(403, "registration_closed", "Registration is closed on this server.")
    email, password = await credentials(request)
    ACTOR.set(email)  # registering oneself
    limit_logins(request, None)
    if not EMAIL_RE.match(email):
        raise errors.invalid_request(f"{email!r} is not an email address.", param="email")
    check_new_password(password)
    hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, password)
    grant = parse_usd(state.config.billing.signup_grant)
    with account_errors():
        user, key = await state.store.write(accounts.register_user, email, hashed, grant)
    message = f"Registration successful! ${format_usd(grant)} granted." if grant else "Registration successful!"
    return respond(
        {
            "token": issue_token(request, state.accounts.users[user.id]),
            "api_key": key,
            "balance": usd(user.balance),
            "message": message,
        },
        status=201,
    )


async def password_user(request: web.Request, email: str, password: str) -> UserState | None:
    """The active user with this email and password, or None (the hash is checked even for an unknown
    email, off the event loop, so a wrong email takes as long as a wrong password)."""
    state = request.app[STATE]
    found = await state.store.read(accounts.password_hash_of, email)
    stored = found[1] if found else None
    ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, password, stored)
    user = state.accounts.users.get(found[0]) if found and ok else None
    return user if user is not None and user.active else None


async def login(request: web.Request) -> web.Response:
    email, password = await credentials(request)
    limit_logins(request, email)
    user = await password_user(request, email, password)
    if user is None:
        raise errors.invalid_api_key("Wrong email or password.")
    return respond({"token": issue_token(request, user), "balance": usd(user.balance)})


async def logout(request: web.Request) -> web.Response:
    """End every login token of this account (on every device: tokens are not stored one by one)."""
    user_id = token_user(request)
    with account_errors():
        await request.app[STATE].store.write(accounts.end_login_tokens, user_id)
    return respond({"message": "Logged out: every login token of this account has ended."})


async def change_password(request: web.Request) -> web.Response:
    """`{password, new_password}`: every earlier login token ends; the answer carries a new one."""
    state = request.app[STATE]
    user = state.accounts.users[token_user(request)]
    password, new_password = await json_fields(request, "password", "new_password")
    check_new_password(new_password, "new_password")
    loop = asyncio.get_running_loop()
    found = await state.store.read(accounts.password_hash_of, user.email)
    if not await loop.run_in_executor(None, verify_password, password, found[1] if found else None):
        raise errors.invalid_api_key("The current password is wrong.")
    hashed = await loop.run_in_executor(None, hash_password, new_password)
    with account_errors():
        await state.store.write(accounts.set_password, user.email, hashed)
    return respond({"token": issue_token(request, user), "message": "Password changed; other sessions have ended."})


def key_object(key: KeyRow) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "key": key.masked,
        "status": key.status,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
    }


async def list_keys(request: web.Request) -> web.Response:
    user_id = token_user(request)
    keys = await request.app[STATE].store.read(accounts.list_keys_of, user_id)
    return respond({"object": "list", "data": [key_object(k) for k in keys]})


async def create_key(request: web.Request) -> web.Response:
    user_id = token_user(request)
    state = request.app[STATE]
    name = request.query.get("name", "default")
    email = state.accounts.users[user_id].email
    with account_errors():
        key, full = await state.store.write(accounts.create_key, email, name)
    return respond({**key_object(key), "key": full}, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    user_id = token_user(request)
    key_id = request.match_info["key_id"]
    with account_errors():
        key = await request.app[STATE].store.write(accounts.revoke_key_of, user_id, key_id)
    return respond(key_object(key))


async def balance(request: web.Request) -> web.Response:
    user = request.app[STATE].accounts.users[caller_user(request)]
    return respond({"balance": usd(user.available + user.reserved), "email": user.email})


async def usage(request: web.Request) -> web.Response:
    user_id = caller_user(request)
    try:
        limit = min(max(int(request.query.get("limit", "10")), 1), 1000)
    except ValueError:
        raise errors.invalid_request("'limit' must be an integer.", param="limit") from None
    rows = await request.app[STATE].store.read(usage_rows.recent_usage, user_id, limit)
    for row in rows:
        row["cost"] = usd(row["cost"])
        row["estimated"] = bool(row["estimated"])
    return respond({"object": "list", "data": rows})


async def subscription(request: web.Request) -> web.Response:
    """Legacy OpenAI shape: chat apps show `hard_limit_usd` as the balance."""
    user = request.app[STATE].accounts.users[caller_user(request)]
    remaining = usd(max(user.available + user.reserved, 0))
    return respond(
        {
            "object": "billing_subscription",
            "has_payment_method": True,
            "hard_limit_usd": remaining,
            "soft_limit_usd": remaining,
            "system_hard_limit_usd": remaining,
            "access_until": 0,
        }
    )


async def dashboard_usage(request: web.Request) -> web.Response:
    """Legacy OpenAI shape: `total_usage` in US cents since `start_date` (default: this month)."""
    user_id = caller_user(request)
    start = request.query.get("start_date") or datetime.now(UTC).strftime("%Y-%m-01")
    spent = await request.app[STATE].store.read(usage_rows.total_cost_since, user_id, start[:10])
    return respond({"object": "list", "total_usage": orjson.Fragment(format_usd(spent * 100, min_places=1).encode())})
