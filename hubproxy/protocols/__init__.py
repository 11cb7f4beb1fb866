"""Client wire formats: one module per format, each knowing its request fields, its usage fields, its
stream events and its error shape.

What a format module provides (`openai_chat` is the one today; Anthropic Messages and OpenAI
Responses are the next):

- `Endpoint`s: the routes it serves, each with the upstream path, the wire API it needs from a
  provider (`api`), whether it produces output and can stream, and a `read(raw)` that checks the
  body and returns the `CallFields` the gateway needs (model, stream, max output tokens).
- `upstream_body(raw, fields, upstream_model, ...)`: the body a deployment gets when it serves the
  same wire API (the client's bytes, with only `model` and the usage switch rewritten).
- `answer(data, cost_of)`: a whole (non-streamed) answer's usage, and the answer with its cost.
- a `StreamWatch`: the per-stream reader the relay hands each event to; it accumulates usage over
  the events and tells the relay when the stream's usage is final (settle before forwarding).
- `error_body(err)` and `stream_error(message)`: the format's own error shape, rendered only there.

A translator between two formats (a client on one, an upstream on another) is one more module here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    """Tokens of one call as billed. `input` counts every prompt token, cached and cache-written ones
    included; `reasoning` is the part of `output` the model spent thinking."""

    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(slots=True)
class CallFields:
    """What the gateway needs to know of a request, whatever its format."""

    model: str
    stream: bool
    max_output: int | None
    client_wants_usage: bool
    image_parts: int = 0  # images by reference: their tokens are not in the body's size (see billing)


FORWARD, DROP, HOLD, FINAL = range(4)
"""A stream watch's verdict on one event: pass it on; leave it out; keep it back until the stream's usage
is final (an event that carries only usage, which gets the cost added); or: this event ends the
stream (the usage is final now: settle, then send what was held and this event)."""
