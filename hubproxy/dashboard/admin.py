"""The admin's pages: users (top-ups, adjustments, disable), the ledger, providers and models with prices
and live health, and the live feed of calls as they finish (server-sent events, metadata only)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from aiohttp import web

from hubproxy import errors
from hubproxy.billing.history import change_text
from hubproxy.dashboard.sessions import Session
from hubproxy.dashboard.views import PageError, form, page, render, user_named
from hubproxy.money import MoneyError, format_usd, parse_usd
from hubproxy.passwords import hash_password
from hubproxy.server.accounts import account_errors, check_new_password
from hubproxy.server.state import STATE
from hubproxy.store.sql import accounts, audit, dashboard
from hubproxy.store.sql.prices import price_history

LEDGER_ROWS = 50
FEED_BATCH_SECONDS = 0.25
FEED_BATCH_MAX = 50
FEED_HEARTBEAT_SECONDS = 15.0
NOTE_MAX = 200


@page(admin=True)
async def users(request: web.Request, session: Session) -> web.Response:
    return await _users_page(request, session)


async def _users_page(request: web.Request, session: Session, status: int = 200, **extra) -> web.Response:
    state = request.app[STATE]
    people = sorted(state.accounts.users.values(), key=lambda u: u.email)
    done = request.query.get("done")
    message = extra.pop("message", None) or (f"Saved: {done}." if done and len(done) < 300 else None)
    plans = sorted(state.config.plans)
    return render(
        request, session, "admin_users.html", status=status, people=people, plans=plans, message=message, **extra
    )


def _user(request: web.Request):
    raw = request.match_info["user_id"]
    user = request.app[STATE].accounts.users.get(int(raw)) if raw.isdigit() else None
    if user is None:
        raise PageError(404, f"No user {raw!r}.")
    return user


async def _refused(request: web.Request, session: Session, status: int, message: str) -> web.Response:
    return await _users_page(request, session, status=status, error=message)


@page(admin=True)
async def change_balance(request: web.Request, session: Session) -> web.Response:
    """A top-up (positive) or an adjustment (either sign), with its note in the ledger."""
    user = _user(request)
    fields = await form(request)
    kind = fields.get("kind", "topup")
    if kind not in ("topup", "adjustment"):
        return await _refused(request, session, 400, "The kind is topup or adjustment.")
    note = fields.get("note", "").strip() or None
    if note is not None and len(note) > NOTE_MAX:
        return await _refused(request, session, 400, f"The note is at most {NOTE_MAX} characters.")
    try:
        amount = parse_usd(fields.get("amount", "").strip(), what="amount", allow_negative=kind == "adjustment")
    except MoneyError as exc:
        return await _refused(request, session, 400, str(exc))
    if amount == 0:
        return await _refused(request, session, 400, "The amount must not be zero.")
    try:
        with account_errors():
            changed = await request.app[STATE].store.write(accounts.topup, user.email, amount, kind, note)
    except errors.GatewayError as refused:
        return await _refused(request, session, refused.status, refused.message)
    raise web.HTTPSeeOther(f"/admin/users?done={changed.email}")


@page(admin=True)
async def add_user(request: web.Request, session: Session) -> web.Response:
    """A new user, with a starting balance (a grant in the ledger) and, if given, a password to log in."""
    fields = await form(request)
    email = fields.get("email", "").strip()
    try:
        balance = parse_usd(fields.get("balance", "").strip() or "0", what="balance")
    except MoneyError as exc:
        return await _refused(request, session, 400, str(exc))
    password = fields.get("password", "")
    if password:
        try:
            check_new_password(password)
        except errors.GatewayError as refused:
            return await _refused(request, session, 400, refused.message)
    try:
        with account_errors():
            user = await request.app[STATE].store.write(accounts.add_user, email, balance)
            if password:
                await request.app[STATE].store.write(accounts.set_password, user.email, await hashed(password))
    except errors.GatewayError as refused:
        return await _refused(request, session, refused.status, refused.message)
    raise web.HTTPSeeOther(f"/admin/users?done={user.email}")


@page(admin=True)
async def set_password(request: web.Request, session: Session) -> web.Response:
    """A new password for a user; their sessions and login tokens end."""
    user = _user(request)
    password = (await form(request)).get("password", "")
    try:
        check_new_password(password)
    except errors.GatewayError as refused:
        return await _refused(request, session, 400, refused.message)
    with account_errors():
        await request.app[STATE].store.write(accounts.set_password, user.email, await hashed(password))
    raise web.HTTPSeeOther(f"/admin/users?done={user.email}")


async def hashed(password: str) -> str:
    """The password's hash, made off the event loop (it is slow on purpose)."""
    return await asyncio.get_running_loop().run_in_executor(None, hash_password, password)


@page(admin=True)
async def change_status(request: web.Request, session: Session) -> web.Response:
    user = _user(request)
    status = (await form(request)).get("status", "")
    if status not in ("active", "disabled"):
        return await _refused(request, session, 400, "The status is active or disabled.")
    with account_errors():
        changed = await request.app[STATE].store.write(accounts.set_user_status, user.email, status)
    raise web.HTTPSeeOther(f"/admin/users?done={changed.email}")


@page(admin=True)
async def change_plan(request: web.Request, session: Session) -> web.Response:
    """A plan from config.toml, or none; its limits and price multiplier apply from the next call."""
    user = _user(request)
    plan = (await form(request)).get("plan", "")
    plans = request.app[STATE].config.plans
    if plan and plan not in plans:
        return await _refused(request, session, 400, f"No plan {plan!r} in config.toml.")
    with account_errors():
        changed = await request.app[STATE].store.write(accounts.set_user_plan, user.email, plan or None)
    raise web.HTTPSeeOther(f"/admin/users?done={changed.email}")


AUDIT_ROWS = 200
AUDIT_FILTERS = ("since", "actor", "target")


@page(admin=True)
async def audit_log(request: web.Request, session: Session) -> web.Response:
    """Who changed what, newest first, filtered by time, actor and target, and whether the chain holds."""
    query = {name: request.query.get(name, "").strip()[:200] for name in AUDIT_FILTERS}
    store = request.app[STATE].store
    rows = await store.read(
        audit.entries, query["since"] or None, query["actor"] or None, query["target"] or None, AUDIT_ROWS
    )
    checked, broken = await store.read(audit.verify)
    return render(request, session, "admin_audit.html", rows=rows, query=query, checked=checked, broken=broken)


@page(admin=True)
async def ledger(request: web.Request, session: Session) -> web.Response:
    state = request.app[STATE]
    query = request.query
    user_id = user_named(request, query["user"]) if query.get("user") else None
    before = query.get("before", "")
    if before and not (before.isascii() and before.isdigit() and len(before) <= 18):
        raise PageError(400, "The page link is malformed: start again from the first page.")
    charges = query.get("charges") == "1"
    rows = await state.store.read(
        dashboard.ledger_page, user_id, int(before) if before else None, LEDGER_ROWS + 1, charges
    )
    more = len(rows) > LEDGER_ROWS
    rows = rows[:LEDGER_ROWS]
    kept = {k: v for k, v in query.items() if k != "before" and v}
    return render(
        request,
        session,
        "admin_ledger.html",
        rows=rows,
        query=kept,
        next_query={**kept, "before": str(rows[-1]["id"])} if more else None,
        users=sorted(u.email for u in state.accounts.users.values()),
    )


@page(admin=True)
async def providers(request: web.Request, session: Session) -> web.Response:
    """Providers (never their keys), models with prices per 1M tokens, each deployment's health, and
    the latest price changes (who, when, from where, before and after)."""
    state = request.app[STATE]
    config = state.config
    health = state.health.snapshot()
    models = []
    for model in sorted(config.models.values(), key=lambda m: m.name):
        deployments = []
        for route in state.router.resolve(model.name):
            info = health.get(route.key, {})
            deployments.append({"route": route, "health": info})
        models.append(
            {
                "model": model,
                "input": _price(model.input_price),
                "output": _price(model.output_price),
                "cached": _price(model.cached_input_price),
                "deployments": deployments,
            }
        )
    changes = await state.store.read(price_history, None, 50)
    for change in changes:
        change["summary"] = change_text(change["old"], change["new"])
    return render(
        request,
        session,
        "admin_providers.html",
        providers=sorted(config.providers.values(), key=lambda p: p.name),
        models=models,
        health=health,
        changes=changes,
    )


def _price(micro_per_m: int | None) -> str:
    return "—" if micro_per_m is None else "$" + format_usd(micro_per_m * 10**6, min_places=2)


@page(admin=True)
async def live(request: web.Request, session: Session) -> web.Response:
    return render(request, session, "admin_live.html")


@page(admin=True)
async def live_events(request: web.Request, session: Session) -> web.StreamResponse:
    """Server-sent events: every quarter second, one `calls` event with the newest FEED_BATCH_MAX calls
    settled since the last one and how many older ones it skipped (a page shows the newest few; at
    thousands of calls a second, sending each would cost the browser more than it shows), and a
    comment line as heartbeat."""
    feed = request.app[STATE].calls.feed
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    queue = feed.subscribe()
    try:
        await response.write(b": connected\n\n")
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), FEED_HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            if event is None:
                break
            await asyncio.sleep(FEED_BATCH_SECONDS)
            batch = [event]
            while not queue.empty():
                batch.append(queue.get_nowait())
            stop = None in batch
            calls = [e for e in batch if e is not None]
            shown = calls[-FEED_BATCH_MAX:]
            skipped = len(calls) - len(shown) + feed.take_dropped(queue)
            payload = {"calls": [_public(e) for e in shown], "skipped": skipped}
            await response.write(b"event: calls\ndata: " + orjson.dumps(payload) + b"\n\n")
            if stop:
                break
    except ConnectionResetError:
        pass
    finally:
        feed.unsubscribe(queue)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _public(event: dict) -> dict:
    """The event as the page shows it: cost as exact USD text, time as an ISO instant."""
    return {
        **event,
        "cost": format_usd(event["cost"], min_places=2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["time"])),
    }


async def end_live_feeds(app: web.Application) -> None:
    app[STATE].calls.feed.close()
