"""Client wire formats: one module per format, each knowing its request fields, its usage fields, its
stream events and its error shape; translators between formats; and the interfaces the call path uses.

A format module offers its routes as `ClientEndpoint`s (`openai_chat`: chat, completions, embeddings;
`anthropic_messages`: messages; `openai_responses`: responses). An endpoint reads and checks a request
and renders errors in its format's shape. How the call reaches a deployment is a `Leg`: the endpoint
itself where the deployment serves the client's wire API, else a translator; `legs.py` is the one
table that names the leg for every (client, upstream) pair. The call handler talks only to these
interfaces; formats never import translators.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import orjson

from hubproxy.errors import GatewayError, invalid_request
from hubproxy.tokens import Usage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hubproxy.accounts.cache import KeyState, UserState
    from hubproxy.routing.router import Route


class CallFields(Protocol):
    """What the gateway reads of a request, whatever its format (a format's decoded fields)."""

    model: Any  # checked to be a non-empty string by `read`
    stream: bool | None

    @property
    def max_output(self) -> int | None: ...


class StreamWatch(Protocol):
    """Reads a stream's events for the relay: accumulates their usage, says what to send for each
    (the event, a rewritten or translated one, or nothing yet), and which one ends the stream."""

    output_events: int  # content events: the output estimate when no usage comes

    @property
    def usage(self) -> Usage | None: ...

    def worth_reading(self, events: bytes) -> bool:
        """False: these events go on as they are, unread (the fast path)."""

    def read(self, event: bytes, payload: bytes | None) -> bytes | End | None:
        """Bytes to send now, None for nothing, or FINAL: the stream's usage is final; the relay
        settles the call and then sends `closing(cost)`."""

    def closing(self, cost: int) -> bytes:
        """What leaves once the call is settled (also when the stream ended without a final event)."""

    def error_event(self, message: str) -> bytes:
        """An in-band error, the status line being sent already."""


class Call(msgspec.Struct, gc=False):
    """What the caller sent, as every leg and the meter see it: one object instead of a list of
    arguments. `unset`: the output limit to write into the body where the client set none (0: it set
    one); `unset_native`: whether that limit goes up on the client's own wire API too (not when the
    model's own maximum is the bound). A msgspec struct: made in C on every call."""

    endpoint: ClientEndpoint
    raw: bytes
    fields: Any
    stream: bool
    headers: Mapping[str, str]
    request_id: str = ""
    key: KeyState | None = None
    user: UserState | None = None
    unset: int = 0
    unset_native: bool = False

    def with_body(self, raw: bytes, fields: Any) -> Call:
        """The same call with another body (an output limit written in, or translated to chat)."""
        return msgspec.structs.replace(self, raw=raw, fields=fields, unset=0, unset_native=False)


class Outbound(msgspec.Struct, gc=False):
    """One upstream request: the leg that made it (and reads its answer), the wire API, the path, the
    body and extra header lines."""

    leg: Leg
    api: str
    path: str
    body: bytes
    headers: bytes


class Leg(Protocol):
    """How a call reaches a deployment over one upstream wire API (`api`) and how its answer comes back
    in the client's format: the endpoint itself, a translator, or two translators through chat."""

    @property
    def api(self) -> str: ...

    def upstream_request(self, call: Call, route: Route) -> Outbound:
        """The request for this deployment; raises `Untranslatable` for a body it cannot carry over."""
        ...

    def stream_watch(self, fields: Any, prompt_tokens: int) -> StreamWatch:
        """`prompt_tokens`: the call's prompt estimate, for a format that states the prompt's size before
        the upstream has (a translated Messages stream's `message_start`)."""
        ...

    def answer_usage(self, data: bytes) -> tuple[Usage | None, Any]:
        """A whole answer's usage (None: it reported none) and the answer parsed, where it was."""
        ...

    def answer_body(self, data: bytes, document: Any, cost: int | None, fields: Any) -> bytes:
        """The answer to send the client (with the cost where its format has a place for it)."""
        ...

    def upstream_error_message(self, data: bytes) -> tuple[str, bool]:
        """An upstream error's message, and whether its body is already in the client's error shape."""
        ...


class ToChat(Leg, Protocol):
    """A translator from a client format to chat, which the pivot chains with chat's own translators."""

    def as_chat(self, call: Call, upstream_model: str, stream_usage: bool) -> bytes:
        """The request as chat, keeping a vendor's reasoning for the next translator."""
        ...


class ClientEndpoint(Leg, Protocol):
    """A route of a client format; also the leg for a deployment serving the same wire API (the
    client's bytes, `model` and the usage switch rewritten)."""

    @property
    def name(self) -> str:
        """The client side's row in the leg table (`chat`, `completions`, `embeddings`, `messages`, …)."""
        ...

    @property
    def path(self) -> str:
        """The upstream path, and the usage row's `endpoint`."""
        ...

    @property
    def makes_output(self) -> bool: ...

    @property
    def streams(self) -> bool: ...

    def read(self, raw: bytes) -> Any:
        """The request's fields (a `CallFields`), checked; a 400 in the format's shape otherwise."""
        ...

    def unseen_tokens(self, fields: Any, image_tokens: int) -> int:
        """Prompt tokens the body's size does not show (media parts, a tools preamble)."""
        ...

    def with_output_limit(self, raw: bytes, fields: Any, limit: int, field: str) -> tuple[bytes, Any]:
        """The request with an output limit the client did not set, in the field the provider reads."""
        ...

    def error_body(self, err: GatewayError) -> bytes: ...


class Untranslatable(Exception):
    """A body one format holds that another cannot: raised by a translator for what it checked and
    could not carry over (the caller's 400, or the upstream's 502). Anything else a translator raises
    is a bug, logged as one."""


def decode_body(decoder: msgspec.json.Decoder, raw: bytes, invalid_field: Callable[[msgspec.ValidationError], Any]):
    """A request body decoded into a format's fields, or the 400 for what is wrong with it
    (`invalid_field` words a wrong field the format's way)."""
    if not raw:
        raise invalid_request("Request body is empty; send a JSON object.")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise invalid_field(exc) from None
    except msgspec.DecodeError:
        raise invalid_request("Request body is not valid JSON.") from None
    except RecursionError:
        raise invalid_request("Request body is nested too deeply.") from None


def answered_model(document: object, fallback: str) -> str:
    """The model an upstream's answer (or stream event) names, which a translated answer carries as a
    relayed one does (README: "an answer's `model` is the upstream's name"); `fallback` where it names
    none."""
    model = document.get("model") if document.__class__ is dict else None
    return model if model.__class__ is str and model else fallback


def error_parts(data: bytes) -> tuple[str, dict | None]:
    """An upstream error body's message, and the body when it is a JSON object with an `error` object
    (both OpenAI's and Anthropic's shapes have one), else None."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if parsed.__class__ is dict and parsed.get("error").__class__ is dict:
        return str(parsed["error"].get("message", "")), parsed
    return data[:300].decode("utf-8", "replace").strip(), None


class End(enum.Enum):
    FINAL = "final"


FINAL = End.FINAL
"""What a stream watch's `read` returns for the event that ends a stream."""
