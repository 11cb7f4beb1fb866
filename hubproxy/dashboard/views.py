"""What every page shares: the session check, CSRF on forms, error pages, and the template filters."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from hubproxy import errors
from hubproxy.audit import ACTOR
from hubproxy.dashboard.sessions import Session, session_of
from hubproxy.money import format_usd
from hubproxy.server.errors import allowed_methods, unknown_route
from hubproxy.server.request_body import read_request
from hubproxy.server.state import STATE

log = logging.getLogger("hubproxy.dashboard")
Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PageError(Exception):
    """A refusal shown as a page: what went wrong, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def page(*, admin: bool = False) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A dashboard route: a session is required (pages send the browser to /login, forms get 403),
    admin pages refuse users with 403, every POST must carry the session's CSRF token."""

    def wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            session = session_of(request)
            try:
                if session is None:
                    if request.method == "GET":
                        target = "/login?next=" + quote(request.path_qs, safe="/") if request.path != "/" else "/login"
                        raise web.HTTPSeeOther(target)
                    raise PageError(403, "Your session has ended; log in again.")
                if admin and not session.admin:
                    raise PageError(403, "This page is for the admin.")
                member = None if session.admin else request.app[STATE].accounts.users.get(session.member)
                ACTOR.set("admin link" if member is None else member.email)  # the audit log's actor
                if request.method == "POST":
                    await check_csrf(request, session)
                response = await handler(request, session)
            except PageError as refused:
                response = error_page(request, session, refused.status, refused.message)
            except errors.GatewayError as refused:
                response = error_page(request, session, refused.status, refused.message)
            if not response.prepared:
                response.headers.update(SECURITY_HEADERS)
            return response

        return run

    return wrap


async def form(request: web.Request) -> MultiDictProxy[str]:
    """The posted form (urlencoded), within the server's body limit."""
    cached = request.get("dashboard_form")
    if cached is not None:
        return cached
    body = await read_request(request, request.app[STATE].config.server)
    if request.content_type != "application/x-www-form-urlencoded":
        raise PageError(400, "Forms are posted as application/x-www-form-urlencoded.")
    try:
        fields = MultiDictProxy(MultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "The form could not be read.") from None
    request["dashboard_form"] = fields
    return fields


async def check_csrf(request: web.Request, session: Session) -> None:
    token = (await form(request)).get("csrf", "")
    if not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise PageError(403, "This form is stale or came from another site (CSRF check failed): reload the page.")


def user_named(request: web.Request, email: str) -> int:
    """The id of the user with this email (the admin's user filters), or a 400 page."""
    email = email.strip()
    for user in request.app[STATE].accounts.users.values():
        if user.email == email:
            return user.id
    raise PageError(400, f"No user {email!r}.")


def render(request: web.Request, session: Session | None, template: str, status: int = 200, **context) -> web.Response:
    state = request.app[STATE]
    user = state.accounts.users.get(session.user_id) if session and session.user_id is not None else None
    context.update(
        session=session,
        me=user,
        path=request.path,
        message=context.get("message"),
        error=context.get("error"),
    )
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def error_page(request: web.Request, session: Session | None, status: int, message: str) -> web.Response:
    return render(request, session, "error.html", status=status, status_code=status, error=message)


async def page_not_found(request: web.Request) -> web.StreamResponse:
    """An unknown page asked for by a browser gets a page; any other client (or a path that exists
    under another method) the API's JSON answer."""
    if "text/html" not in request.headers.get("Accept", "") or await allowed_methods(request):
        return await unknown_route(request)
    response = error_page(request, session_of(request), 404, f"There is no page at {request.path}.")
    response.headers.update(SECURITY_HEADERS)
    return response


def usd(pico: int | None, places: int = 4) -> str:
    """For display only: USD rounded half up to `places` decimals, or to the two significant digits an
    amount too small for them needs ($0.000012, never $0.0000 for a cheap model's spend). Money itself
    stays exact in pico-USD."""
    if pico is None:
        return "—"
    size = abs(pico)
    while 0 < size < 10 ** (12 - places) and places < 12:
        places += 1  # until the amount shows its first digit
    if size > 0 and places > 2 and size < 10 ** (13 - places):
        places = min(places + 1, 12)  # and a second
    unit = 10 ** (12 - places)
    text = format_usd((size + unit // 2) // unit * unit, min_places=places)
    return ("-$" if pico < 0 else "$") + text


def when(stamp: str | float | None) -> str:
    if stamp is None or stamp == "":
        return "—"
    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return stamp.replace("T", " ").removesuffix("Z")[:19]


def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def duration(ms: int | float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


FILTERS = {"usd": usd, "when": when, "count": count, "duration": duration}
