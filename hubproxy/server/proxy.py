"""The proxied OpenAI endpoints: route → gate → reserve → upstream → settle, in one straight line."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from typing import Annotated

import msgspec
import orjson
from aiohttp import web
from msgspec import UnsetType

from hubproxy import errors
from hubproxy.accounts.rules import model_allowed
from hubproxy.billing.meter import CallMeter
from hubproxy.billing.pricing import read_usage
from hubproxy.config import Provider
from hubproxy.money import format_usd
from hubproxy.routing.router import Route
from hubproxy.secrets import provider_api_key
from hubproxy.server.auth import authorize
from hubproxy.server.errors import REQUEST_ID, openai_errors
from hubproxy.server.relay import relay_stream
from hubproxy.server.request_body import read_request
from hubproxy.server.state import STATE, GatewayState
from hubproxy.upstream.http import Response, UpstreamError
from hubproxy.upstream.pool import Upstreams

log = logging.getLogger("hubproxy.server")

REFUSED_CREDENTIALS = {401, 402, 403, 407}
ASK_STREAM_USAGE = b'"stream_options":{"include_usage":true},'


PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class RequestFields(msgspec.Struct):
    """The top-level fields the gateway reads or checks. Decoding into this skips the rest of the body
    (the messages' text: tens of KB from coding tools) without building it, while checking that it is
    JSON and that the fields an upstream would choke on have the right types (msgspec checks them as
    it reads): a request an upstream would answer with a 500 is refused here, before it can count
    against the deployment."""

    model: object = None
    stream: bool | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    stream_options: dict | UnsetType | None = msgspec.UNSET
    n: PositiveInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None


class Message(msgspec.Struct):
    role: str


class Tool(msgspec.Struct):
    type: str


class ChatFields(RequestFields):
    messages: list[Message] | UnsetType = msgspec.UNSET
    tools: list[Tool] | None = None
    tool_choice: str | dict | None = None


class CompletionFields(RequestFields):
    prompt: msgspec.Raw | UnsetType = msgspec.UNSET


class EmbeddingFields(RequestFields):
    input: msgspec.Raw | UnsetType = msgspec.UNSET


READ_FIELDS = {
    "/chat/completions": msgspec.json.Decoder(ChatFields),
    "/completions": msgspec.json.Decoder(CompletionFields),
    "/embeddings": msgspec.json.Decoder(EmbeddingFields),
}
AT_FIELD = re.compile(r"^(.*) - at `\$\.([A-Za-z_]+)(.*)`$")
FIELD_RULES = {
    "stream": "'stream' must be a boolean.",
    "max_tokens": "'max_tokens' must be a positive integer.",
    "max_completion_tokens": "'max_completion_tokens' must be a positive integer.",
    "n": "'n' must be a positive integer.",
    "stream_options": "'stream_options' must be an object.",
}


def invalid_field(exc: msgspec.ValidationError) -> errors.GatewayError:
    """A 400 that names the field, from msgspec's own "Expected `array`, got `str` - at `$.messages`"."""
    found = AT_FIELD.match(str(exc))
    if found is None:
        return errors.invalid_request("Request body must be a JSON object.")
    problem, field, where = found.groups()
    return errors.invalid_request(FIELD_RULES.get(field) or f"Invalid '{field}{where}': {problem}.", param=field)


def text_or_list(raw: msgspec.Raw | UnsetType, name: str) -> None:
    if raw is not msgspec.UNSET and bytes(raw)[:1] not in (b'"', b"["):
        raise errors.invalid_request(f"'{name}' must be a string or an array.", param=name)


def parse_request(raw: bytes, endpoint: str = "/chat/completions") -> RequestFields:
    if not raw:
        raise errors.invalid_request("Request body is empty; send a JSON object.")
    try:
        fields = READ_FIELDS[endpoint].decode(raw)
    except msgspec.ValidationError as exc:
        raise invalid_field(exc) from None
    except msgspec.DecodeError:
        raise errors.invalid_request("Request body is not valid JSON.") from None
    except RecursionError:
        raise errors.invalid_request("Request body is nested too deeply.") from None
    if fields.model.__class__ is not str or not fields.model:
        raise errors.invalid_request("'model' is required and must be a string.", param="model")
    if endpoint == "/chat/completions":
        if not fields.messages:
            raise errors.invalid_request("'messages' is required: a non-empty array of messages.", param="messages")
    elif endpoint == "/completions":
        text_or_list(fields.prompt, "prompt")
    else:
        if fields.input is msgspec.UNSET:
            raise errors.invalid_request("'input' is required: a string or an array.", param="input")
        text_or_list(fields.input, "input")
    return fields


def make_handler(endpoint: str):
    """The route handler for one endpoint: `proxy_call` itself, no extra coroutine frame per resume
    (and the endpoint bound by position: a bound keyword costs a dict merge on every call)."""
    return openai_errors(functools.partial(proxy_call, endpoint))


FAILOVER_STATUSES = frozenset({401, 402, 403, 408, 429, 500, 502, 503, 504})
NOT_THE_CALLERS_DOING = frozenset({401, 402, 403, 407, 429})  # hubproxy's own upstream key refused or limited


async def proxy_call(endpoint: str, request: web.Request) -> web.StreamResponse:
    state: GatewayState = request.app[STATE]
    key, user = authorize(request)
    state.touch_key(key.id)
    raw = await read_request(request, state.config.server)
    body = parse_request(raw, endpoint)
    routes = state.router.resolve(body.model)
    if not model_allowed(key.policy, routes[0].model):
        raise errors.model_not_allowed(routes[0].model.name)
    if not routes[0].model.priced:
        raise errors.model_not_priced(routes[0].model.name)
    candidates = state.router.candidates(routes, state.health)
    stream = bool(body.stream) and endpoint != "/embeddings"
    max_tokens = body.max_completion_tokens or body.max_tokens
    request_id = request["request_id"]
    meter = CallMeter(
        state.calls,
        state.gate,
        state.config.billing,
        request_id,
        key,
        user,
        candidates[0],
        endpoint,
        stream,
        len(raw),
        max_tokens,
        state.config.plans.get(user.plan) if user.plan else None,
    )
    await meter.reserve()
    options = body.stream_options
    client_wants_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    connection = request.protocol
    if not stream:  # a stream notices a hang-up at its next write; a plain call would wait for the upstream
        connection.on_lost = functools.partial(stop_waiting, asyncio.current_task(), meter)
    try:
        resp, route, api_key = await first_answer(state, meter, candidates, body, raw, endpoint, stream)
        try:
            if resp.status != 200:
                await meter.release("upstream_error", resp.status)
                return await upstream_error(state, resp, route, api_key, request_id)
            if stream:
                return await relay_stream(request, resp, meter, client_wants_usage, state.config.timeouts.idle)
            return await complete_json(resp, meter, state.upstreams)
        finally:
            resp.release()
            state.upstreams.release(route.provider)
            if meter.settled is None:
                meter.settle(None, 0, estimated=True, status="aborted", http_status=499)
    finally:
        connection.on_lost = None
        if meter.settled is None:  # cancelled between two tries (the backoff): nothing reached the client
            meter.release("client_gone", 499)


def stop_waiting(task: asyncio.Task, meter: CallMeter) -> None:
    """The client hung up on a plain call: stop waiting for the upstream (closing its connection), so
    the reservation is released now rather than when the upstream answers or times out. Once the
    call is being settled there is nothing left to wait for."""
    if meter.settled is None:
        task.cancel()


def upstream_body(raw: bytes, body: RequestFields, route: Route, stream: bool) -> bytes:
    """The request as this deployment gets it: its model name, and usage asked for where supported.

    When nothing changes (same model name; not a stream, or a stream that already asks for usage
    where the provider supports it) the client's own bytes go up untouched: no re-encoding of what
    may be a long prompt. A stream that only lacks `stream_options` gets it written in front of the
    client's bytes. Anything else is parsed whole, changed and encoded again.
    """
    options = body.stream_options
    asks_usage = isinstance(options, dict) and options.get("include_usage") is True
    same_model = route.upstream_model == body.model
    if same_model and (not stream or (route.provider.stream_usage and asks_usage)):
        return raw
    if same_model and route.provider.stream_usage and options is msgspec.UNSET:
        start = raw.index(b"{") + 1  # it decoded as an object: its first byte but white space is "{"
        return raw[:start] + ASK_STREAM_USAGE + raw[start:]
    whole = orjson.loads(raw)
    whole["model"] = route.upstream_model
    if stream:
        if route.provider.stream_usage:
            whole["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        elif options is None:
            whole.pop("stream_options", None)
    return orjson.dumps(whole)


async def first_answer(
    state: GatewayState,
    meter: CallMeter,
    candidates: list[Route],
    body: RequestFields,
    raw: bytes,
    endpoint: str,
    stream: bool,
) -> tuple[Response, Route, str | None]:
    """Try deployments in order until one gives an answer worth passing on; the answer's provider slot
    (`max_concurrent`) stays taken until the caller releases it.

    Connection failures, timeouts, 429, 5xx and refusals of hubproxy's own upstream key move on to
    the next deployment; nothing has reached the client yet, so it never sees a switch. The last
    deployment's answer, whatever it is, is the one returned. Each attempt is kept for the usage row.
    """
    routing = state.config.routing
    tries = candidates[: routing.max_attempts]
    upstreams = state.upstreams
    for number, route in enumerate(tries, start=1):
        last = number == len(tries)
        if not upstreams.try_acquire(route.provider):
            meter.attempts.append((route.key, "busy"))
            if last:
                await meter.release("upstream_busy", 503)
                raise errors.upstream_unavailable(
                    f"Every deployment of {route.model.name!r} is at its max_concurrent limit; try again shortly.",
                    status=503,
                )
            continue
        api_key = provider_api_key(route.provider, state.stored_secrets)
        meter.use(route)
        started = time.monotonic()
        try:
            payload = upstream_body(raw, body, route, stream)
            resp = await send_upstream(state, route.provider, endpoint, payload, api_key, stream)
        except errors.GatewayError as exc:
            upstreams.release(route.provider)
            state.health.failure(route.key, exc.message)
            meter.attempts.append((route.key, "unreachable"))
            if last:
                await meter.release("upstream_unreachable", exc.status)
                raise
            await asyncio.sleep(routing.backoff_ms * 2 ** (number - 1) / 1000)
            continue
        except asyncio.CancelledError:
            upstreams.release(route.provider)
            meter.release("client_gone", 499)
            raise
        except BaseException:
            upstreams.release(route.provider)
            meter.release("upstream_unreachable", 502)
            raise
        meter.attempts.append((route.key, resp.status))
        if resp.status not in FAILOVER_STATUSES:
            state.health.success(route.key, (time.monotonic() - started) * 1000)
            return resp, route, api_key
        caller = None if resp.status in NOT_THE_CALLERS_DOING else meter.user.id
        state.health.failure(route.key, f"HTTP {resp.status}", caller)
        if last:
            return resp, route, api_key
        resp.close()
        upstreams.release(route.provider)
        await asyncio.sleep(routing.backoff_ms * 2 ** (number - 1) / 1000)
    raise AssertionError("unreachable: the loop returns or raises on its last try")


async def send_upstream(
    state: GatewayState, provider: Provider, endpoint: str, payload: bytes, api_key: str | None, stream: bool
) -> Response:
    if provider.api_key_env and not api_key:
        raise errors.upstream_unavailable(
            f"Provider {provider.name!r} has no API key: the environment variable {provider.api_key_env} "
            "is not set where hubproxy runs.",
            status=503,
        )
    adapter = state.adapter(provider)
    first_byte = state.upstreams.first_byte(provider)
    try:
        return await state.upstreams.client.post(
            adapter.origin, adapter.head(endpoint, api_key, stream), payload, first_byte
        )
    except TimeoutError:
        raise errors.upstream_unavailable(
            f"Provider {provider.name!r} did not answer within {first_byte:g}s."
        ) from None
    except UpstreamError as exc:
        raise errors.upstream_unavailable(f"Could not reach provider {provider.name!r} ({exc}).") from None


async def read_body(resp: Response, provider: Provider, upstreams: Upstreams) -> bytes:
    """The whole body; each wait for more bytes is bounded by the provider's first-byte timeout."""
    try:
        return await resp.read(upstreams.first_byte(provider))
    except TimeoutError:
        raise errors.upstream_unavailable(f"Provider {provider.name!r} stopped sending mid-answer.") from None
    except UpstreamError as exc:
        raise errors.upstream_unavailable(f"Provider {provider.name!r} broke off its answer ({exc}).") from None


async def complete_json(resp: Response, meter: CallMeter, upstreams: Upstreams) -> web.Response:
    """Non-streamed answer: bill from its `usage`, add `usage.cost`, answer only once billing is durable."""
    try:
        data = await read_body(resp, meter.route.provider, upstreams)
    except errors.GatewayError:
        await meter.release("upstream_broken", 502)
        raise
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    tokens = read_usage(usage)
    if tokens is None:
        output_estimate = 0 if meter.reservation.endpoint == "/embeddings" else len(data) // 4
        await meter.settle(None, output_estimate, estimated=True, status="ok", http_status=200)
    else:
        await meter.settle(tokens[0], tokens[1], estimated=False, status="ok", http_status=200, cached_tokens=tokens[2])
        usage["cost"] = orjson.Fragment(format_usd(meter.cost, min_places=1).encode())
        data = orjson.dumps(parsed)
    return web.Response(body=data, status=200, content_type="application/json")  # x-request-id: openai_errors


async def upstream_error(
    state: GatewayState, resp: Response, route: Route, api_key: str | None, request_id: str
) -> web.Response:
    """Pass an upstream error on with its status and an OpenAI-shaped body, never leaking its key."""
    name = route.provider.name
    data = await read_body(resp, route.provider, state.upstreams)
    if api_key:
        data = data.replace(api_key.encode(), b"[redacted]")
    parsed = None
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(data)
    upstream_message = ""
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        upstream_message = str(parsed["error"].get("message", ""))
    else:
        upstream_message = data[:300].decode("utf-8", "replace").strip()
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
    if not (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)):
        status_type = "api_error" if resp.status >= 500 else "invalid_request_error"
        data = orjson.dumps(
            {
                "error": {
                    "message": f"Provider {name!r} answered HTTP {resp.status}: {upstream_message}",
                    "type": status_type,
                    "code": "upstream_error",
                    "param": None,
                }
            }
        )
    return web.Response(body=data, status=resp.status, content_type="application/json", headers=headers)
