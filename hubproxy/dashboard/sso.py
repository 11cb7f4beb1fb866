"""Single sign-on for the dashboard: OpenID Connect's authorization code flow with PKCE, against the
provider `[dashboard] oidc_discovery` names (https://openid.net/specs/openid-connect-core-1_0.html and
RFC 7636, read 2026-12-07).

`/login/oidc` sends the browser to the provider with a fresh state, nonce and PKCE verifier, kept in a
short-lived cookie signed like the dashboard's sessions; `/login/oidc/callback` checks the state,
trades the code (and the verifier) for tokens with the client secret, and has authlib check the ID
token (signature by the provider's published keys, issuer, audience, expiry, nonce). The user is
matched by verified email — created on first sign-in, as a user with no balance — within
`oidc_domains`; an email in `oidc_admins` gets the admin's session. No token is checked by hand here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import urllib.parse

import aiohttp
import orjson
from aiohttp import web

from hubproxy.audit import ACTOR
from hubproxy.config.settings import DashboardSettings
from hubproxy.dashboard.sessions import over_tls, start_session
from hubproxy.server.state import STATE
from hubproxy.store.sql import accounts

FLOW_COOKIE = "hubproxy_oidc"
FLOW_SECONDS = 600
DISCOVERY_SECONDS = 3600
DISCOVERY = web.AppKey("oidc_discovery", dict)
TIMEOUT = aiohttp.ClientTimeout(total=15)


class SignOnError(Exception):
    """What went wrong, said to the person signing in (never a token or a secret)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(secret: str, payload: str) -> str:
    return payload + "." + hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _unsigned(secret: str, value: str) -> str | None:
    payload, _, signature = value.rpartition(".")
    wanted = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return payload if payload and hmac.compare_digest(signature, wanted) else None


async def discovered(app: web.Application, settings: DashboardSettings) -> dict:
    """The provider's discovery document and its signing keys, fetched once an hour."""
    cached = app.get(DISCOVERY)
    if cached and cached["url"] == settings.oidc_discovery and cached["until"] > time.time():
        return cached
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.get(settings.oidc_discovery) as resp:
                document = await resp.json(content_type=None)
            async with session.get(document["jwks_uri"]) as resp:
                keys = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError) as exc:
        raise SignOnError(f"the sign-on provider could not be reached ({exc.__class__.__name__})") from None
    found = {**document, "keys": keys, "url": settings.oidc_discovery, "until": time.time() + DISCOVERY_SECONDS}
    app[DISCOVERY] = found
    return found


def callback_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/login/oidc/callback"


async def begin(request: web.Request, target: str) -> web.StreamResponse:
    """Send the browser to the provider, remembering (signed, in a cookie) what the callback checks."""
    state = request.app[STATE]
    settings = state.config.dashboard
    document = await discovered(request.app, settings)
    verifier, flow, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    remembered = _b64(
        orjson.dumps(
            {"state": flow, "nonce": nonce, "verifier": verifier, "next": target, "until": time.time() + FLOW_SECONDS}
        )
    )
    query = {
        "response_type": "code",
        "client_id": settings.oidc_client_id,
        "redirect_uri": callback_url(request),
        "scope": "openid email",
        "state": flow,
        "nonce": nonce,
        "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    response = web.HTTPSeeOther(document["authorization_endpoint"] + "?" + urllib.parse.urlencode(query))
    response.set_cookie(
        FLOW_COOKIE,
        _signed(state.admin_token, remembered),
        max_age=FLOW_SECONDS,
        path="/login/oidc",
        httponly=True,
        samesite="Lax",  # the provider's redirect back is a top-level GET
        secure=over_tls(request),
    )
    return response


def flow_of(request: web.Request) -> dict:
    value = _unsigned(request.app[STATE].admin_token, request.cookies.get(FLOW_COOKIE, ""))
    if value is None:
        raise SignOnError("this sign-in was not started here, or its cookie was lost: start again")
    flow = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    if flow["until"] < time.time():
        raise SignOnError("this sign-in took longer than ten minutes: start again")
    given = request.query.get("state", "")
    if not hmac.compare_digest(given.encode(), flow["state"].encode()):
        raise SignOnError("the provider's answer does not belong to this sign-in: start again")
    return flow


async def verified_email(request: web.Request, flow: dict) -> str:
    """The code traded for tokens; the ID token checked by authlib; the email the provider verified."""
    from authlib.jose import JsonWebKey, jwt  # only where single sign-on is configured: `pip install hubproxy[sso]`
    from authlib.jose.errors import JoseError

    settings = request.app[STATE].config.dashboard
    document = await discovered(request.app, settings)
    secret = os.environ.get(settings.oidc_client_secret_env, "")
    form = {
        "grant_type": "authorization_code",
        "code": request.query.get("code", ""),
        "redirect_uri": callback_url(request),
        "code_verifier": flow["verifier"],
    }
    auth = aiohttp.BasicAuth(settings.oidc_client_id, secret)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(document["token_endpoint"], data=form, auth=auth) as resp:
                tokens = await resp.json(content_type=None)
                if resp.status != 200 or "id_token" not in tokens:
                    raise SignOnError(f"the provider refused the sign-in ({tokens.get('error', resp.status)})")
            options = {
                "iss": {"essential": True, "value": document["issuer"]},
                "aud": {"essential": True, "value": settings.oidc_client_id},
                "nonce": {"essential": True, "value": flow["nonce"]},
            }
            claims = jwt.decode(tokens["id_token"], JsonWebKey.import_key_set(document["keys"]), claims_options=options)
            claims.validate(leeway=60)
            identity = dict(claims)
            if "email" not in identity and document.get("userinfo_endpoint") and tokens.get("access_token"):
                headers = {"Authorization": f"Bearer {tokens['access_token']}"}
                async with session.get(document["userinfo_endpoint"], headers=headers) as resp:
                    info = await resp.json(content_type=None)
                if info.get("sub") == identity.get("sub"):
                    identity = {**identity, **info}
    except JoseError as exc:
        raise SignOnError(f"the provider's ID token does not check out ({exc.error})") from None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SignOnError(f"the provider could not be reached ({exc.__class__.__name__})") from None
    email = identity.get("email")
    if not isinstance(email, str) or identity.get("email_verified") is not True:
        raise SignOnError("the provider did not give a verified email address")
    return email.strip().lower()


async def finish(request: web.Request) -> web.StreamResponse:
    """The provider's redirect back: the person signed in as the user their verified email is."""
    state = request.app[STATE]
    settings = state.config.dashboard
    if request.query.get("error"):
        raise SignOnError(f"the provider did not sign you in ({request.query['error'][:100]})")
    flow = flow_of(request)
    email = await verified_email(request, flow)
    domain = email.rpartition("@")[2]
    if settings.oidc_domains and domain not in [d.lower() for d in settings.oidc_domains]:
        raise SignOnError(f"{email} is not in a domain allowed here")
    response = web.HTTPSeeOther(flow["next"])
    response.del_cookie(FLOW_COOKIE, path="/login/oidc")
    if email in [a.lower() for a in settings.oidc_admins]:
        start_session(request, response, None)
        return response
    user = next((u for u in state.accounts.users.values() if u.email.lower() == email), None)
    if user is None:
        ACTOR.set(f"{email} (single sign-on)")
        row = await state.store.write(accounts.add_user, email)
        user_id = row.id
    elif not user.active:
        raise SignOnError(f"the account {email} is disabled")
    else:
        user_id = user.id
    start_session(request, response, user_id)
    return response
