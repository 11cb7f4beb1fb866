"""The aiohttp application: factory, routes, and the life of its store, sessions and watchers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator

from aiohttp import web

from hubproxy import alerts as alerting
from hubproxy.accounts.cache import AccountCache
from hubproxy.billing.budget import IDLE_SECONDS, Budget, LeasedBudget, LocalBudget
from hubproxy.billing.history import record_edits
from hubproxy.billing.meter import PERSIST_AFTER, OpenCalls
from hubproxy.config import Config, ConfigError, Paths
from hubproxy.config.paths import REDIS_ENV
from hubproxy.feed import WorkerExchange
from hubproxy.filemodes import write_private
from hubproxy.protocols import anthropic_messages, openai_chat, openai_responses
from hubproxy.ratelimit import Limiter
from hubproxy.ratelimit.shared import SharedLimiter
from hubproxy.ratelimit.windows import LocalLimiter
from hubproxy.routing.failover import Failover
from hubproxy.routing.health import HealthBoard
from hubproxy.routing.router import Router
from hubproxy.secrets import SecretError, admin_token, load_stored_secrets
from hubproxy.server import catalog
from hubproxy.server.calls import count_tokens, make_handler
from hubproxy.server.cors import preflight
from hubproxy.server.errors import (
    CATCH_ALL,
    PREFLIGHT,
    PROCESS_PREFIX,
    REQUEST_COUNTER_DIGITS,
    anthropic_errors,
    openai_errors,
    request_prefix,
    unknown_route,
)
from hubproxy.server.gemini import add_gemini_routes
from hubproxy.server.http import CALL_ROUTES, CallRoutes
from hubproxy.server.responses_socket import responses_socket
from hubproxy.server.state import STATE, GatewayState
from hubproxy.store import Store, is_postgres, open_store
from hubproxy.store.journal import CallJournal, journaled_calls, leftover_segments
from hubproxy.store.sql import accounts, usage
from hubproxy.store.sql import alerts as alert_rows
from hubproxy.store.sql.accounts import utc_now
from hubproxy.upstream.pool import Upstreams

log = logging.getLogger("hubproxy.server")

CONFIG_POLL_SECONDS = 1.0
LAST_USED_FLUSH_SECONDS = 1.0
METRICS_SHARE_SECONDS = 1.0
CREDIT_CHECK_SECONDS = 600.0
ALERT_EVERY = 2.0  # seconds between two scans for crossed budget thresholds
ALERT_LEASE = 60.0  # seconds an alert being sent is kept from the other workers' senders
PRUNE_BATCH = 2000  # usage rows deleted in one write
PRUNE_PAUSE = 0.2  # seconds between two batches
PRUNE_EVERY = 3600.0  # seconds between two checks for rows past [store] keep_days


def create_app(paths: Paths, config: Config, *, worker: bool = False) -> web.Application:
    """`worker=True`: one of several processes on one store; calls hold against leases of the balances
    and count limited keys in the store, and the parent, not the worker, settles what a previous run
    left open."""
    app = web.Application(client_max_size=config.server.max_body_mb * 1024 * 1024)
    where = paths.store
    holder: str | None
    if is_postgres(where):  # one instance of several: leases, a heartbeat, reaped by the others if it dies
        holder = f"instance:{PROCESS_PREFIX}"
        store = open_store(where, holder=holder, request_prefix=PROCESS_PREFIX)
    else:
        holder = f"pid:{os.getpid()}" if worker else None
        store = open_store(where, shared=worker, holder=holder)
    cache = AccountCache()
    budget = LeasedBudget(store, holder) if holder else LocalBudget()
    cache.on_users_changed = budget.users_changed
    upstreams = Upstreams(config.timeouts)
    health = HealthBoard(config.routing)
    app[STATE] = GatewayState(
        paths=paths,
        config=config,
        router=Router(config),
        accounts=cache,
        store=store,
        calls=OpenCalls(store, budget, limiter_for(config, store, worker)),
        upstreams=upstreams,
        health=health,
        failover=Failover(upstreams, health, config.routing, {}),
    )
    app.cleanup_ctx.append(lifecycle)
    calls = app[CALL_ROUTES] = CallRoutes()  # served by server.http, and by aiohttp on connections it took over
    for endpoint in (*openai_chat.ENDPOINTS, anthropic_messages.MESSAGES, openai_responses.RESPONSES):
        calls.exact["/v1" + endpoint.path] = handler = make_handler(endpoint)
        app.router.add_post("/v1" + endpoint.path, handler)
    app.router.add_get("/v1/responses", openai_errors(responses_socket))
    app.router.add_post("/v1/messages/count_tokens", anthropic_errors(count_tokens))
    app.router.add_get("/v1/models", openai_errors(catalog.list_models))
    app.router.add_get("/v1/models/{model:.+}", openai_errors(catalog.get_model))
    app.router.add_get("/v1/key", openai_errors(catalog.key_status))
    app.router.add_get("/health", openai_errors(catalog.health))
    app.router.add_get("/metrics", openai_errors(catalog.metrics))
    add_gemini_routes(app)
    if config.server.accounts_api:
        from hubproxy.server.accounts import add_account_routes  # pyjwt and its crypto: only when used

        add_account_routes(app)
    if config.dashboard.enabled:
        from hubproxy.dashboard import add_dashboard_routes  # Jinja2: only when the dashboard is on

        add_dashboard_routes(app)
    app.router.add_route("OPTIONS", "/{tail:.*}", openai_errors(preflight), name=PREFLIGHT)
    app.router.add_route("*", "/{tail:.*}", unknown_route, name=CATCH_ALL)
    return app


def limiter_for(config: Config, store: Store, worker: bool) -> Limiter:
    """Redis where configured (limits across instances and hosts); else the store's (workers of one
    `serve`), else this process's memory."""
    redis_url = config.store.redis or os.environ.get(REDIS_ENV)
    if redis_url:
        from hubproxy.ratelimit.redis_windows import RedisLimiter  # redis-py: only where configured

        return RedisLimiter(redis_url)
    return SharedLimiter(store) if worker else LocalLimiter()


def settle_leftovers(paths: Paths, config: Config) -> int:
    """Before serving: settle the calls a killed server left open; give this month's plan credit."""
    store = open_store(paths.store)
    try:
        settled = store.settle_leftovers(leftover_segments(paths.journal))
        store.run(accounts.grant_monthly_credits, plan_credits(config), current_month())
    finally:
        store.close()
    if settled:
        log.warning("settled %d call(s) left open by a previous run (billed as estimated)", settled)
    return settled


def settle_dead_worker(paths: Paths, pid: int) -> int:
    """A worker of `serve --workers` died (kill -9, a crash): settle the calls it had open and drop its
    leases, so the money it held serves the other workers again."""
    store = open_store(paths.store)
    try:
        settled = store.settle_leftovers(
            leftover_segments(paths.journal, pid), holder=f"pid:{pid}", request_prefix=request_prefix(pid)
        )
    finally:
        store.close()
    log.warning("worker %d died: settled %d call(s) it left open and returned what it held", pid, settled)
    return settled


GC_YOUNG_THRESHOLD = 20_000


def plan_credits(config: Config) -> dict[str, int]:
    return {plan.name: plan.monthly_credit for plan in config.plans.values()}


def current_month() -> str:
    return time.strftime("%Y-%m", time.gmtime())


def settle_the_heap() -> None:
    """Move everything loaded at start (keys, users, config, modules) out of the collector's sight,
    and collect the young generation less often: a request makes a few hundred short-lived objects,
    and full collections would otherwise walk every key in memory again and again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    loop = asyncio.get_running_loop()
    worker = isinstance(state.calls.budget, LeasedBudget)
    if is_postgres(state.paths.store):
        settled = await loop.run_in_executor(None, settle_own_journal, state)
        if settled:
            log.warning("settled %d call(s) a killed instance in this home left open (billed as estimated)", settled)
    elif not worker:
        settle_leftovers(state.paths, state.config)
    state.accounts.apply(state.store.load_accounts())
    state.stored_secrets = await loop.run_in_executor(None, load_stored_secrets, state.paths, state.config.providers)
    state.failover.secrets = state.stored_secrets
    state.admin_token = await loop.run_in_executor(None, admin_token, state.paths)
    state.config_mtime = _mtime(state.paths)
    state.store.start(loop, state.accounts.apply)
    await record_price_edits(state, state.config)
    state.calls.journal = CallJournal(state.paths.journal)
    settle_the_heap()
    tasks = [
        asyncio.create_task(watch_config(state)),
        asyncio.create_task(flush_last_used(state)),
        asyncio.create_task(persist_reservations(state)),
        asyncio.create_task(grant_credits_monthly(state)),
        asyncio.create_task(prune_old_usage(state)),
        asyncio.create_task(send_alerts(state)),
    ]
    if worker:
        tasks.append(asyncio.create_task(return_idle_leases(state.calls.budget)))
        if not is_postgres(state.paths.store):  # instances are scraped one by one; workers share a port
            state.metrics_shared = True
            tasks.append(asyncio.create_task(share_metrics(state)))
            exchange = WorkerExchange(state.calls.feed, state.paths.feed)
            exchange.start()
            tasks.append(asyncio.create_task(exchange.run()))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        submit_last_used(state)
        if state.calls.feed.exchange is not None:
            state.calls.feed.exchange.close()
        state.calls.budget.close()
        await state.calls.limiter.close()
        await state.upstreams.close_sockets()
        state.upstreams.close()
        await state.store.stop()
        state.calls.journal.close()
        stats = state.store.stats()
        log.info("all writes flushed (%d in %d batches)", stats["writes"], stats["write_batches"])


def settle_own_journal(state: GatewayState) -> int:
    """One instance of several: its home's journal only (the others' open calls are theirs, and a dead
    one's are settled by whoever reaps it); and this month's plan credit, which is idempotent."""
    store, segments = state.store, leftover_segments(state.paths.journal)
    settled = 0
    for prefix in {request_id[:-REQUEST_COUNTER_DIGITS] for request_id in journaled_calls(segments)}:
        # the instance that wrote them is dead (its segments' locks are free): settle what it held now,
        # rather than when the others' reaper notices its heartbeat stopped
        settled += store.settle_leftovers([], holder=f"instance:{prefix}", request_prefix=prefix)
    settled += store.settle_journal(segments)
    store.run(accounts.grant_monthly_credits, plan_credits(state.config), current_month())
    return settled


def _mtime(paths: Paths) -> float:
    try:
        return paths.config.stat().st_mtime
    except FileNotFoundError:
        return 0.0


async def watch_config(state: GatewayState) -> None:
    """Pick up `hubproxy models add` and friends without a restart; a bad new config keeps the old one."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(CONFIG_POLL_SECONDS)
        mtime = _mtime(state.paths)
        if mtime == state.config_mtime:
            continue
        state.config_mtime = mtime
        try:
            config = Config.load(state.paths.config)
            secrets = await loop.run_in_executor(None, load_stored_secrets, state.paths, config.providers)
        except (ConfigError, SecretError) as exc:
            log.error("config change ignored: %s", exc)
            continue
        state.install_config(config, secrets)
        log.info("config reloaded: %d models, %d providers", len(config.models), len(config.providers))
        await record_price_edits(state, config)


async def record_price_edits(state: GatewayState, config: Config) -> None:
    """Prices changed by editing config.toml go into the price history too (`billing.history`)."""
    recorded = await state.store.write(record_edits, config.models)
    if recorded:
        log.info("price history: recorded %d model price change(s) found in config.toml", recorded)


def submit_last_used(state: GatewayState) -> None:
    if not state.last_used:
        return
    stamps = {k: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for k, t in state.last_used.items()}
    state.last_used.clear()
    state.store.touch_keys(stamps)


async def persist_reservations(state: GatewayState) -> None:
    while True:
        await asyncio.sleep(PERSIST_AFTER)
        state.calls.persist_due()


async def prune_old_usage(state: GatewayState) -> None:
    """`[store] keep_days`: usage rows older than that go, PRUNE_BATCH at a time on the writer with a
    pause between batches, so the calls' own writes never wait behind a long delete; checked hourly."""
    while True:
        days = state.config.store.keep_days
        if days:
            cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - days * 86400))
            try:
                while await state.store.write(usage.prune_usage, cutoff, PRUNE_BATCH) == PRUNE_BATCH:
                    await asyncio.sleep(PRUNE_PAUSE)
            except Exception as exc:  # the database away, say: the next hour tries again
                log.warning("pruning usage rows older than %d days failed: %s", days, exc)
        await asyncio.sleep(PRUNE_EVERY)


async def send_alerts(state: GatewayState) -> None:
    """Budget alerts (`hubproxy/alerts.py`): raise the crossings found, then send what is due, each
    failure retried later with a growing wait; a receiver's trouble never reaches a call."""
    async with alerting.session() as client:
        while True:
            await asyncio.sleep(ALERT_EVERY)
            settings = state.config.alerts
            try:
                plans = {n: p.alert_thresholds for n, p in state.config.plans.items() if p.alert_thresholds}
                found = await state.store.read(alert_rows.crossings, settings.thresholds, plans)
                if found:
                    await state.store.write(alert_rows.raise_alerts, found, alerting.receivers(settings), utc_now())
                due = await state.store.write(alert_rows.claim_due, time.time(), ALERT_LEASE, 20)
            except Exception as exc:  # the database away, say: the next round tries again
                log.warning("budget alerts could not be checked: %s", exc)
                continue
            for alert in due:
                problem = await alerting.deliver(alert, settings, client)
                if problem is None:
                    await state.store.write(alert_rows.mark_sent, alert["id"], utc_now())
                    continue
                attempts = alert["attempts"] + 1
                await state.store.write(
                    alert_rows.mark_failed, alert["id"], attempts, alerting.next_try(attempts), problem
                )
                log.warning("a budget alert to %s failed (try %d): %s", alert["receiver"], attempts, problem)


async def return_idle_leases(budget: Budget) -> None:
    while True:
        await asyncio.sleep(IDLE_SECONDS)
        budget.return_idle()


async def grant_credits_monthly(state: GatewayState) -> None:
    """Plan credit for a new month, without waiting for a restart (idempotent, so workers may all run it)."""
    while True:
        await asyncio.sleep(CREDIT_CHECK_SECONDS)
        credits, month = plan_credits(state.config), current_month()
        state.store.queue_monthly_credits(credits, month)


async def share_metrics(state: GatewayState) -> None:
    """`serve --workers`: leave this worker's call counts where the others' /metrics add them up, once
    a second (a scrape reaches one worker; its answer covers all of them, at most a second old)."""
    loop = asyncio.get_running_loop()
    path = state.paths.metrics / f"{os.getpid()}.json"
    while True:
        await asyncio.sleep(METRICS_SHARE_SECONDS)
        snapshot = state.calls.metrics.snapshot()
        with contextlib.suppress(OSError):
            await loop.run_in_executor(None, write_private, path, snapshot.decode())


async def flush_last_used(state: GatewayState) -> None:
    while True:
        await asyncio.sleep(LAST_USED_FLUSH_SECONDS)
        submit_last_used(state)
