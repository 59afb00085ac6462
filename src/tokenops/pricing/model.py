"""Price rows and the arithmetic that turns a :class:`~tokenops.usage.Usage` into a :class:`Cost`.

A :class:`PriceRow` holds the USD price per million tokens of each kind of token for one provider/model,
in force from ``effective_from`` (inclusive, UTC) until ``effective_to`` (exclusive) or until replaced.
``None`` for a price means "not priced separately": cache reads and writes without their own price are
billed at the input price, reasoning tokens at the output price.

A row may be a *variant* (``variant``: the service tier or processing mode it prices, such as ``"flex"``,
``"priority"`` or ``"batch"``; ``""`` is the standard price) and may apply only during some hours of each UTC day
(``hours``: DeepSeek's off-peak discount). Both are part of the row's id and equality; the catalog keeps one
history per (provider, model, variant, hours).

A row may also price what is not text tokens (each ``None`` when the source does not say, and then part of the
row's id only when set, so that rows without them keep their ids): ``input_audio_per_mtok`` /
``output_audio_per_mtok`` (audio tokens; without them audio is billed at the text rates),
``input_image_per_mtok`` / ``output_image_per_mtok`` (image tokens, likewise) and
``web_search_per_k`` (USD per 1,000 server-side web searches, the :attr:`Cost.tools` fee; without it a call's
searches are not priced, and the meter flags the event ``tool_fee_unpriced``) and ``file_search_per_k`` (likewise,
per 1,000 file-search tool calls). Code-interpreter containers are never priced (billed by session time, which
no response reports): a call that ran one is flagged ``tool_fee_unpriced``.

Long-context tiers follow the providers' rule: when the call's whole prompt exceeds a tier's threshold,
every token of the call is priced at that tier's prices (not only the tokens above the threshold).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any, Protocol

from tokenops import money
from tokenops.usage import Usage

# Service tiers that mean the standard price: OpenAI's "default" and "auto", Anthropic's "standard".
STANDARD_TIERS = frozenset(("", "default", "auto", "standard"))

PRICE_FIELDS = (
    "input_per_mtok",
    "cache_read_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_1h_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
)
# Rates a row may have beside PRICE_FIELDS (not in long-context tiers); in the id only when set.
EXTRA_PRICE_FIELDS = ("web_search_per_k", "input_audio_per_mtok", "output_audio_per_mtok", "input_image_per_mtok",
                      "output_image_per_mtok", "file_search_per_k")


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
    # The service tier / processing mode this row prices ("flex", "priority", "batch", …); "" is the standard price.
    variant: str = ""
    # The daily UTC windows [start, end) the row applies in (an end before its start wraps past midnight); empty:
    # all day. DeepSeek's peak and off-peak prices are two rows with complementary windows.
    hours: tuple[tuple[time, time], ...] = ()
    id: str = field(default="", compare=False)
    # The model's context window in tokens, when the source says it: what bounds the input of a call whose body
    # does not (a PDF, a file by id). Not a price: it is not part of the row's id or equality.
    context_window: int | None = field(default=None, compare=False)
    # USD per 1,000 server-side web searches; per million audio tokens (None: text rates). See EXTRA_PRICE_FIELDS.
    web_search_per_k: Decimal | None = None
    input_audio_per_mtok: Decimal | None = None
    output_audio_per_mtok: Decimal | None = None
    input_image_per_mtok: Decimal | None = None  # per million image tokens (None: the text rates)
    output_image_per_mtok: Decimal | None = None
    file_search_per_k: Decimal | None = None  # USD per 1,000 file-search tool calls (OpenAI's Responses API)

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
        # only when set, so that the id of every standard all-day row stays what it was before variants existed
        if self.variant:
            parts.append(f"variant={self.variant}")
        if self.hours:
            parts.append(f"hours={format_hours(self.hours)}")
        for name in EXTRA_PRICE_FIELDS:  # likewise: rows without tool, audio or image rates keep their ids
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
        return f"pr_{digest}"

    def in_force(self, at: datetime) -> bool:
        return (self.effective_from <= at and (self.effective_to is None or at < self.effective_to)
                and self.applies_at(at))  # fmt: skip

    def applies_at(self, at: datetime) -> bool:
        """Whether ``at``'s UTC time of day falls in the row's daily windows (always, for an all-day row)."""
        return not self.hours or in_hours(self.hours, at)

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


def scaled(row: PriceRow, factor: Decimal, variant: str, why: str) -> PriceRow:
    """A row whose every token rate is ``row``'s times ``factor`` (its web-search fee unchanged), recorded as its own row (own id, ``variant``, and a
    ``source`` that says how it was derived), so a cost priced with it traces to the rates it used."""
    def times(value: Decimal | None) -> Decimal | None:
        return None if value is None else value * factor

    # token rates scale (audio and image included); a per-call tool fee (web searches) is not a token price: kept
    rates: dict[str, Any] = {f: times(getattr(row, f)) for f in (*PRICE_FIELDS, "input_audio_per_mtok",
                                                                 "output_audio_per_mtok", "input_image_per_mtok",
                                                                 "output_image_per_mtok")}
    tiers = tuple(replace(t, **{f: times(getattr(t, f)) for f in PRICE_FIELDS}) for t in row.tiers)  # type: ignore[arg-type]
    return replace(row, **rates, per_request=times(row.per_request), tiers=tiers, variant=variant,
                   source=f"{row.source}; {why}", id="")


def tier_variant(tier: object) -> str:
    """The :attr:`PriceRow.variant` that prices a service tier a provider reported or a person asked for:
    ``""`` for the standard tiers (OpenAI's ``default`` and ``auto``, Anthropic's ``standard``, none at all), else
    the tier itself (``flex``, ``priority``, ``batch``, ``scale``, …) lower-cased. Text that is no tier name gives
    ``"unrecognised"``, which no row has: the call is priced at the standard rate and flagged, never trusted."""
    if not isinstance(tier, str):
        return ""
    tier = tier.strip().lower()
    if tier in STANDARD_TIERS:
        return ""
    if len(tier) > 40 or not all(c.isalnum() or c in "_.-" for c in tier):
        return "unrecognised"
    return tier


def in_hours(hours: tuple[tuple[time, time], ...], at: datetime) -> bool:
    """Whether ``at`` (timezone-aware) falls in one of the daily UTC windows ``hours``."""
    t = at.astimezone(UTC).time().replace(tzinfo=None)
    for start, end in hours:
        if (start <= t < end) if start < end else (t >= start or t < end):
            return True
    return False


def format_hours(hours: tuple[tuple[time, time], ...]) -> str:
    """``"16:30-00:30"``, ``"01:00-04:00,06:00-10:00"``: the windows as the ledger and listings show them."""
    return ",".join(f"{_hhmm(a)}-{_hhmm(b)}" for a, b in hours)


def parse_hours(text: str | None) -> tuple[tuple[time, time], ...]:
    """The inverse of :func:`format_hours` (``None`` or ``""``: all day). Raises ValueError on a bad window."""
    out = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        a, sep, b = part.strip().partition("-")
        if not sep:
            raise ValueError(f"hours window {part!r} is not HH:MM-HH:MM")
        start, end = time.fromisoformat(a.strip()), time.fromisoformat(b.strip())
        if start == end or start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError(f"hours window {part!r} is empty or not in plain UTC HH:MM")
        out.append((start, end))
    return tuple(out)


def _hhmm(t: time) -> str:
    return t.isoformat(timespec="seconds" if t.second else "minutes")


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
    tools: Decimal = Decimal(0)  # server-side tool fees (web searches)
    tool_fee_unpriced: bool = False  # searches happened and the row has no price for them: not in the total


class Counts(Protocol):
    """What :func:`price_lines` reads: a :class:`~tokenops.usage.Usage`, or the sums of many calls' usage."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def cache_read_tokens(self) -> int: ...

    @property
    def cache_write_5m_tokens(self) -> int: ...

    @property
    def cache_write_1h_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...

    @property
    def reasoning_tokens(self) -> int: ...

    @property
    def input_audio_tokens(self) -> int: ...

    @property
    def output_audio_tokens(self) -> int: ...

    @property
    def input_image_tokens(self) -> int: ...

    @property
    def output_image_tokens(self) -> int: ...

    @property
    def web_searches(self) -> int: ...

    @property
    def file_searches(self) -> int: ...

    @property
    def code_containers(self) -> int: ...


# What each kind of line is part of in a :class:`Cost`, and how its quantity is counted and priced.
LINE_KINDS: dict[str, tuple[str, str]] = {  # kind -> (Cost field, unit: tokens per million, calls per thousand, calls)
    "input": ("input", "tokens"), "input_audio": ("input", "tokens"), "input_image": ("input", "tokens"),
    "cache_read": ("cache_read", "tokens"), "cache_write_5m": ("cache_write", "tokens"),
    "cache_write_1h": ("cache_write", "tokens"), "output": ("output", "tokens"), "output_audio": ("output", "tokens"),
    "output_image": ("output", "tokens"), "reasoning": ("output", "tokens"), "web_search": ("tools", "searches"),
    "file_search": ("tools", "searches"), "request": ("request", "requests"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PriceLine:
    """One kind of what a call (or a sum of calls) is billed for: ``quantity`` tokens at ``price`` per million,
    searches at ``price`` per thousand, or requests at ``price`` each; ``cost`` is exact (not rounded)."""

    kind: str  # a key of LINE_KINDS
    quantity: int
    price: Decimal
    cost: Decimal


def price_lines(usage: Counts, row: PriceRow, *, prices: dict[str, Decimal | None] | None = None,
                calls: int = 1) -> tuple[list[PriceLine], bool]:  # fmt: skip
    """What ``usage`` is billed for under ``row``, line by line, and whether a server-side tool fee went unpriced
    (the row has no price for searches that happened, or a code-interpreter container ran: not in any line).
    ``prices``: the row's per-MTok prices to use (by default those of its long-context tier for this usage, so a
    sum of calls must pass the tier its calls were in); ``calls``: how many calls ``usage`` sums (each pays the
    row's per-request fee). Lines with nothing to bill are left out. :func:`price_usage` is their sum."""
    p = prices if prices is not None else row.prices_at(usage.input_tokens)
    input_price = p["input_per_mtok"] or money.ZERO
    cache_read_price = p["cache_read_per_mtok"] if p["cache_read_per_mtok"] is not None else input_price
    w5 = p["cache_write_5m_per_mtok"] if p["cache_write_5m_per_mtok"] is not None else input_price
    # Anthropic's 1-hour writes cost more than 5-minute ones; with no 1-hour price the 5-minute one applies.
    w1h = p["cache_write_1h_per_mtok"] if p["cache_write_1h_per_mtok"] is not None else w5
    output_price = p["output_per_mtok"] or money.ZERO
    reasoning_price = p["reasoning_per_mtok"] if p["reasoning_per_mtok"] is not None else output_price

    uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_5m_tokens - usage.cache_write_1h_tokens
    # audio tokens are parts of input and output: at the audio rates when the row has them, else the text rates
    audio_in = min(usage.input_audio_tokens, uncached)  # cached audio: at the cache-read rate
    audio_out = min(usage.output_audio_tokens, usage.output_tokens - usage.reasoning_tokens)
    # image tokens likewise (what the audio left of the uncached input and plain output, should both be reported)
    image_in = min(usage.input_image_tokens, uncached - audio_in)
    image_out = min(usage.output_image_tokens, usage.output_tokens - usage.reasoning_tokens - audio_out)
    lines: list[PriceLine] = []

    def tokens(kind: str, price: Decimal | None, fallback: Decimal, n: int) -> None:
        if n > 0:
            rate = price if price is not None else fallback
            lines.append(PriceLine(kind, n, rate, money.per_mtok(rate, n)))

    tokens("input", input_price, input_price, uncached - audio_in - image_in)
    tokens("input_audio", row.input_audio_per_mtok, input_price, audio_in)
    tokens("input_image", row.input_image_per_mtok, input_price, image_in)
    tokens("cache_read", cache_read_price, cache_read_price, usage.cache_read_tokens)
    tokens("cache_write_5m", w5, w5, usage.cache_write_5m_tokens)
    tokens("cache_write_1h", w1h, w1h, usage.cache_write_1h_tokens)
    tokens("output", output_price, output_price,
           usage.output_tokens - usage.reasoning_tokens - audio_out - image_out)  # fmt: skip
    tokens("output_audio", row.output_audio_per_mtok, output_price, audio_out)
    tokens("output_image", row.output_image_per_mtok, output_price, image_out)
    tokens("reasoning", reasoning_price, reasoning_price, usage.reasoning_tokens)
    if row.per_request and calls > 0:
        lines.append(PriceLine("request", calls, row.per_request, row.per_request * calls))
    # server-side tools: what the row prices is billed; what it does not (or nobody can, as code-interpreter
    # containers billed by session time) leaves the call flagged rather than silently free
    for kind, n, rate in (("web_search", usage.web_searches, row.web_search_per_k),
                          ("file_search", usage.file_searches, row.file_search_per_k)):  # fmt: skip
        if n > 0 and rate is not None:
            lines.append(PriceLine(kind, n, rate, money.per_k(rate, n)))
    unpriced_fee = (usage.web_searches > 0 and row.web_search_per_k is None) or usage.code_containers > 0 \
        or (usage.file_searches > 0 and row.file_search_per_k is None)  # fmt: skip
    return lines, unpriced_fee


def price_usage(usage: Usage, row: PriceRow) -> Cost:
    """Price a call's usage with one row. Exact: every term is computed unrounded, the total is rounded once."""
    lines, unpriced_fee = price_lines(usage, row)
    parts = dict.fromkeys(("input", "cache_read", "cache_write", "output", "request", "tools"), money.ZERO)
    for line in lines:
        part = LINE_KINDS[line.kind][0]
        parts[part] = money.add(parts[part], line.cost)
    return Cost(
        input=parts["input"],
        cache_read=parts["cache_read"],
        cache_write=parts["cache_write"],
        output=parts["output"],
        request=parts["request"],
        total=money.quantize(money.add(*parts.values())),
        price_row_id=row.id,
        tools=parts["tools"],
        tool_fee_unpriced=unpriced_fee,
    )
