"""What the running server holds: config, router, account cache, store, calls in flight, upstreams."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from hubproxy.accounts.cache import AccountCache
from hubproxy.accounts.rules import IPNetwork, parse_networks
from hubproxy.billing.meter import OpenCalls
from hubproxy.config import Config, Paths
from hubproxy.routing.failover import Failover
from hubproxy.routing.health import HealthBoard
from hubproxy.routing.router import Router
from hubproxy.server.addresses import client_address, origin_matcher
from hubproxy.store import Store
from hubproxy.upstream.pool import Upstreams

if TYPE_CHECKING:
    from hubproxy.server.http import CallRequest

log = logging.getLogger("hubproxy.server")


@dataclass
class GatewayState:
    paths: Paths
    config: Config
    router: Router
    accounts: AccountCache
    store: Store
    calls: OpenCalls
    upstreams: Upstreams
    health: HealthBoard
    failover: Failover
    stored_secrets: dict[str, str] = field(default_factory=dict)
    last_used: dict[str, int] = field(default_factory=dict)
    config_mtime: float = 0.0
    admin_token: str = ""
    cors: re.Pattern[str] | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    metrics_shared: bool = False  # a worker of `serve --workers`: /metrics adds up every worker's counts

    def __post_init__(self) -> None:
        self._read_server_settings()

    def _read_server_settings(self) -> None:
        """What the request path needs of [server] in a ready form: parsed once per config, not per call."""
        self.trusted_proxies = parse_networks(self.config.server.trusted_proxies)
        self.cors = origin_matcher(self.config.server.cors_origins)

    def caller_address(self, request: CallRequest) -> str | None:
        return client_address(request.remote, request.headers.get("X-Forwarded-For"), self.trusted_proxies)

    def touch_key(self, key_id: str) -> None:
        """Remember use in memory; flushed to the database once a second, not once a request."""
        self.last_used[key_id] = int(time.time())

    def announce_ready(self, where: str) -> None:
        """Logged once the socket accepts calls, never before."""
        log.info(
            "ready on %s: %d keys, %d users, %d models",
            where,
            len(self.accounts.keys),
            len(self.accounts.users),
            len(self.router.routes()),
        )

    def install_config(self, config: Config, secrets: dict[str, str]) -> None:
        self.config = config
        self.router = Router(config)
        self.upstreams.set_timeouts(config.timeouts)
        self.health.settings = config.routing
        self._read_server_settings()
        self.stored_secrets = secrets
        self.failover.settings = config.routing
        self.failover.secrets = secrets


STATE = web.AppKey("hubproxy_state", GatewayState)
