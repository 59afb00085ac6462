"""Money is ``Decimal`` everywhere, never float.

The ledger stores amounts as DECIMAL(38,12): twelve places are pico-dollars, enough to hold the cost of a
single token of the cheapest model exactly (e.g. $0.0375 per million tokens is 0.0000000375 per token).
Arithmetic runs in a local context wide enough that nothing is rounded before :func:`quantize`.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

PLACES = 12
PICO = Decimal(1).scaleb(-PLACES)
MILLION = Decimal(1_000_000)
ZERO = Decimal(0)

# 38 digits is DECIMAL(38,12)'s precision; intermediate products need more room than that.
_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)


def to_decimal(value: object, *, what: str = "amount") -> Decimal:
    """Parse a money or price value given as str, int or Decimal (floats are refused: they are inexact)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"{what} must be a decimal string, not {type(value).__name__} {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise ValueError(f"{what} is not a decimal number: {value!r}") from None
    else:
        raise ValueError(f"{what} must be a decimal string, not {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{what} must be finite: {value!r}")
    return result


# The most a person may set as a budget, rate or cap: a quadrillion dollars is beyond any real spend and far
# inside DECIMAL(38,12) (26 digits before the point).
MAX_USD = Decimal(10) ** 15


def usd_setting(value: object, *, what: str, allow_zero: bool = False) -> Decimal:
    """A USD amount a person sets (a budget, a rate limit, a cap, an approval's spend cap), checked the same way
    on every face (config file, CLI, admin API): a decimal string or integer (a float is inexact), finite, not
    negative (``-0`` included), greater than 0 unless ``allow_zero``, at most :data:`MAX_USD`, and with at most
    :data:`PLACES` decimal places besides trailing zeros (the ledger's resolution: more would be rounded
    silently). Raises ValueError naming ``what``."""
    if isinstance(value, float):
        raise ValueError(f'{what} must be a quoted decimal string like "250.00" (a YAML float is inexact)')
    amount = to_decimal(value, what=what)
    if amount.is_signed():
        raise ValueError(f"{what} must not be negative")
    if amount == 0 and not allow_zero:
        raise ValueError(f"{what} must be greater than 0")
    if amount > MAX_USD:
        raise ValueError(f"{what} must be at most {MAX_USD:f} (10^15) USD")
    _, digits, exponent = amount.as_tuple()
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if amount != 0 and isinstance(exponent, int) and exponent + trailing_zeros < -PLACES:
        raise ValueError(f"{what} has more than {PLACES} decimal places (the ledger's resolution is ${PICO:f})")
    return amount


def quantize(value: Decimal) -> Decimal:
    """Round to pico-dollars (half-even), the ledger's resolution."""
    return value.quantize(PICO, context=_CONTEXT)


def per_mtok(price_per_million: Decimal, tokens: int) -> Decimal:
    """Exact cost of ``tokens`` at a price quoted per million tokens (not yet rounded)."""
    return _CONTEXT.divide(_CONTEXT.multiply(price_per_million, Decimal(tokens)), MILLION)


def per_k(price_per_thousand: Decimal, count: int) -> Decimal:
    """Exact cost of ``count`` calls at a price quoted per thousand (web searches), not yet rounded."""
    return _CONTEXT.divide(_CONTEXT.multiply(price_per_thousand, Decimal(count)), Decimal(1000))


def add(*values: Decimal) -> Decimal:
    total = ZERO
    for v in values:
        total = _CONTEXT.add(total, v)
    return total


def format_usd(value: Decimal | None) -> str:
    """Exact fixed-point string: no exponent, trailing zeros trimmed, at least two places ("0.00", "0.000123")."""
    if value is None:
        return "unpriced"
    text = format(value, "f")
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0")
    else:
        whole, frac = text, ""
    if len(frac) < 2:
        frac = frac.ljust(2, "0")
    if whole in ("-0", "") and set(frac) == {"0"}:
        whole = "0"
    return f"{whole}.{frac}"
