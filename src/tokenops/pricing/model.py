"""Price rows and the arithmetic that turns a :class:`~tokenops.usage.Usage` into a :class:`Cost`.

A :class:`PriceRow` holds the USD price per million tokens of each kind of token for one provider/model,
in force from ``effective_from`` (inclusive, UTC) until ``effective_to`` (exclusive) or until replaced.
``None`` for a price means "not priced separately": cache reads and writes without their own price are
billed at the input price, reasoning tokens at the output price.

Long-context tiers follow the providers' rule: when the call's whole prompt exceeds a tier's threshold,
every token of the call is priced at that tier's prices (not only the tokens above the threshold).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from tokenops import money
from tokenops.usage import Usage

PRICE_FIELDS = (
    "input_per_mtok",
    "cache_read_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_1h_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
)


@dataclass(frozen=True, slots=True)
class LongContextTier:
    """Prices that replace the base prices when the prompt has more than ``above_input_tokens`` tokens."""

    above_input_tokens: int
    input_per_mtok: Decimal | None = None
    cache_read_per_mtok: Decimal | None = None
    cache_write_5m_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceRow:
    provider: str
    model: str
    effective_from: datetime
    source: str
    input_per_mtok: Decimal | None = None
    cache_read_per_mtok: Decimal | None = None
    cache_write_5m_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None
    per_request: Decimal | None = None
    tiers: tuple[LongContextTier, ...] = ()
    effective_to: datetime | None = None
    id: str = field(default="", compare=False)
    # The model's context window in tokens, when the source says it: what bounds the input of a call whose body
    # does not (a PDF, a file by id). Not a price: it is not part of the row's id or equality.
    context_window: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.effective_from.tzinfo is None:
            raise ValueError("PriceRow.effective_from must be timezone-aware (UTC)")
        if not self.id:
            object.__setattr__(self, "id", self.fingerprint())

    def fingerprint(self) -> str:
        """A stable id: the same prices from the same source always get the same id."""
        parts = [self.provider, self.model, self.effective_from.isoformat(), self.source]
        parts += [str(getattr(self, name)) for name in (*PRICE_FIELDS, "per_request")]
        parts += [repr(t) for t in self.tiers]
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
        return f"pr_{digest}"

    def in_force(self, at: datetime) -> bool:
        return self.effective_from <= at and (self.effective_to is None or at < self.effective_to)

    def prices_for(self, usage: Usage) -> dict[str, Decimal | None]:
        """The per-MTok prices that apply to this usage (the highest tier whose threshold it passes)."""
        return self.prices_at(usage.input_tokens)

    def tier_at(self, input_tokens: int) -> LongContextTier | None:
        """The highest long-context tier a call with this many input tokens passes (its prices apply), if any."""
        passed = [t for t in self.tiers if input_tokens > t.above_input_tokens]
        return max(passed, key=lambda t: t.above_input_tokens) if passed else None

    def prices_at(self, input_tokens: int) -> dict[str, Decimal | None]:
        """The per-MTok prices that apply to a call with this many input tokens."""
        prices = {name: getattr(self, name) for name in PRICE_FIELDS}
        for tier in sorted(self.tiers, key=lambda t: t.above_input_tokens):
            if input_tokens > tier.above_input_tokens:
                for name in PRICE_FIELDS:
                    value = getattr(tier, name)
                    if value is not None:
                        prices[name] = value
        return prices


@dataclass(frozen=True, slots=True)
class Cost:
    """The cost of one call, by kind of token; ``total`` is what the ledger records (pico-dollar exact)."""

    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal
    request: Decimal
    total: Decimal
    price_row_id: str


def price_usage(usage: Usage, row: PriceRow) -> Cost:
    """Price a call's usage with one row. Exact: every term is computed unrounded, the total is rounded once."""
    p = row.prices_for(usage)
    input_price = p["input_per_mtok"] or money.ZERO
    cache_read_price = p["cache_read_per_mtok"] if p["cache_read_per_mtok"] is not None else input_price
    w5 = p["cache_write_5m_per_mtok"] if p["cache_write_5m_per_mtok"] is not None else input_price
    # Anthropic's 1-hour writes cost more than 5-minute ones; with no 1-hour price the 5-minute one applies.
    w1h = p["cache_write_1h_per_mtok"] if p["cache_write_1h_per_mtok"] is not None else w5
    output_price = p["output_per_mtok"] or money.ZERO
    reasoning_price = p["reasoning_per_mtok"] if p["reasoning_per_mtok"] is not None else output_price

    c_input = money.per_mtok(input_price, usage.uncached_input_tokens)
    c_read = money.per_mtok(cache_read_price, usage.cache_read_tokens)
    c_write = money.add(
        money.per_mtok(w5, usage.cache_write_5m_tokens), money.per_mtok(w1h, usage.cache_write_1h_tokens)
    )
    c_output = money.add(
        money.per_mtok(output_price, usage.output_tokens - usage.reasoning_tokens),
        money.per_mtok(reasoning_price, usage.reasoning_tokens),
    )
    c_request = row.per_request or money.ZERO
    total = money.quantize(money.add(c_input, c_read, c_write, c_output, c_request))
    return Cost(
        input=c_input,
        cache_read=c_read,
        cache_write=c_write,
        output=c_output,
        request=c_request,
        total=total,
        price_row_id=row.id,
    )
