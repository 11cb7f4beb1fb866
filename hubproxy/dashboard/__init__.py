"""The web dashboard: server-rendered pages on the gateway's own port (`[dashboard] enabled`).

Users see their balance, keys and calls; the admin sees everyone, tops up, and watches calls as they
finish. Pages are Jinja2 templates with a little JavaScript of our own and SVG charts drawn in
`charts.py`: no build step, nothing from a CDN. Every read runs on the store's read connections, off
the event loop, so browsing never holds up a proxied call.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hubproxy.dashboard import admin, models, pages, views
from hubproxy.dashboard.views import FILTERS
from hubproxy.ratelimit.windows import RateLimiter
from hubproxy.server.accounts import LOGINS, load_secret
from hubproxy.server.errors import UNKNOWN_PAGE

STATIC = Path(__file__).parent / "static"


def add_dashboard_routes(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("hubproxy.dashboard", "templates"),
        autoescape=True,
    )
    env.filters.update(FILTERS)
    env.globals["static"] = lambda name: app.router["static"].url_for(filename=name)
    if LOGINS not in app:
        app[LOGINS] = RateLimiter()
        app.cleanup_ctx.append(load_secret)
    app.on_shutdown.append(admin.end_live_feeds)
    routes = [
        ("GET", "/", pages.overview),
        ("GET", "/login", pages.login_form),
        ("POST", "/login", pages.login),
        ("GET", "/login/link", pages.login_link),
        ("GET", "/login/oidc", pages.login_oidc),
        ("GET", "/login/oidc/callback", pages.login_oidc_callback),
        ("POST", "/logout", pages.logout),
        ("GET", "/keys", pages.keys),
        ("POST", "/keys", pages.create_key),
        ("POST", "/keys/{key_id}/rules", pages.update_key),
        ("POST", "/keys/{key_id}/revoke", pages.revoke_key),
        ("GET", "/usage", pages.usage),
        ("GET", "/usage.csv", pages.usage_csv),
        ("GET", "/models", models.models),
        ("POST", "/models/test", models.test_request),
        ("GET", "/admin/users", admin.users),
        ("POST", "/admin/users", admin.add_user),
        ("POST", "/admin/users/{user_id}/password", admin.set_password),
        ("POST", "/admin/users/{user_id}/balance", admin.change_balance),
        ("POST", "/admin/users/{user_id}/status", admin.change_status),
        ("POST", "/admin/users/{user_id}/plan", admin.change_plan),
        ("GET", "/admin/ledger", admin.ledger),
        ("GET", "/admin/audit", admin.audit_log),
        ("GET", "/admin/providers", admin.providers),
        ("GET", "/admin/live", admin.live),
        ("GET", "/admin/live/events", admin.live_events),
    ]
    for method, path, handler in routes:
        if method == "GET":
            app.router.add_get(path, handler)  # and HEAD
        else:
            app.router.add_route(method, path, handler)
    app.router.add_static("/static/", STATIC, name="static", append_version=True)
    app.router.add_get("/{tail:(?!v1(?:/|$)).*}", views.page_not_found, name=UNKNOWN_PAGE)  # a browser's: HTML
