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
from typing import Any

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

    # audio tokens are parts of input and output: at the audio rates when the row has them, else the text rates
    audio_in = min(usage.input_audio_tokens, usage.uncached_input_tokens)  # cached audio: at the cache-read rate
    audio_out = min(usage.output_audio_tokens, usage.output_tokens - usage.reasoning_tokens)
    audio_in_price = row.input_audio_per_mtok if row.input_audio_per_mtok is not None else input_price
    audio_out_price = row.output_audio_per_mtok if row.output_audio_per_mtok is not None else output_price
    # image tokens likewise (what the audio left of the uncached input and plain output, should both be reported)
    image_in = min(usage.input_image_tokens, usage.uncached_input_tokens - audio_in)
    image_out = min(usage.output_image_tokens, usage.output_tokens - usage.reasoning_tokens - audio_out)
    image_in_price = row.input_image_per_mtok if row.input_image_per_mtok is not None else input_price
    image_out_price = row.output_image_per_mtok if row.output_image_per_mtok is not None else output_price

    c_input = money.add(money.per_mtok(input_price, usage.uncached_input_tokens - audio_in - image_in),
                        money.per_mtok(audio_in_price, audio_in), money.per_mtok(image_in_price, image_in))  # fmt: skip
    c_read = money.per_mtok(cache_read_price, usage.cache_read_tokens)
    c_write = money.add(
        money.per_mtok(w5, usage.cache_write_5m_tokens), money.per_mtok(w1h, usage.cache_write_1h_tokens)
    )
    c_output = money.add(
        money.per_mtok(output_price, usage.output_tokens - usage.reasoning_tokens - audio_out - image_out),
        money.per_mtok(audio_out_price, audio_out),
        money.per_mtok(image_out_price, image_out),
        money.per_mtok(reasoning_price, usage.reasoning_tokens),
    )
    c_request = row.per_request or money.ZERO
    # server-side tools: what the row prices is billed; what it does not (or nobody can, as code-interpreter
    # containers billed by session time) leaves the call flagged rather than silently free
    unpriced_fee = (usage.web_searches > 0 and row.web_search_per_k is None) or usage.code_containers > 0 \
        or (usage.file_searches > 0 and row.file_search_per_k is None)  # fmt: skip
    c_tools = money.add(
        money.per_k(row.web_search_per_k, usage.web_searches) if row.web_search_per_k is not None else money.ZERO,
        money.per_k(row.file_search_per_k, usage.file_searches) if row.file_search_per_k is not None else money.ZERO,
    )
    total = money.quantize(money.add(c_input, c_read, c_write, c_output, c_request, c_tools))
    return Cost(
        input=c_input,
        cache_read=c_read,
        cache_write=c_write,
        output=c_output,
        request=c_request,
        total=total,
        price_row_id=row.id,
        tools=c_tools,
        tool_fee_unpriced=unpriced_fee,
    )
