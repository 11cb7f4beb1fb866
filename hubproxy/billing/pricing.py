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
from hubproxy.protocols.openai_responses import MIN_OUTPUT_TOKENS
from hubproxy.tokens import ENCLOSING, FEES, PARTS, TOKEN_CLASSES, Usage, part_counts

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


def cost_of(model: Model, prompt_tokens: int, completion_tokens: int) -> int:
    """Exact pico-USD for a prompt and an output at the prices for this prompt size (a hold, an
    estimate: no cached or cache-written tokens known)."""
    input_price, output_price, _ = model.prices_for(prompt_tokens)
    input_price, output_price = served_prices(model, input_price, output_price)
    return token_cost(completion_tokens, output_price) + token_cost(prompt_tokens, input_price)


def served_prices(model: Model, input_price: int | None, output_price: int | None) -> tuple[int, int]:
    """A model's input and output prices, which a model that is served has (unpriced ones are refused
    before a call: `Model.priced`); never billed at a guess."""
    if input_price is None or output_price is None:
        raise ValueError(f"model {model.name!r} has no price: it is never served")
    return input_price, output_price


def hold_cost(model: Model, prompt_tokens: int, output_tokens: int, searches: int = 0) -> int:
    """The worst case of a prompt and an output: each token at the highest price a class it may be
    billed as has (a prompt written to a 1-hour cache costs twice the input price at Anthropic), at
    the prices of any tier the prompt may reach (a prompt bound is not the prompt: the real one may
    fall in a lower tier, which a catalog may price higher). A model with one price per direction
    holds at its input and output prices, as `cost_of`. `searches`: the most web searches the call's
    server tools may make (their `max_uses`), each at the model's search price where it has one."""
    if model.cache_write_price is None and not model.rates and not model.tiers:  # most models: no table
        input_price, output_price = served_prices(model, model.input_price, model.output_price)
        cached_price = model.cached_input_price
        if cached_price is not None and cached_price > input_price:
            input_price = cached_price
        return token_cost(prompt_tokens, input_price) + token_cost(output_tokens, output_price)
    input_price = output_price = search_price = 0
    reached = [t.above + 1 for t in model.tiers if t.above < prompt_tokens]
    for prompt in (0, *reached):
        prices = model.price_table(prompt)
        table_input, table_output = served_prices(model, prices["input_price"], prices["output_price"])
        input_price, output_price = max(input_price, table_input), max(output_price, table_output)
        for part in PARTS:
            price = prices.get(part.price or "")
            if price is not None:
                if "input" in ENCLOSING[part.name]:
                    input_price = max(input_price, price)
                else:
                    output_price = max(output_price, price)
        search_price = max(search_price, prices.get("web_search_price") or 0)
    fees = token_cost(searches, search_price)
    return token_cost(prompt_tokens, input_price) + token_cost(output_tokens, output_price) + fees


def usage_cost(model: Model, usage: Usage) -> int:
    """Exact pico-USD for the tokens a call reported, class by class (`tokens.TOKEN_CLASSES`): a part
    with a price of its own (cached, cache-written, written for an hour) at that price and out of
    every class it is within; the rest at the input and output prices, for this prompt size. A call
    that reported no such part (most) costs what `cost_of` says, without the table."""
    if not any(part_counts(usage)):
        return cost_of(model, usage.input, usage.output)
    prices = model.price_table(usage.input)
    left = {c.name: getattr(usage, c.name) for c in TOKEN_CLASSES}
    cost = 0
    for part in PARTS:
        price, tokens = prices.get(part.price or ""), left[part.name]
        if tokens and price is not None:
            outer = ENCLOSING[part.name]
            tokens = min(tokens, *(left[name] for name in outer))
            cost += token_cost(tokens, price)
            for name in outer:  # billed: out of every class it is within
                left[name] -= tokens
    for fee in FEES:  # requests a server tool made, at the model's price for them (none: not billed)
        price, count = prices.get(fee.price or ""), left[fee.name]
        if count and price is not None:
            cost += token_cost(count, price)
    input_price, output_price = served_prices(model, prices["input_price"], prices["output_price"])
    return cost + token_cost(left["input"], input_price) + token_cost(left["output"], output_price)
