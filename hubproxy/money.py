"""Exact integer money.

Every amount hubproxy stores is an integer number of pico-USD (1e-12 USD). Prices are integer
micro-USD per 1M tokens, so `tokens * price` is already an exact pico-USD amount: no division,
no rounding and no float anywhere on the money path.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

PICO_PER_USD = 10**12
MICRO_PER_USD = 10**6
MAX_BALANCE_USD = 1_000_000


PLAIN_NUMBER = re.compile(r"[-+]?\$?[-+]?(\d+(\.\d*)?|\.\d+)")


class MoneyError(ValueError):
    """A user-typed amount or price that cannot be represented exactly."""


def _decimal(text: str | int | float | Decimal, what: str) -> Decimal:
    """Plain decimal notation only: "1e3" is refused, not read as 1,000 (nobody types an exponent
    for money on purpose)."""
    typed = str(text).strip()
    if not PLAIN_NUMBER.fullmatch(typed):
        raise MoneyError(f"{what} must be a plain number of USD like 5 or 0.25, got {text!r}")
    try:
        value = Decimal(typed.replace("$", ""))
    except InvalidOperation:
        raise MoneyError(f"{what} must be a number of USD, got {text!r}") from None
    if not value.is_finite():
        raise MoneyError(f"{what} must be a finite number, got {text!r}")
    return value


def parse_usd(text: str | int | float, *, what: str = "amount", allow_negative: bool = False) -> int:
    """USD as typed by a user ("5", "0.01", "$2.50") → pico-USD, refusing anything inexact."""
    value = _decimal(text, what)
    if value < 0 and not allow_negative:
        raise MoneyError(f"{what} must not be negative, got {text!r}")
    if abs(value) > MAX_BALANCE_USD:
        raise MoneyError(f"{what} must be at most {MAX_BALANCE_USD} USD, got {text!r}")
    pico = value * PICO_PER_USD
    if pico != pico.to_integral_value():
        raise MoneyError(f"{what} has more than 12 decimal places: {text!r}")
    return int(pico)


def parse_price(text: str | int | float | Decimal, *, what: str = "price") -> int:
    """USD per 1M tokens ("0.27") → integer micro-USD per 1M tokens (270000)."""
    value = _decimal(text, what)
    if value < 0:
        raise MoneyError(f"{what} must not be negative, got {text!r}")
    if value > 100_000:
        raise MoneyError(f"{what} looks wrong: {text!r} USD per 1M tokens")
    micro = value * MICRO_PER_USD
    if micro != micro.to_integral_value():
        raise MoneyError(f"{what} has more than 6 decimal places: {text!r}")
    return int(micro)


def token_cost(tokens: int, price_micro_per_m: int) -> int:
    """Cost in pico-USD of `tokens` at a price in micro-USD per 1M tokens (exact by construction)."""
    return tokens * price_micro_per_m


def format_usd(pico: int, *, min_places: int = 2) -> str:
    """pico-USD → exact decimal USD string, trailing zeros trimmed ("0.000297", "5.00")."""
    sign = "-" if pico < 0 else ""
    whole, frac = divmod(abs(pico), PICO_PER_USD)
    digits = f"{frac:012d}".rstrip("0")
    if len(digits) < min_places:
        digits = digits.ljust(min_places, "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def format_price(micro_per_m: int) -> str:
    """micro-USD per 1M tokens → decimal USD per 1M tokens string ("0.27")."""
    whole, frac = divmod(micro_per_m, MICRO_PER_USD)
    digits = f"{frac:06d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)
