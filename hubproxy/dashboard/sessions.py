"""Who is browsing: the session cookie, its CSRF token, and the admin's one-time login link.

A session is a signed cookie (HS256 with the account API's secret), not a server-side row, so any
worker or instance can read it. A user's session carries their token version: logging out, a new
password or a disabled account ends it everywhere, as it ends the account API's tokens. The admin
is whoever can read the admin token beside the database: `hubproxy dashboard` signs a link with it
that logs in once, within LINK_SECONDS. The admin's sessions carry a generation kept in a small file
in the home (`Paths.admin_sessions`) with the links already used, so that every worker of
`serve --workers` sees a logout and a used link.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from aiohttp import web

from hubproxy.accounts.rules import KeyPolicy, ip_allowed
from hubproxy.filemodes import write_private
from hubproxy.server.accounts import SECRET
from hubproxy.server.state import STATE

COOKIE = "hubproxy_session"
LOGIN_COOKIE = "hubproxy_login"  # the login form's own CSRF pair, before any session exists
SESSION_SECONDS = 12 * 3600
LINK_SECONDS = 600


@dataclass(frozen=True)
class Session:
    user_id: int | None  # None: the admin
    sid: str
    csrf: str
    expires: int

    @property
    def admin(self) -> bool:
        return self.user_id is None

    @property
    def member(self) -> int:
        """The signed-in user's id (a page that is not the admin's)."""
        if self.user_id is None:
            raise ValueError("the admin's session has no user")
        return self.user_id


def csrf_for(secret: str, sid: str) -> str:
    return hmac.new(secret.encode(), b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()[:32]


def login_form_csrf(request: web.Request) -> tuple[str, str]:
    """(nonce, token) for the login form: the token is tied to a random nonce kept in a cookie
    (`set_login_cookie`). A page on another site can neither read that cookie nor make the browser
    send it (SameSite=Strict), so it cannot post the form to log a visitor into an account of its
    choosing."""
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    return nonce, csrf_for(request.app[SECRET], "login:" + nonce)


def set_login_cookie(request: web.Request, response: web.StreamResponse, nonce: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=SESSION_SECONDS,
        path="/login",
        httponly=True,
        samesite="Strict",
        secure=over_tls(request),
    )


def login_form_checked(request: web.Request, token: str) -> bool:
    """Whether a posted login form carries the token `login_form_csrf` gave this browser."""
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce:
        return False
    return hmac.compare_digest(token.encode(), csrf_for(request.app[SECRET], "login:" + nonce).encode())


def session_of(request: web.Request) -> Session | None:
    """The request's valid session, or None (no cookie, forged, expired, or ended)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    secret = request.app[SECRET]
    try:
        claims = jwt.decode(cookie, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "sid"]})
    except jwt.InvalidTokenError:
        return None
    sid, subject = claims["sid"], claims["sub"]
    if not isinstance(sid, str) or not isinstance(subject, str):
        return None
    if subject == "admin":
        if claims.get("ver") != admin_state(request.app[STATE].paths.admin_sessions)[0]:
            return None
        return Session(None, sid, csrf_for(secret, sid), claims["exp"])
    if not (subject.isascii() and subject.isdigit()):
        return None
    user = request.app[STATE].accounts.users.get(int(subject))
    if user is None or not user.active or claims.get("ver") != user.token_version:
        return None
    return Session(user.id, sid, csrf_for(secret, sid), claims["exp"])


def start_session(request: web.Request, response: web.StreamResponse, user_id: int | None) -> None:
    """Set the session cookie: HttpOnly, SameSite=Strict, Secure when the page came over TLS."""
    now = int(time.time())
    claims: dict = {"sid": secrets.token_urlsafe(16), "iat": now, "exp": now + SESSION_SECONDS}
    if user_id is None:
        claims["sub"] = "admin"
        claims["ver"] = admin_state(request.app[STATE].paths.admin_sessions)[0]
    else:
        claims["sub"] = str(user_id)
        claims["ver"] = request.app[STATE].accounts.users[user_id].token_version
    response.set_cookie(
        COOKIE,
        jwt.encode(claims, request.app[SECRET], algorithm="HS256"),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=over_tls(request),
    )


def over_tls(request: web.Request) -> bool:
    """Served over TLS: by this server, or by a trusted proxy (`[server] trusted_proxies`) that says so
    in X-Forwarded-Proto (a tunnel or nginx ending TLS in front)."""
    if request.secure:
        return True
    trusted = request.app[STATE].trusted_proxies
    return (
        request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        and bool(trusted)
        and ip_allowed(KeyPolicy(networks=trusted), request.remote)
    )


def admin_state(path: Path) -> tuple[int, dict[str, int]]:
    """The admin sessions' generation and the used links (nonce → expiry) from the file; a missing or
    unreadable file is generation 0 with none used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["generation"]), {str(k): int(v) for k, v in data["used"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0, {}


def save_admin_state(path: Path, generation: int, used: dict[str, int]) -> None:
    now = time.time()
    used = {nonce: expires for nonce, expires in used.items() if expires >= now}
    write_private(path, json.dumps({"generation": generation, "used": used}))


def end_admin_sessions(request: web.Request) -> None:
    """The admin logs out: every admin session (any browser, any worker) ends."""
    path = request.app[STATE].paths.admin_sessions
    generation, used = admin_state(path)
    save_admin_state(path, generation + 1, used)


def login_link_token(admin_token: str, now: float | None = None) -> str:
    """`nonce.expiry.signature`, signed with the admin token: what `hubproxy dashboard` prints."""
    expires = int((time.time() if now is None else now) + LINK_SECONDS)
    payload = f"{secrets.token_urlsafe(12)}.{expires}"
    return f"{payload}.{_sign(admin_token, payload)}"


def use_login_link(request: web.Request, token: str) -> bool:
    """True once per link, before it expires, if the admin token signed it."""
    admin_token = request.app[STATE].admin_token
    parts = token.split(".")
    if len(parts) != 3 or not admin_token or not parts[1].isdigit():
        return False
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(admin_token, payload), parts[2]):
        return False
    if int(parts[1]) < time.time():
        return False
    path = request.app[STATE].paths.admin_sessions
    generation, used = admin_state(path)
    if parts[0] in used:
        return False
    save_admin_state(path, generation, {**used, parts[0]: int(parts[1])})
    return True


def _sign(admin_token: str, payload: str) -> str:
    return hmac.new(admin_token.encode(), b"dashboard-login:" + payload.encode(), hashlib.sha256).hexdigest()
