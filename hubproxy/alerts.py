"""Budget alerts, sent off the hot path: the server scans for crossed thresholds every few seconds
(`store/sql/alerts.py` keeps one row per crossing, period and receiver, so a restart or a second
worker raises nothing twice), then sends what is due — to a webhook (Slack-compatible `{"text": …}`, or
generic JSON signed with HMAC-SHA256 in `X-Hubproxy-Signature`), by email over SMTP, and to the log —
retrying with a growing wait. A receiver that is down costs the calls nothing: nothing here runs
during a call.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import smtplib
import time
from email.message import EmailMessage

import aiohttp
import orjson

from hubproxy.config.settings import AlertSettings
from hubproxy.money import format_usd

log = logging.getLogger("hubproxy.alerts")
SEND_TIMEOUT = 10.0
MAX_WAIT = 3600.0  # the longest wait between two tries of one alert


def receivers(settings: AlertSettings) -> list[str]:
    """Where each crossing goes: always the log (and the dashboard's banner), and what is configured."""
    return ["log", *(["webhook"] if settings.webhook else []), *(["email"] if settings.smtp_host else [])]


def text_of(alert: dict) -> str:
    detail = alert["detail"]
    if alert["kind"] == "balance":
        left = format_usd(max(detail["balance"], 0))
        return (
            f"{alert['email']} has used {alert['threshold']}% of the ${format_usd(detail['funded'])} they had after "
            f"their last top-up (${left} left)"
        )
    period = detail.get("budget_period") or "lifetime"
    return (
        f"key {detail['key']} ({alert['target']}) of {alert['email']} has spent {alert['threshold']}% of its "
        f"${format_usd(detail['limit'])} {period} cap (${format_usd(detail['spent'])} spent)"
    )


def payload(alert: dict, settings: AlertSettings) -> tuple[bytes, dict[str, str]]:
    """The webhook's body and headers: Slack's shape, or the alert as JSON signed with the shared secret."""
    text = "hubproxy: " + text_of(alert)
    if settings.webhook_format == "slack":
        return orjson.dumps({"text": text}), {"Content-Type": "application/json"}
    body = orjson.dumps(
        {
            "alert": {
                "kind": alert["kind"],
                "target": alert["target"],
                "email": alert["email"],
                "threshold": alert["threshold"],
                "period": alert["period"],
                "detail": alert["detail"],
                "text": text,
            }
        }
    )
    headers = {"Content-Type": "application/json"}
    secret = os.environ.get(settings.webhook_secret_env, "") if settings.webhook_secret_env else ""
    if secret:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Hubproxy-Signature"] = f"sha256={digest}"
    return body, headers


async def send_webhook(alert: dict, settings: AlertSettings, session: aiohttp.ClientSession) -> None:
    body, headers = payload(alert, settings)
    async with session.post(settings.webhook, data=body, headers=headers) as resp:
        if resp.status >= 300:
            raise OSError(f"the webhook answered HTTP {resp.status}")


def send_email(alert: dict, settings: AlertSettings) -> None:
    """One email over SMTP (STARTTLS where the server offers it; a login where a user is set)."""
    message = EmailMessage()
    message["From"], message["To"] = settings.smtp_from, ", ".join(settings.smtp_to)
    message["Subject"] = f"hubproxy: {alert['threshold']}% of a budget used ({alert['email']})"
    message.set_content(text_of(alert) + "\n")
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls()
            smtp.ehlo()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, os.environ.get(settings.smtp_password_env, ""))
        smtp.send_message(message)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT))


async def deliver(alert: dict, settings: AlertSettings, client: aiohttp.ClientSession) -> str | None:
    """Send one alert to its receiver within SEND_TIMEOUT: None when sent, else why not, without the
    webhook's URL (a Slack webhook's holds its token); the caller retries it later."""
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            if alert["receiver"] == "log":
                log.warning("budget alert: %s", text_of(alert))
            elif alert["receiver"] == "webhook":
                await send_webhook(alert, settings, client)
            elif alert["receiver"] == "email":
                await asyncio.get_running_loop().run_in_executor(None, send_email, alert, settings)
    except (OSError, aiohttp.ClientError, TimeoutError, smtplib.SMTPException) as exc:
        return f"{exc.__class__.__name__}: {exc}".replace(settings.webhook or "\0", "the webhook")
    return None


def next_try(attempts: int) -> float:
    return time.time() + min(5.0 * 2 ** (attempts - 1), MAX_WAIT)


SAMPLE = {
    "id": 0,
    "kind": "balance",
    "target": "someone@example.com",
    "email": "someone@example.com",
    "threshold": 80,
    "period": "sample",
    "detail": {"balance": 2_000_000_000_000, "funded": 10_000_000_000_000, "used_percent": 80.0},
    "attempts": 0,
}
