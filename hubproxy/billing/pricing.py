"""What a call costs: reservations before it, exact charges after it. Pure functions and records.

A call first reserves its worst case (estimated prompt plus `max_tokens` of output) so parallel
calls cannot spend the same balance twice; when it ends, the reservation is replaced by the exact
cost of the tokens the upstream reported, or by an estimate marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubproxy.config import Model
from hubproxy.money import token_cost


@dataclass(slots=True)
class Reservation:
    id: str
    user_id: int
    key_id: str
    model: str
    provider: str
    upstream_model: str
    endpoint: str
    stream: bool
    amount: int
    prompt_tokens: int
    prompt_cost: int

    def row(self) -> tuple:
        """The fields in order (dataclasses.astuple deep-copies each one: ~100k instructions)."""
        return (
            self.id,
            self.user_id,
            self.key_id,
            self.model,
            self.provider,
            self.upstream_model,
            self.endpoint,
            self.stream,
            self.amount,
            self.prompt_tokens,
            self.prompt_cost,
        )


@dataclass(slots=True)
class CallRecord:
    """One finished call, as written to `usage` (and to `ledger` when it cost something)."""

    reservation: Reservation
    prompt_tokens: int
    completion_tokens: int
    cost: int
    estimated: bool
    status: str
    http_status: int
    latency_ms: int
    persisted: bool = False
    attempts: str = ""
    cached_tokens: int = 0
    budget_held: bool = False  # workers: a hold on the key's spend cap to drop with this record


def estimate_prompt_tokens(body_bytes: int, bytes_per_token: int) -> int:
    """An upper-leaning guess of prompt tokens from the request size (no tokenizer on the hot path)."""
    return max(1, -(-body_bytes // bytes_per_token))


def cost_of(model: Model, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
    """Exact pico-USD at the prices for this prompt size (a model's tiers); prompt tokens served from
    the provider's cache are billed at the cached price when there is one (else at the input price)."""
    input_price, output_price, cached_price = model.prices_for(prompt_tokens)
    cost = token_cost(completion_tokens, output_price)
    if cached_tokens and cached_price is not None:
        cached = min(cached_tokens, prompt_tokens)
        return cost + token_cost(prompt_tokens - cached, input_price) + token_cost(cached, cached_price)
    return cost + token_cost(prompt_tokens, input_price)


def reservation_amount(model: Model, prompt_tokens: int, max_tokens: int) -> int:
    return cost_of(model, prompt_tokens, max_tokens)


def read_usage(usage: object) -> tuple[int, int, int] | None:
    """(prompt, completion, cached prompt) tokens from an upstream `usage` object, or None if it has none.

    Cached prompt tokens: OpenAI's `prompt_tokens_details.cached_tokens` or DeepSeek's
    `prompt_cache_hit_tokens`.
    """
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if completion is None:
        completion = 0
    total = usage.get("total_tokens")
    if prompt is None and isinstance(total, int):
        prompt = total - completion
    if not (isinstance(prompt, int) and isinstance(completion, int)) or prompt < 0 or completion < 0:
        return None
    if isinstance(prompt, bool) or isinstance(completion, bool):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else usage.get("prompt_cache_hit_tokens")
    if not isinstance(cached, int) or isinstance(cached, bool) or cached < 0:
        cached = 0
    return prompt, completion, min(cached, prompt)
