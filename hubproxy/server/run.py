"""Run the server in the foreground until SIGINT/SIGTERM, then drain and flush.

With `workers > 1` the parent settles what a previous run left open, then starts that many worker
processes that share the port (SO_REUSEPORT) and the database, forwards SIGINT/SIGTERM to them and
waits for each to drain and flush.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys

from aiohttp import web

from hubproxy.config import Config, Paths
from hubproxy.secrets import jwt_secret
from hubproxy.server.app import create_app, settle_leftovers

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def event_loop_policy() -> str:
    """Use uvloop where installed (`pip install hubproxy[speed]`); it is a drop-in, faster loop."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _serve(paths: Paths, config: Config, host: str, port: int, worker: bool) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    if not config.server.access_log:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    event_loop_policy()
    web.run_app(
        create_app(paths, config, worker=worker),
        host=host,
        port=port,
        reuse_port=worker or None,
        shutdown_timeout=config.server.drain_seconds,
        access_log_format='%a "%r" %s %b %Tfs',
        print=None,
    )


def run(paths: Paths, config: Config, host: str, port: int, workers: int = 1) -> None:
    if workers <= 1:
        _serve(paths, config, host, port, worker=False)
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    settle_leftovers(paths, config)
    if config.server.accounts_api:
        jwt_secret(paths)  # made once here, so every worker signs with the same secret
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_worker, args=(paths, config, host, port)) for _ in range(workers)]
    for child in children:
        child.start()

    stopping = False

    def stop_children(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    for child in children:
        child.join()
    # a worker stopped by our SIGTERM before it had set up its own handling is a clean stop too
    clean = (0, -signal.SIGTERM) if stopping else (0,)
    failed = [c.exitcode for c in children if c.exitcode not in clean]
    if failed:
        raise SystemExit(f"{len(failed)} worker(s) exited with an error")


def _worker(paths: Paths, config: Config, host: str, port: int) -> None:
    """Own process group, so a terminal's Ctrl-C reaches only the parent, which stops each worker once."""
    os.setpgrp()
    _serve(paths, config, host, port, worker=True)
