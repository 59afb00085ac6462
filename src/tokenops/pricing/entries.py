"""A price row as written in the config file's ``prices:`` list, validated before the server starts.

.. code-block:: yaml

    prices:
      - {provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08",
         effective_from: 2025-01-01}
      - provider: anthropic
        model: claude-sonnet-4-0
        input_per_mtok: "3"
        output_per_mtok: "15"
        effective_from: 2025-08-12
        tiers: [{above_input_tokens: 200000, input_per_mtok: "6", output_per_mtok: "22.50"}]

Prices are USD per million tokens (``per_request`` is USD per call), given as quoted decimal strings or
integers. ``input_per_mtok`` and ``output_per_mtok`` are required, so that no kind of token is billed at $0
by omission (write ``"0"`` for a free one); the cache and reasoning prices default to the input and output
prices as in :func:`~tokenops.pricing.model.price_usage`. Optional rates beside them (not in ``tiers``):
``web_search_per_k`` (USD per 1,000 server-side web searches; without it a call's searches are not priced and its
event is flagged ``tool_fee_unpriced``), ``file_search_per_k`` (likewise, per 1,000 file-search tool calls),
``input_audio_per_mtok`` / ``output_audio_per_mtok`` and
``input_image_per_mtok`` / ``output_image_per_mtok`` (audio and image tokens; without them, the text rates). ``effective_from`` is a date (midnight UTC) or a
datetime (one without a time zone is UTC). Each entry becomes one :class:`PriceRow` through :meth:`to_row`;
the catalog (:mod:`tokenops.pricing.catalog`) turns entries for the same model into a history.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tokenops import money
from tokenops.pricing.model import EXTRA_PRICE_FIELDS, STANDARD_TIERS, LongContextTier, PriceRow

__all__ = ["PriceEntry", "TierEntry", "Variant"]


def _price(value: Any) -> Decimal:
    if isinstance(value, float):
        # YAML reads an unquoted 0.05 as a binary float, 0.05000000000000000277…; converting it back (even via
        # repr) would be guessing what was meant, and a wrong guess is a wrong bill on every call. Prices are
        # exact, so the file must hold the exact text.
        raise ValueError(
            f'prices must be quoted decimal strings, e.g. "{value!r}": an unquoted number is read as an '
            "inexact binary float"
        )
    result = money.to_decimal(value, what="price")
    if result < 0:
        raise ValueError(f"price must not be negative, got {value!r}")
    return result


def _moment(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if isinstance(value, str):
        return value  # ISO text: pydantic parses it
    # pydantic would read a number as a Unix timestamp; a bare year like 2025 is a typo, not 1970-01-01T00:33:45.
    raise ValueError(f"effective_from must be a date (2025-01-01) or a datetime, not {type(value).__name__}")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Price = Annotated[Decimal, BeforeValidator(_price)]
Moment = Annotated[datetime, BeforeValidator(_moment), AfterValidator(_utc)]
Name = Annotated[str, Field(min_length=1)]


def _variant(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in STANDARD_TIERS:
        return ""  # "default", "standard", "auto": the standard price
    return value


Variant = Annotated[str, BeforeValidator(_variant), Field(max_length=40, pattern=r"^[a-z0-9_.-]*$")]


class TierEntry(BaseModel):
    """Long-context prices for calls whose whole prompt has more than ``above_input_tokens`` tokens."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    above_input_tokens: Annotated[int, Field(strict=True, ge=0)]
    input_per_mtok: Price | None = None
    cache_read_per_mtok: Price | None = None
    cache_write_5m_per_mtok: Price | None = None
    cache_write_1h_per_mtok: Price | None = None
    output_per_mtok: Price | None = None
    reasoning_per_mtok: Price | None = None

    @model_validator(mode="after")
    def _has_a_price(self) -> TierEntry:
        if all(getattr(self, name) is None for name in _TOKEN_PRICES):
            raise ValueError("a tier needs at least one price")
        return self

    def to_tier(self) -> LongContextTier:
        return LongContextTier(
            above_input_tokens=self.above_input_tokens, **{name: getattr(self, name) for name in _TOKEN_PRICES}
        )


_TOKEN_PRICES = (
    "input_per_mtok",
    "cache_read_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_1h_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
)


class PriceEntry(BaseModel):
    """One entry of the config's ``prices:`` list: the price of one provider/model from a date on."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, str_strip_whitespace=True)

    provider: Name
    model: Name
    effective_from: Moment
    input_per_mtok: Price
    output_per_mtok: Price
    cache_read_per_mtok: Price | None = None
    cache_write_5m_per_mtok: Price | None = None
    cache_write_1h_per_mtok: Price | None = None
    reasoning_per_mtok: Price | None = None
    per_request: Price | None = None
    web_search_per_k: Price | None = None  # USD per 1,000 web searches
    file_search_per_k: Price | None = None  # USD per 1,000 file-search tool calls
    input_audio_per_mtok: Price | None = None
    output_audio_per_mtok: Price | None = None
    input_image_per_mtok: Price | None = None
    output_image_per_mtok: Price | None = None
    tiers: tuple[TierEntry, ...] = ()
    context_window: int | None = Field(None, gt=0, le=1_000_000_000)
    # the service tier this row prices ("flex", "priority", "batch", …); absent: the standard price
    variant: Variant = ""

    @model_validator(mode="after")
    def _distinct_tiers(self) -> PriceEntry:
        thresholds = [t.above_input_tokens for t in self.tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"tiers must have distinct above_input_tokens, got {thresholds}")
        return self

    def to_row(self, source: str) -> PriceRow:
        """The catalog row for this entry; ``source`` says where it came from (e.g. ``"config tokenops.yaml"``)."""
        return PriceRow(
            provider=self.provider,
            model=self.model,
            effective_from=self.effective_from,
            source=source,
            context_window=self.context_window,
            variant=self.variant,
            per_request=self.per_request,
            tiers=tuple(t.to_tier() for t in sorted(self.tiers, key=lambda t: t.above_input_tokens)),
            **{name: getattr(self, name) for name in (*_TOKEN_PRICES, *EXTRA_PRICE_FIELDS)},
        )
