"""What a call costs: the bound held before it, the exact charge after it. Pure functions.

Before a call goes upstream its worst case is held: a prompt bound that holds for any text, plus
`max_tokens` of output for each choice the call asks for (`output_limits`). A byte-level tokenizer
(GPT, Llama, Qwen, DeepSeek, Claude) never makes more tokens than the text has bytes, and the JSON
around the text (quotes, keys, `{"role":"user","content":…}`) outweighs the few tokens a chat
template adds per message, so the body's size in bytes plus PROMPT_SLACK (the reply's priming
tokens) bounds the prompt of any text: CJK, digits or one-letter words alike. What the body's size
does not show (images given by URL, a template's fixed preamble for tools) the protocol module
counts as `unseen` tokens. When the call ends the hold is replaced by the exact cost of the tokens
the upstream reported, or by an estimate (body bytes / `bytes_per_token`) marked as such.
"""

from __future__ import annotations

from hubproxy.config import Model
from hubproxy.money import token_cost
from hubproxy.protocols import Usage
from hubproxy.protocols.openai_responses import MIN_OUTPUT_TOKENS

PROMPT_SLACK = 16


def prompt_bound(body_bytes: int, unseen: int) -> int:
    """At most this many prompt tokens, whatever the text (see the module's docstring)."""
    return body_bytes + unseen + PROMPT_SLACK


def output_limits(asked: int | None, model_max: int | None, default: int) -> tuple[int, int | None]:
    """(output tokens to hold per choice, a limit to send upstream or None) for a call that asked for
    `asked` at most (None: no limit given).

    The hold must be a real bound: the upstream stops at the client's limit, or at the model's own
    maximum where config.toml says what it is; with neither, hubproxy sends `default` as the limit
    (else an honest long answer, a reasoning model's 32k+ say, would spend past the hold)."""
    if asked is not None:
        held = asked if model_max is None else min(asked, model_max)
        return max(held, MIN_OUTPUT_TOKENS), None  # a Responses upstream makes that much of a smaller limit
    if model_max is not None:
        return model_max, None
    return default, default


def estimate_prompt_tokens(body_bytes: int, bytes_per_token: int) -> int:
    """A likely count of prompt tokens from the request size, for a call whose usage never came."""
    return max(1, -(-body_bytes // bytes_per_token))


def cost_of(model: Model, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, written: int = 0) -> int:
    """Exact pico-USD at the prices for this prompt size (a model's tiers). Prompt tokens served from the
    provider's cache are billed at the cached price and tokens written to it at the cache-write price,
    where the model has those (else at the input price)."""
    input_price, output_price, cached_price = model.prices_for(prompt_tokens)
    cost = token_cost(completion_tokens, output_price)
    plain = prompt_tokens
    if cached_tokens and cached_price is not None:
        cached = min(cached_tokens, plain)
        cost += token_cost(cached, cached_price)
        plain -= cached
    write_price = model.cache_write_price
    if written and write_price is not None:
        written = min(written, plain)
        cost += token_cost(written, write_price)
        plain -= written
    return cost + token_cost(plain, input_price)


def usage_cost(model: Model, usage: Usage) -> int:
    return cost_of(model, usage.input, usage.output, usage.cached, usage.cache_write)
