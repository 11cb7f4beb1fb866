"""The leg table: for each client route and each upstream wire API, the leg that carries the call.

Read a row as "a <client> call to a deployment serving <upstream> goes through <leg>". A client's own
wire API is its endpoint; a format's translators go to and from chat; two formats that are neither
chat meet through chat twice (`pivot.Through`). A deployment serving several wire APIs is reached
the first way `PREFERENCE` finds: natively, then chat, then Responses, then Messages. A new wire
format is its modules plus its rows here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hubproxy.errors import invalid_request
from hubproxy.protocols import Call, ClientEndpoint, Leg, Outbound, Untranslatable, gemini
from hubproxy.protocols import anthropic_messages as messages
from hubproxy.protocols import openai_chat as chat
from hubproxy.protocols import openai_responses as responses
from hubproxy.protocols.chat_gemini import VIA_GEMINI
from hubproxy.protocols.chat_messages import VIA_MESSAGES
from hubproxy.protocols.chat_responses import VIA_RESPONSES
from hubproxy.protocols.gemini_chat import VIA_CHAT as GEMINI_VIA_CHAT
from hubproxy.protocols.messages_chat import VIA_CHAT as MESSAGES_VIA_CHAT
from hubproxy.protocols.pivot import Through
from hubproxy.protocols.responses_chat import VIA_CHAT as RESPONSES_VIA_CHAT
from hubproxy.protocols.responses_chat import plain_chat
from hubproxy.routing.router import Route

LEGS: dict[tuple[str, str], Leg] = {
    ("chat", chat.API): chat.CHAT,
    ("chat", messages.API): VIA_MESSAGES,
    ("chat", responses.API): VIA_RESPONSES,
    ("chat", gemini.API): VIA_GEMINI,
    ("completions", chat.API): chat.COMPLETIONS,
    ("embeddings", chat.API): chat.EMBEDDINGS,
    ("messages", messages.API): messages.MESSAGES,
    ("messages", chat.API): MESSAGES_VIA_CHAT,
    ("messages", responses.API): Through(MESSAGES_VIA_CHAT, VIA_RESPONSES),
    ("messages", gemini.API): Through(MESSAGES_VIA_CHAT, VIA_GEMINI),
    ("responses", responses.API): responses.RESPONSES,
    ("responses", chat.API): RESPONSES_VIA_CHAT,
    ("responses", messages.API): Through(RESPONSES_VIA_CHAT, VIA_MESSAGES),
    ("responses", gemini.API): Through(RESPONSES_VIA_CHAT, VIA_GEMINI),
    # ("gemini", gemini.API): the call's own endpoint, made per call from its path (`gemini.Endpoint`)
    ("gemini", chat.API): GEMINI_VIA_CHAT,
    ("gemini", messages.API): Through(GEMINI_VIA_CHAT, VIA_MESSAGES),
    ("gemini", responses.API): Through(GEMINI_VIA_CHAT, VIA_RESPONSES),
}

PREFERENCE = (chat.API, responses.API, messages.API, gemini.API)
"""After the client's own wire API, the order a deployment's other wire APIs are tried in."""

_chosen: dict[tuple[str, tuple[str, ...]], Leg | None] = {}


def leg_for(endpoint: ClientEndpoint, apis: tuple[str, ...]) -> Leg | None:
    """The leg for `endpoint`'s calls to a deployment serving `apis` (None: no way there)."""
    found = _chosen.get((endpoint.name, apis), _chosen)
    if found is not _chosen:
        return found  # type: ignore[return-value]
    leg = None
    for api in (endpoint.api, *PREFERENCE):
        if api in apis and (endpoint.name, api) in LEGS:
            leg = LEGS[endpoint.name, api]
            break
    _chosen[endpoint.name, apis] = leg
    return leg


NORMALISE: dict[str, Callable[[bytes, Any], tuple[bytes, Any]]] = {"chat": plain_chat}
"""Per client route, what makes a body sent in another format's shape plain (Cursor sends some
models Responses-shaped bodies on /chat/completions and reads chat back)."""


def read_call(endpoint: ClientEndpoint, raw: bytes) -> tuple[bytes, Any]:
    """The request's body and fields as the legs take them: checked by the endpoint, then made plain
    where the route has a `NORMALISE` step (once, before any leg sees it)."""
    fields = endpoint.read(raw)
    normalise = NORMALISE.get(endpoint.name)
    return (raw, fields) if normalise is None else normalise(raw, fields)


def outbound(call: Call, route: Route) -> Outbound | None:
    """How `call` reaches one deployment: natively, translated, or (None) not at all. A call that set
    no output limit gets the one its hold was sized by, in the field this provider reads: always for a
    translator (its format may require one), on the client's own wire API unless the model's own
    maximum is the bound. A body a translator cannot carry is the caller's 400."""
    endpoint, apis = call.endpoint, route.provider.apis
    leg: Leg | None = endpoint if endpoint.api in apis else leg_for(endpoint, apis)  # LEGS' first row, inline
    if leg is None:
        return None
    if call.unset and (call.unset_native or leg.api != endpoint.api):
        call = call.with_body(
            *endpoint.with_output_limit(call.raw, call.fields, call.unset, route.provider.limit_field)
        )
    try:
        return leg.upstream_request(call, route)
    except Untranslatable as exc:
        raise invalid_request(
            f"The request cannot be translated for {route.model.name!r} (served over another wire API): {exc}"
        ) from None
