"""Run the server in the foreground until SIGINT/SIGTERM, then drain and flush.

With `workers > 1` the parent settles what a previous run left open, then starts that many worker
processes that share the port (SO_REUSEPORT) and the database, replaces any that dies (after
settling what it held), forwards SIGINT/SIGTERM to them and waits for each to drain and flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from hubproxy.config import Config, Paths
from hubproxy.secrets import admin_token, jwt_secret
from hubproxy.server.app import create_app, settle_dead_worker, settle_leftovers
from hubproxy.server.connections import ConnectionGuard, GuardedSite
from hubproxy.server.http import ACCESS_LINE
from hubproxy.server.state import STATE

log = logging.getLogger("hubproxy.server")
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
BACKLOG = 1024
QUICK_DEATH = 10.0  # a worker that dies sooner than this after starting …
MAX_QUICK_DEATHS = 3  # … this many times in a row stops the server
KEEPALIVE_SECONDS = 75.0  # an idle kept-alive connection is closed after this long


LOOP_ENV = "HUBPROXY_LOOP"  # "asyncio": the standard loop even where uvloop is installed (to compare)


def event_loop_policy() -> str:
    """Use uvloop where installed (`pip install hubproxy[speed]`); it is a drop-in, faster loop."""
    if os.environ.get(LOOP_ENV) == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _address(host: str, port: int) -> tuple:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = found[0]
    return family, kind, proto, address


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind and listen before anything else, so that a busy port is the first thing the user hears."""
    family, kind, proto, address = _address(host, port)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def check_port(host: str, port: int) -> None:
    """For --workers, which each listen on their own SO_REUSEPORT socket: fail now, in the parent,
    if another program holds the port (a bound socket that does not listen takes no connections)."""
    family, kind, proto, address = _address(host, port)
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(address)


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context when [server] tls_cert and tls_key name a certificate and its key."""
    if not config.server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    return context


class AccessLog(AbstractAccessLogger):
    """One line per request without its query string: a dashboard login link's token, or a key a
    client put in the URL, never reaches the log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            ACCESS_LINE,
            request.remote,
            request.method,
            request.rel_url.raw_path,  # as sent, percent-encoded: no line break can be logged
            response.status,
            response.body_length,
            time,
        )


def handler_args(config: Config) -> dict:
    """What each connection's aiohttp request handler is made with."""
    args: dict = {"keepalive_timeout": KEEPALIVE_SECONDS}
    if config.server.access_log:
        args.update(access_log=logging.getLogger("aiohttp.access"), access_log_class=AccessLog)
    else:
        args["access_log"] = None
    return args


async def serve_app(app: web.Application, sock: socket.socket, config: Config) -> None:
    """Start the app (its lifecycle: database, caches, writer), accept connections on `sock`, say
    "ready" only then, and run until SIGINT/SIGTERM; then drain in-flight calls and flush."""
    runner = web.AppRunner(app, handle_signals=True, shutdown_timeout=config.server.drain_seconds)
    await runner.setup()
    try:
        site = GuardedSite(runner, sock, ConnectionGuard(app[STATE]), handler_args(config), tls_context(config))
        await site.start()
        app[STATE].announce_ready(site.name)
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def _serve(paths: Paths, config: Config, sock: socket.socket, worker: bool) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    event_loop_policy()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(serve_app(create_app(paths, config, worker=worker), sock, config))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, web.GracefulExit, KeyboardInterrupt):
                loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def run(
    paths: Paths, config: Config, host: str, port: int, workers: int = 1, sock: socket.socket | None = None
) -> None:
    """Serve until stopped: on `sock` (bound by the caller with `listen`), or with `workers` processes
    that each listen on `host:port` through SO_REUSEPORT."""
    if workers <= 1:
        _serve(paths, config, sock or listen(host, port), worker=False)
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    settle_leftovers(paths, config)
    if config.server.accounts_api or config.dashboard.enabled:
        jwt_secret(paths)  # made once here, so every worker signs login tokens and sessions with the same secret
    admin_token(paths)  # and checks the admin's links against the same token
    shutil.rmtree(paths.metrics, ignore_errors=True)  # the last run's counts: each worker starts from zero
    shutil.rmtree(paths.feed, ignore_errors=True)
    context = multiprocessing.get_context("spawn")

    def start_worker() -> BaseProcess:
        child = context.Process(target=_worker, args=(paths, config, host, port))
        child.start()
        return child

    supervise(paths, start_worker, workers)


def supervise(paths: Paths, start_worker: Callable[[], BaseProcess], count: int) -> None:
    """Keep `count` workers running until SIGINT/SIGTERM, which is passed on to each once.

    A worker that dies on its own (kill -9, a crash) is replaced at once, after what it held is
    settled: its open calls billed as interrupted, its leases of the balances dropped. Workers that
    keep dying soon after they start stop the whole server instead of looping."""
    children = [start_worker() for _ in range(count)]
    started = {child.pid: time.monotonic() for child in children}
    stopping = False
    stopped_codes: list[int | None] = []
    quick_deaths = 0

    def stop_children(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    while children:
        ended = wait([child.sentinel for child in children])
        for child in [c for c in children if c.sentinel in ended]:
            child.join()
            children.remove(child)
            if stopping:
                stopped_codes.append(child.exitcode)
                continue
            log.error("worker %d exited unexpectedly (exit code %s)", child.pid, child.exitcode)
            if child.pid is not None:
                settle_dead_worker(paths, child.pid)
            quick_deaths = quick_deaths + 1 if time.monotonic() - started.pop(child.pid) < QUICK_DEATH else 0
            if quick_deaths >= MAX_QUICK_DEATHS:
                stop_children(signal.SIGTERM, None)
                stopped_codes.append(child.exitcode)
                continue
            if not stopping:
                replacement = start_worker()
                started[replacement.pid] = time.monotonic()
                children.append(replacement)
    if quick_deaths >= MAX_QUICK_DEATHS:
        raise SystemExit(f"workers died {quick_deaths} times within {QUICK_DEATH:g}s of starting; see the log")
    # a worker stopped by our SIGTERM before it had set up its own handling is a clean stop too
    failed = [code for code in stopped_codes if code not in (0, -signal.SIGTERM)]
    if failed:
        raise SystemExit(f"{len(failed)} worker(s) exited with an error")


def _worker(paths: Paths, config: Config, host: str, port: int) -> None:
    """Own process group, so a terminal's Ctrl-C reaches only the parent, which stops each worker once."""
    os.setpgrp()
    _serve(paths, config, listen(host, port, reuse_port=True), worker=True)
