"""Run the server in the foreground until SIGINT/SIGTERM, then drain and flush."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from hubproxy.config import Config, Paths
from hubproxy.server.app import create_app


def event_loop_policy() -> str:
    """Use uvloop where installed (`pip install hubproxy[speed]`); it is a drop-in, faster loop."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run(paths: Paths, config: Config, host: str, port: int) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.server.access_log:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    app = create_app(paths, config)
    web.run_app(
        app,
        host=host,
        port=port,
        shutdown_timeout=config.server.drain_seconds,
        access_log_format='%a "%r" %s %b %Tfs',
        print=None,
    )
