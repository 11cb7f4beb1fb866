"""The pages every user has: log in and out, the overview, keys, and the usage log with its CSV export.
The admin sees the same pages for everyone (`session.user_id is None`)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import re
import urllib.parse
from datetime import UTC, date, datetime, timedelta

from aiohttp import web

from hubproxy import errors
from hubproxy.accounts.rules import KeyPolicy, PolicyError, collect_rules, model_allowed, parse_models
from hubproxy.alerts import text_of
from hubproxy.dashboard import charts, sso
from hubproxy.dashboard.sessions import (
    COOKIE,
    Session,
    end_admin_sessions,
    login_form_checked,
    login_form_csrf,
    session_of,
    set_login_cookie,
    start_session,
    use_login_link,
)
from hubproxy.dashboard.views import PageError, form, page, render, usd, user_named
from hubproxy.money import MoneyError, format_usd
from hubproxy.server.accounts import account_errors, limit_logins, password_user
from hubproxy.server.state import STATE
from hubproxy.spreadsheet import safe_row
from hubproxy.store.records import POLICY_COLUMNS, USAGE_COLUMNS, KeyRow, UsageFilter
from hubproxy.store.sql import accounts, dashboard
from hubproxy.store.sql.alerts import recent_for

PAGE_ROWS = 50
CSV_CHUNK = 5_000
CSV_MAX_ROWS = 1_000_000
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CURSOR_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T[\d:.]{2,24}Z?)~(\d{1,18})$")
CSV_COLUMNS = [column for column in USAGE_COLUMNS if column != "id"]  # cost in USD, the rest as stored
RULE_FIELDS = ("models", "allow_ips", "spend_limit", "budget_period", "expires", "rpm", "tpm", "max_parallel")


# --- logging in ------------------------------------------------------------------------------------------
async def login_form(request: web.Request) -> web.Response:
    if session_of(request) is not None:
        raise web.HTTPSeeOther("/")
    return login_page(request, next=_next(request.query.get("next")))


def login_page(request: web.Request, status: int = 200, **context) -> web.Response:
    """The login form, with its CSRF token and the cookie that token is tied to."""
    nonce, csrf = login_form_csrf(request)
    settings = request.app[STATE].config.dashboard
    response = render(
        request,
        None,
        "login.html",
        status=status,
        csrf=csrf,
        sso=bool(settings.oidc_discovery),
        passwords=settings.password_login,
        **context,
    )
    set_login_cookie(request, response, nonce)
    return response


async def login(request: web.Request) -> web.Response:
    """Email and password (the account API's): rate-limited per address and per email."""
    try:
        fields = await form(request)
    except PageError as refused:
        return login_page(request, status=refused.status, error=refused.message, next="/")
    target = _next(fields.get("next"))
    if not login_form_checked(request, fields.get("csrf", "")):
        error = "This login form has expired or came from another site: log in again."
        return login_page(request, status=403, error=error, next=target)
    if not request.app[STATE].config.dashboard.password_login:
        return login_page(request, status=403, error="Password login is off here: use single sign-on.", next=target)
    email, password = fields.get("email", "").strip(), fields.get("password", "")
    try:
        limit_logins(request, email or None)
    except errors.GatewayError as refused:
        return login_page(request, status=429, error=refused.message, next=target, email=email)
    user = await password_user(request, email, password) if email else None
    if user is None:
        return login_page(request, status=401, error="Wrong email or password.", next=target, email=email)
    response = web.HTTPSeeOther(target)
    start_session(request, response, user.id)
    raise response


async def login_oidc(request: web.Request) -> web.StreamResponse:
    """Single sign-on: off to the provider (dashboard/sso.py)."""
    if not request.app[STATE].config.dashboard.oidc_discovery:
        raise web.HTTPNotFound()
    try:
        return await sso.begin(request, _next(request.query.get("next")))
    except sso.SignOnError as exc:
        return login_page(request, status=502, error=f"Single sign-on failed: {exc}.", next="/")


async def login_oidc_callback(request: web.Request) -> web.StreamResponse:
    """Back from the provider: signed in as the verified email's user, or told why not."""
    try:
        return await sso.finish(request)
    except sso.SignOnError as exc:
        return login_page(request, status=403, error=f"Single sign-on failed: {exc}.", next="/")


async def login_link(request: web.Request) -> web.Response:
    """The admin's one-time link from `hubproxy dashboard`."""
    if not use_login_link(request, request.query.get("token", "")):
        error = "This login link is invalid, expired or already used: run `hubproxy dashboard` for a new one."
        return login_page(request, status=403, error=error, next="/")
    response = web.HTTPSeeOther("/")
    start_session(request, response, None)
    raise response


@page()
async def logout(request: web.Request, session: Session) -> web.Response:
    """A logout ends every session of the one logging out (and a user's account API tokens)."""
    if session.admin:
        await asyncio.get_running_loop().run_in_executor(None, end_admin_sessions, request)
    else:
        await request.app[STATE].store.write(accounts.end_login_tokens, session.member)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def _next(target: str | None) -> str:
    """Only a path on this site: no open redirect. Browsers drop tabs and line breaks from a URL and
    read a backslash as a slash (`/\t/evil.example` is `//evil.example` to them), so a target with
    any of those, or one that parses with a scheme or a host, is refused whole."""
    if not target or not target.startswith("/") or "\\" in target:
        return "/"
    if any(c <= " " or c == "\x7f" for c in target):
        return "/"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return "/"
    return target


# --- overview ----------------------------------------------------------------------------------------------
@page()
async def overview(request: web.Request, session: Session) -> web.Response:
    state = request.app[STATE]
    now = datetime.now(UTC)
    data = await state.store.read(dashboard.overview, session.user_id, now)
    spend_svg, legend = charts.spend_by_day(data["days"], now.date())
    calls_svg = charts.calls_by_hour(data["hours"], now)
    if session.admin:
        users = state.accounts.users.values()
        balance = sum(u.available + u.reserved for u in users)
        people = len(state.accounts.users)
        warnings: list[str] = []
    else:
        user = state.accounts.users[session.member]
        balance, people = user.available + user.reserved, 1
        week_ago = (now - timedelta(days=7)).strftime("%Y-%m-%d")
        warnings = [
            text_of({**a, "email": user.email}) for a in await state.store.read(recent_for, user.email, week_ago)
        ]
    error_rate = data["errors_24h"] / data["calls_24h"] if data["calls_24h"] else None
    return render(
        request,
        session,
        "overview.html",
        data=data,
        balance=balance,
        people=people,
        error_rate=error_rate,
        spend_svg=spend_svg,
        calls_svg=calls_svg,
        legend=legend,
        in_flight=len(state.calls.meters) if session.admin else None,
        warnings=warnings,
    )


# --- keys ----------------------------------------------------------------------------------------------------
async def _keys(request: web.Request, session: Session) -> list[KeyRow]:
    """The session's keys (the admin: everyone's), active first, oldest first."""
    store = request.app[STATE].store
    if session.admin:
        keys = await store.read(accounts.list_keys)
    else:
        keys = await store.read(accounts.list_keys_of, session.member)
    keys.sort(key=lambda k: (k.status != "active", k.created_at))
    return keys


async def _key_rows(request: web.Request, session: Session) -> list[tuple[KeyRow, tuple[int, int]]]:
    spend = await request.app[STATE].store.read(dashboard.key_spend, session.user_id)
    return [(key, spend.get(key.id, (0, 0))) for key in await _keys(request, session)]


def _rules_text(key: KeyRow) -> list[str]:
    rules = key.rules()
    shown = []
    if "models" in rules:
        shown.append(f"models: {rules['models']}")
    if "allow_ips" in rules:
        shown.append("IPs: " + ", ".join(json.loads(rules["allow_ips"])))
    if "spend_limit" in rules:
        shown.append(
            f"cap {usd(rules['spend_limit'], 2)}" + (f"/{rules['budget_period']}" if "budget_period" in rules else "")
        )
    if "expires_at" in rules:
        shown.append(f"expires {rules['expires_at'][:16].replace('T', ' ')}")
    for name in ("rpm", "tpm", "max_parallel"):
        if name in rules:
            shown.append(f"{name.replace('_', ' ')} {rules[name]:,}")
    return shown


async def _keys_page(request: web.Request, session: Session, status: int = 200, **extra) -> web.Response:
    rows = await _key_rows(request, session)
    state = request.app[STATE]
    return render(
        request,
        session,
        "keys.html",
        status=status,
        rows=[(key, spent, _rules_text(key)) for key, spent in rows],
        users=sorted(u.email for u in state.accounts.users.values()) if session.admin else [],
        models=sorted(state.config.models),
        **extra,
    )


@page()
async def keys(request: web.Request, session: Session) -> web.Response:
    return await _keys_page(request, session, message=_done(request))


def _rules_from(fields) -> dict:
    """The key form's fields → validated rules (blank fields are not rules)."""
    value = {name: fields.get(name, "").strip() or None for name in RULE_FIELDS}
    numbers = {}
    for name in ("rpm", "tpm", "max_parallel"):
        text = value[name]
        if text is not None:
            if not (text.isascii() and text.isdigit()):
                raise PageError(400, f"{name.replace('_', ' ')} must be a whole number.")
            numbers[name] = int(text)
    ips = [part for part in re.split(r"[,\s]+", value["allow_ips"] or "") if part]
    try:
        return collect_rules(
            value["models"],
            ips,
            value["spend_limit"],
            value["budget_period"],
            value["expires"],
            numbers.get("rpm"),
            numbers.get("tpm"),
            numbers.get("max_parallel"),
        )
    except (PolicyError, MoneyError) as exc:
        raise PageError(400, str(exc).replace("--", "")) from None


@page()
async def create_key(request: web.Request, session: Session) -> web.Response:
    """The new key is shown on this page only, with the `hubproxy connect` line for each tool and each
    tool's setup as `connect` prints it (for a machine without hubproxy)."""
    from hubproxy.cli.connect import TOOLS, Setup, setup_text  # the CLI's knowledge of tools: only on this page

    state = request.app[STATE]
    fields = await form(request)
    name = fields.get("name", "").strip() or "default"
    try:
        rules = _rules_from(fields)
    except PageError as refused:
        return await _keys_page(request, session, status=refused.status, error=refused.message)
    email = fields.get("user", "").strip() if session.admin else state.accounts.users[session.member].email
    if not email:
        return await _keys_page(request, session, status=400, error="Choose whose key it is.")
    try:
        with account_errors():
            key, full = await state.store.write(accounts.create_key, email, name, rules)
    except errors.GatewayError as refused:
        return await _keys_page(request, session, status=refused.status, error=refused.message)
    base = f"{request.scheme}://{request.host}"
    policy = KeyPolicy(models=parse_models(rules.get("models")))
    usable = sorted(m.name for m in state.config.models.values() if m.priced and model_allowed(policy, m))
    model = usable[0] if usable else "MODEL"
    connect = [f"hubproxy connect {tool} --key - --base-url {base} --model {model}" for tool in TOOLS]
    snippets = [(tool, setup_text(tool, Setup(base, full, model))) for tool in TOOLS]
    return render(
        request, session, "key_created.html", key=key, full=full, base=base, connect=connect, snippets=snippets
    )


async def _change_key(request: web.Request, session: Session, change) -> web.Response:
    key_id = request.match_info["key_id"]
    try:
        with account_errors():
            key = await change(session.user_id if not session.admin else None, key_id)
    except errors.GatewayError as refused:
        return await _keys_page(request, session, status=refused.status, error=refused.message)
    raise web.HTTPSeeOther(f"/keys?done={key.id}")


@page()
async def update_key(request: web.Request, session: Session) -> web.Response:
    fields = await form(request)
    try:
        rules = _rules_from(fields)
    except PageError as refused:
        return await _keys_page(request, session, status=refused.status, error=refused.message)
    for name in fields.getall("clear", []):
        column = "expires_at" if name == "expires" else name
        if column in POLICY_COLUMNS:
            rules[column] = None
    if not rules:
        error = "Nothing to change: fill in a rule or tick one to clear."
        return await _keys_page(request, session, status=400, error=error)
    store = request.app[STATE].store
    return await _change_key(
        request, session, lambda owner, key_id: store.write(accounts.update_key_of, owner, key_id, rules)
    )


@page()
async def revoke_key(request: web.Request, session: Session) -> web.Response:
    store = request.app[STATE].store
    return await _change_key(request, session, lambda owner, key_id: store.write(accounts.revoke_key_of, owner, key_id))


def _done(request: web.Request) -> str | None:
    done = request.query.get("done")
    return f"Saved: key {done}." if done and re.match(r"^[\w-]{1,64}$", done) else None


# --- usage log -------------------------------------------------------------------------------------------
def usage_filter(request: web.Request, session: Session) -> UsageFilter:
    """The log's filters from the query string; a bad value is a 400 page naming it."""
    query = request.query
    user_id = session.user_id
    if session.admin and query.get("user"):
        user_id = user_named(request, query["user"])
    dates = {}
    for name in ("since", "until"):
        value = query.get(name, "").strip()
        if value:
            if not DAY_RE.match(value):
                raise PageError(400, f"'{name}' must be a date like 2026-12-01.")
            try:
                date.fromisoformat(value)
            except ValueError:
                raise PageError(400, f"'{name}' must be a date like 2026-12-01.") from None
        dates[name] = value or None
    before = None
    if query.get("before"):
        match = CURSOR_RE.match(query["before"])
        if not match:
            raise PageError(400, "The page link is malformed: start again from the first page.")
        before = (match.group(1), int(match.group(2)))
    status = query.get("status", "").strip() or None
    if status is not None and not re.match(r"^[a-z_]{1,32}$", status):
        raise PageError(400, "'status' is one of ok, error, or a status name.")
    return UsageFilter(
        user_id=user_id,  # a user's own, always: another user's key id then matches nothing
        key_id=query.get("key", "").strip() or None,
        model=query.get("model", "").strip() or None,
        status=status,
        since=dates["since"],
        until=dates["until"],
        before=before,
    )


@page()
async def usage(request: web.Request, session: Session) -> web.Response:
    where = usage_filter(request, session)
    store = request.app[STATE].store
    found = await store.read(dashboard.usage_page, where, PAGE_ROWS + 1)
    rows = found.rows[:PAGE_ROWS]
    query = {k: v for k, v in request.query.items() if k != "before" and v}
    stopped = None
    if len(found.rows) > PAGE_ROWS:
        next_query = {**query, "before": f"{rows[-1]['created_at']}~{rows[-1]['id']}"}
    elif found.searched_to is not None:  # the filter's search stopped here: older calls may match
        stopped = found.searched_to.replace("T", " ") + ":00"
        next_query = {**query, "before": f"{found.searched_to}~0"}
    else:
        next_query = None
    keys = await _keys(request, session)
    return render(
        request,
        session,
        "usage.html",
        rows=rows,
        query=query,
        next_query=next_query,
        stopped=stopped,
        first_page=where.before is None,
        models=await store.read(dashboard.usage_models, session.user_id),
        keys=keys,
        key_names={k.id: k.name for k in keys},
        users=sorted(u.email for u in request.app[STATE].accounts.users.values()) if session.admin else [],
    )


@page()
async def usage_csv(request: web.Request, session: Session) -> web.StreamResponse:
    """Every call the filters match, streamed in chunks (at most CSV_MAX_ROWS): no content, only metadata."""
    where = usage_filter(request, session)
    store = request.app[STATE].store
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="hubproxy-usage-{date.today().isoformat()}.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["cost_usd" if column == "cost" else column for column in CSV_COLUMNS])
    written = 0
    while written < CSV_MAX_ROWS:
        found = await store.read(dashboard.usage_page, where, CSV_CHUNK)
        for row in found.rows:
            row["cost"] = format_usd(row["cost"], min_places=2)
            row["stream"], row["estimated"] = int(row["stream"]), int(row["estimated"])
            writer.writerow(safe_row(row[column] for column in CSV_COLUMNS))
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        written += len(found.rows)
        if len(found.rows) == CSV_CHUNK:
            where = dataclasses.replace(where, before=(found.rows[-1]["created_at"], found.rows[-1]["id"]))
        elif found.searched_to is not None:  # a filtered search went back as far as it may at once: go on
            where = dataclasses.replace(where, before=(found.searched_to, 0))
        else:
            break
    await response.write_eof()
    return response
