"""The proxied calls, in one straight line: key → request → route → hold → upstream → relay → settle.

Each step is one module's: `accounts` says who calls and what the key may do, the protocol module
reads the request and builds the upstream body, `routing` picks and tries deployments, `billing`
holds and settles the money, the relay streams. Nothing below this handler calls back into it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hubproxy import errors
from hubproxy.accounts.cache import KeyState
from hubproxy.accounts.rules import model_allowed
from hubproxy.billing.meter import CallMeter
from hubproxy.billing.pricing import estimate_prompt_tokens, output_limits
from hubproxy.protocols import Call, ClientEndpoint, Leg, Untranslatable, anthropic_messages
from hubproxy.protocols.legs import outbound, read_call
from hubproxy.routing.failover import NoAnswer
from hubproxy.routing.router import Route
from hubproxy.secrets import provider_api_key
from hubproxy.server.auth import authorize
from hubproxy.server.connections import GuardedConnection
from hubproxy.server.errors import REQUEST_ID, errors_rendered_by
from hubproxy.server.http import Answer
from hubproxy.server.relay import relay_stream
from hubproxy.server.request_body import read_request
from hubproxy.server.state import STATE, GatewayState
from hubproxy.upstream.http import Response, UpstreamError

if TYPE_CHECKING:
    from hubproxy.server.http import CallAnswer, CallRequest

log = logging.getLogger("hubproxy.server")

REFUSED_CREDENTIALS = {401, 402, 403, 407}


def make_handler(endpoint: ClientEndpoint):
    """The route handler for one endpoint: `proxy_call` itself, no extra coroutine frame per resume
    (and the endpoint bound by position: a bound keyword costs a dict merge on every call)."""
    return errors_rendered_by(endpoint.error_body)(functools.partial(proxy_call, endpoint))


async def proxy_call(endpoint: ClientEndpoint, request: CallRequest) -> CallAnswer:
    state: GatewayState = request.app[STATE]
    key, user = authorize(request)
    state.touch_key(key.id)
    raw, fields = read_call(endpoint, await read_request(request, state.config.server))
    routes = state.router.resolve(fields.model)
    model = routes[0].model
    if not model_allowed(key.policy, model):
        raise errors.model_not_allowed(model.name)
    if not model.priced:
        raise errors.model_not_priced(model.name)
    candidates = state.router.candidates(routes, state.health)
    call = Call(endpoint, raw, fields, bool(fields.stream) and endpoint.streams, request.headers, request["request_id"])
    call.key, call.user = key, user
    billing = state.config.billing
    output = 0
    if endpoint.makes_output:
        per_choice, imposed = output_limits(fields.max_output, model.max_output_tokens, billing.default_max_tokens)
        output = per_choice * fields.choices
        if fields.max_output is None:  # the client set no limit: the legs send the one the hold was sized by
            call.unset, call.unset_native = per_choice, imposed is not None
    searches = fields.web_searches
    if searches is None:  # a web search tool without max_uses: no bound to hold, where searches are billed
        if model.dearest.rates.get("web_search_price"):
            raise errors.invalid_request(
                "tools: a web search tool needs max_uses here (this gateway holds the most its searches may cost).",
                param="tools",
            )
        searches = 0
    meter = CallMeter(
        state.calls,
        billing,
        call,
        candidates[0],
        unseen=endpoint.unseen_tokens(fields, billing.image_tokens),
        max_output=output,
        searches=searches,
        plan=state.config.plans.get(user.plan) if user.plan else None,
    )
    await meter.reserve()
    connection: GuardedConnection = request.protocol  # type: ignore[assignment]  # the server's (server.connections)
    task = asyncio.current_task()
    if not call.stream and task is not None:  # a stream notices a hang-up at its next write; a plain call would wait
        connection.on_lost = functools.partial(stop_waiting, task, meter)
    try:
        try:
            resp, route, api_key, leg = await state.failover.first_answer(
                candidates, functools.partial(outbound, call), call.stream, user.id, meter.use, meter.attempts
            )
        except NoAnswer as failed:
            await meter.release(failed.outcome, failed.error.status)
            raise failed.error from None
        try:
            if resp.status != 200:
                await meter.release("upstream_error", resp.status)
                return await upstream_error(state, endpoint, leg, resp, route, api_key, call.request_id)
            if call.stream:
                watch = leg.stream_watch(fields, meter.reservation.prompt_tokens)
                return await relay_stream(request, resp, meter, watch, state.config.timeouts.idle)
            return await complete_json(state, resp, meter, endpoint, leg, fields)
        finally:
            resp.release()
            state.upstreams.release(route.provider)
            if meter.settled is None:
                meter.settle(None, status="aborted", http_status=499)
    finally:
        connection.on_lost = None
        if meter.settled is None:  # cancelled between two tries (the backoff): nothing reached the client
            meter.release("client_gone", 499)


async def count_tokens(request: web.Request) -> web.Response:
    """`/v1/messages/count_tokens`: asked of the model's deployment where it serves Messages, else
    counted here (`counted`). Nothing is billed."""
    state: GatewayState = request.app[STATE]
    key, _ = authorize(request)
    raw = await read_request(request, state.config.server)
    fields = anthropic_messages.read_for_counting(raw)

    def asked(route: Route) -> tuple[str, bytes, bytes]:
        body = anthropic_messages.with_model(raw, fields, route.upstream_model)
        return "/v1/messages/count_tokens", body, anthropic_messages.forwarded_headers(request.headers)

    return await counted(state, key, fields.model, len(raw), anthropic_messages.API, asked, "input_tokens")


async def counted(
    state: GatewayState,
    key: KeyState,
    model: str,
    size: int,
    api: str,
    asked: Callable[[Route], tuple[str, bytes, bytes]],
    field: str,
) -> web.Response:
    """A prompt's token count (Anthropic's and Google's count routes): the model's first available
    deployment serving `api` is asked (`asked(route)`: path, body, header lines), else the body's
    size over `[billing] bytes_per_token` answers, with no tokenizer or network call (the estimate
    hubproxy bills a call by when its usage never comes; README says how close that is) as `{field: n}`."""
    routes = state.router.resolve(model)
    if not model_allowed(key.policy, routes[0].model):
        raise errors.model_not_allowed(routes[0].model.name)
    native = [r for r in routes if api in r.provider.apis and state.health.available(r.key)]
    if native:
        answer = await upstream_count(state, native[0], api, *asked(native[0]))
        if answer is not None:
            return web.Response(body=answer, content_type="application/json")
    return web.json_response({field: estimate_prompt_tokens(size, state.config.billing.bytes_per_token)})


async def upstream_count(
    state: GatewayState, route: Route, api: str, path: str, body: bytes, extra: bytes
) -> bytes | None:
    """The deployment's own count, or None (it failed or refused: count here instead)."""
    adapter = state.upstreams.adapter(route.provider)
    timeout = state.upstreams.first_byte(route.provider)
    api_key = provider_api_key(route.provider, state.stored_secrets)
    try:
        resp = await adapter.send(path, body, api_key, False, timeout, api, extra)
        data = await adapter.read_whole(resp, timeout)
    except (errors.GatewayError, TimeoutError, UpstreamError):
        return None
    resp.release()
    return data if resp.status == 200 else None


def stop_waiting(task: asyncio.Task, meter: CallMeter) -> None:
    """The client hung up on a plain call: stop waiting for the upstream (closing its connection), so
    the hold is released now rather than when the upstream answers or times out. Once the call is
    being settled there is nothing left to wait for."""
    if meter.settled is None:
        task.cancel()


async def complete_json(
    state: GatewayState, resp: Response, meter: CallMeter, endpoint: ClientEndpoint, leg: Leg, fields: Any
) -> Answer:
    """Non-streamed answer: bill from its usage, answer (with the cost where the format has a place for
    it) only once billing is durable."""
    provider = meter.route.provider
    try:
        data = await state.upstreams.adapter(provider).read_whole(resp, state.upstreams.first_byte(provider))
    except errors.GatewayError:
        await meter.release("upstream_broken", 502)
        raise
    usage, document = leg.answer_usage(data)
    if usage is None:
        output_estimate = len(data) // 4 if endpoint.makes_output else 0
        await meter.settle(None, output_estimate=output_estimate, status="ok", http_status=200)
    else:
        await meter.settle(usage, status="ok", http_status=200)
    try:
        body = leg.answer_body(data, document, None if usage is None else meter.cost, fields)
    except Untranslatable as exc:
        # billed all the same: the provider did the work and charges for it
        name = provider.name
        log.warning("provider %s answered %s in a shape that cannot be translated: %s", name, meter.reservation.id, exc)
        raise errors.upstream_unavailable(
            f"Provider {name!r} answered in a shape hubproxy cannot translate to this API; its answer was billed "
            "as the provider reported it. Retry, or ask for a model served over this API."
        ) from None
    return Answer(body)  # x-request-id: the error wrapper's


async def upstream_error(
    state: GatewayState,
    endpoint: ClientEndpoint,
    leg: Leg,
    resp: Response,
    route: Route,
    api_key: str | None,
    request_id: str,
) -> Answer:
    """Pass an upstream error on with its status and in the client's error shape, never leaking its key."""
    name = route.provider.name
    adapter = state.upstreams.adapter(route.provider)
    data = await adapter.read_whole(resp, state.upstreams.first_byte(route.provider))
    if api_key:
        data = data.replace(api_key.encode(), b"[redacted]")
    upstream_message, in_shape = leg.upstream_error_message(data)
    if resp.status == 407:  # plain http through an egress proxy: the proxy's answer, not the provider's
        log.warning("the egress proxy of provider %s refused its credentials (HTTP 407)", name)
        raise errors.upstream_unavailable(
            f"The egress proxy in front of provider {name!r} refused hubproxy's proxy credentials (HTTP 407).",
            status=502,
        )
    if resp.status in REFUSED_CREDENTIALS:
        log.warning("provider %s refused hubproxy's credentials (HTTP %s)", name, resp.status)
        raise errors.upstream_unavailable(
            f"Provider {name!r} refused hubproxy's credentials (HTTP {resp.status}): {upstream_message}",
            status=502,
        )
    headers = {REQUEST_ID: request_id}
    for header in ("Retry-After", "retry-after-ms"):
        if header in resp.headers:
            headers[header] = resp.headers[header]
    if not in_shape:
        data = endpoint.error_body(
            errors.GatewayError(
                resp.status,
                "upstream_error",
                f"Provider {name!r} answered HTTP {resp.status}: {upstream_message}",
                type=errors.type_for_status(resp.status),
            )
        )
    return Answer(data, resp.status, headers)
