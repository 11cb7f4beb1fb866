"""The models page: what each user may call and at what price, and a test request sent through the
gateway as a client sends it.

The test is a real call: a key made for it alone (limited to the model, expiring within the hour,
revoked as soon as the answer is in) posts a chat completion to this server over loopback, so it
goes through authentication, the hold, the upstream and the settlement like any call, is billed to
the user who sent it, and shows in the usage log.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from hubproxy import errors
from hubproxy.accounts.rules import collect_rules, model_allowed
from hubproxy.config import Model
from hubproxy.dashboard.sessions import Session
from hubproxy.dashboard.views import PageError, form, page, render
from hubproxy.money import format_usd
from hubproxy.server.accounts import account_errors
from hubproxy.server.state import STATE
from hubproxy.store.sql import accounts
from hubproxy.tokens import TOKEN_CLASSES

PROMPT_MAX = 2000
TEST_MAX_TOKENS = 200
KEY_LIVE_SECONDS = 3.0  # a new key reaches the server's key cache through the store's change feed
DEFAULT_PROMPT = "Say hello in five words."


PRICED_APART = tuple(c for c in TOKEN_CLASSES if c.within is not None and c.price is not None)
"""The token classes a model may price apart (cached, cache write, cache write 1h): a column each."""


def price(micro_per_m: int | None) -> str:
    return "—" if micro_per_m is None else "$" + format_usd(micro_per_m * 10**6, min_places=2)


def usable_models(request: web.Request, session: Session) -> list[Model]:
    """Priced models the session may call: all of them for the admin; for a user, those any of their
    active keys allows."""
    state = request.app[STATE]
    priced = sorted((m for m in state.config.models.values() if m.priced), key=lambda m: m.name)
    if session.admin:
        return priced
    policies = [k.policy for k in state.accounts.keys.values() if k.user_id == session.user_id and k.active]
    return [m for m in priced if any(model_allowed(policy, m) for policy in policies)]


@page()
async def models(request: web.Request, session: Session) -> web.Response:
    return models_page(request, session)


def models_page(request: web.Request, session: Session, status: int = 200, **extra) -> web.Response:
    state = request.app[STATE]
    rows = [
        {
            "model": m,
            "input": price(m.input_price),
            "output": price(m.output_price),
            "parts": [price(table.get(c.price or "")) for c in PRICED_APART],
        }
        for m in usable_models(request, session)
        for table in (m.price_table(0),)
    ]
    people = sorted(u.email for u in state.accounts.users.values() if u.active) if session.admin else []
    extra.setdefault("prompt", DEFAULT_PROMPT)
    parts = [c.label.capitalize() for c in PRICED_APART]
    return render(request, session, "models.html", status=status, rows=rows, parts=parts, people=people, **extra)


@page()
async def test_request(request: web.Request, session: Session) -> web.Response:
    """Send the form's prompt to the chosen model as a client would, and show what came back."""
    state = request.app[STATE]
    fields = await form(request)
    model = fields.get("model", "")
    prompt = fields.get("prompt", "").strip()
    chosen: dict[str, Any] = {
        "chosen": model,
        "prompt": prompt or DEFAULT_PROMPT,
        "chosen_user": fields.get("user", ""),
    }
    if model not in {m.name for m in usable_models(request, session)}:
        return models_page(request, session, 400, error="Choose one of the models listed here.", **chosen)
    if not prompt or len(prompt) > PROMPT_MAX:
        return models_page(request, session, 400, error=f"The prompt is 1 to {PROMPT_MAX} characters.", **chosen)
    if session.admin:
        email = fields.get("user", "").strip()
        if email not in {u.email for u in state.accounts.users.values()}:
            return models_page(request, session, 400, error="Choose whose balance the test is billed to.", **chosen)
    else:
        email = state.accounts.users[session.member].email
    rules = collect_rules(model, [], None, None, "1h", None, None, None)
    try:
        with account_errors():
            key, secret = await state.store.write(accounts.create_key, email, "dashboard test", rules)
    except errors.GatewayError as refused:
        return models_page(request, session, refused.status, error=refused.message, **chosen)
    try:
        result = await call_gateway(request, secret, model, prompt)
    finally:
        await state.store.write(accounts.revoke_key_of, None, key.id)
    return models_page(request, session, result=result, **chosen)


async def call_gateway(request: web.Request, secret: str, model: str, prompt: str) -> dict:
    """POST /v1/chat/completions to this server over loopback with `secret`, as an OpenAI client does."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client hung up")
    port = transport.get_extra_info("sockname")[1]
    scheme = "https" if request.secure else "http"
    url = f"{scheme}://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": TEST_MAX_TOKENS}
    headers = {"Authorization": f"Bearer {secret}"}
    deadline = time.monotonic() + KEY_LIVE_SECONDS
    timeout = aiohttp.ClientTimeout(total=request.app[STATE].config.timeouts.first_byte + 30)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        while True:
            started = time.monotonic()
            try:  # our own certificate on loopback: nothing to verify against
                async with client.post(url, json=body, headers=headers, ssl=False) as resp:
                    answer = json.loads(await resp.text(), parse_float=str)  # the cost as the gateway wrote it
                    status, request_id = resp.status, resp.headers.get("x-request-id", "")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise PageError(502, f"The test request did not complete ({exc or 'timed out'}).") from None
            if status != 401 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)  # the new key is not in the server's cache yet
    seconds = time.monotonic() - started
    return read_answer(answer, status, request_id, seconds)


def read_answer(answer: object, status: int, request_id: str, seconds: float) -> dict:
    """What the page shows of the gateway's answer: the text, tokens, cost and time, or its error."""
    result = {"status": status, "request_id": request_id, "ms": round(seconds * 1000)}
    if not isinstance(answer, dict):
        return {**result, "error": "The gateway answered with something that is not JSON."}
    if status != 200:
        message = (answer.get("error") or {}).get("message") if isinstance(answer.get("error"), dict) else None
        return {**result, "error": message or f"HTTP {status}"}
    choices = answer.get("choices") or [{}]
    usage = answer.get("usage") or {}
    return {
        **result,
        "text": ((choices[0] or {}).get("message") or {}).get("content") or "",
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "cost": usage.get("cost"),
        "model": answer.get("model"),
    }
