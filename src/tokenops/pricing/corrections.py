"""Reviewed corrections to genai-prices' data, shipped with TokenOps and applied on top of it.

genai-prices is maintained by hand like any price list, and now and then it is wrong about a price a provider
published. ``corrections.yaml`` (beside this module, installed with the package) lists TokenOps' reviewed
fixes, each with the provider's published price as its ``source`` (a URL), the day it was ``checked`` and a
``note`` saying what is wrong:

.. code-block:: yaml

    corrections:
      - provider: openai            # genai-prices' provider id
        model: o3                   # genai-prices' model id
        effective_to: 2025-06-10    # optional, exclusive; effective_from is optional too (inclusive)
        set: {cache_read_per_mtok: "2.50"}
        source: https://openai.com/api/pricing/
        checked: 2026-12-02
        note: the cached-input price before the 2025-06-10 cut was $2.50

A correction *patches* the model's price history: within ``[effective_from, effective_to)`` each row gets the
prices under ``set`` (any of the six ``*_per_mtok`` prices, ``per_request``, or ``tiers``, which replaces the
row's long-context tiers); a row that straddles a boundary is split there, and the rest of the history is left
as genai-prices has it. A corrected row's ``source`` says both where it came from and the correction's URL.
Where genai-prices already has the corrected prices nothing changes, so a fixed upstream data file makes a
correction moot instead of wrong, and a correction for a model the data does not have is skipped.

The file's ``tool_fees:`` list gives a provider's per-use tool fees that genai-prices does not carry to every
row of that provider (every model, every service tier) that has no such rate, each with its ``source``,
``checked`` and ``note`` like a correction:

.. code-block:: yaml

    tool_fees:
      - provider: openai
        set: {file_search_per_k: "2.50"}   # USD per 1,000 file-search tool calls
        source: https://openai.com/api/pricing/
        checked: 2026-12-02
        note: Responses API file search, $2.50 per 1,000 tool calls, whichever model calls it

A malformed file is a :class:`~tokenops.errors.ConfigError` naming the file, the line and the problem.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokenops.errors import ConfigError
from tokenops.pricing.entries import Moment, Name, Price, TierEntry, Variant
from tokenops.pricing.model import PRICE_FIELDS, PriceRow
from tokenops.yamlpaths import format_loc, line_of

__all__ = ["CORRECTIONS_FILE", "Correction", "PriceFix", "ToolFee", "apply_corrections", "apply_tool_fees",
           "load_corrections", "load_tool_fees"]

CORRECTIONS_FILE = Path(__file__).with_name("corrections.yaml")


def _source_url(v: str) -> str:
    if not v.startswith("https://") or len(v) <= len("https://") or any(c.isspace() for c in v):
        raise ValueError("source must be the https:// URL of the provider's published price")
    return v


# the provider's published price, as an https:// URL
Source = Annotated[str, Field(max_length=500), AfterValidator(_source_url)]


class PriceFix(BaseModel):
    """The ``set:`` of a correction: the prices it gives the rows it covers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    input_per_mtok: Price | None = None
    cache_read_per_mtok: Price | None = None
    cache_write_5m_per_mtok: Price | None = None
    cache_write_1h_per_mtok: Price | None = None
    output_per_mtok: Price | None = None
    reasoning_per_mtok: Price | None = None
    per_request: Price | None = None
    tiers: tuple[TierEntry, ...] | None = None

    @model_validator(mode="after")
    def _sets_something(self) -> PriceFix:
        if not self.values():
            raise ValueError("set: needs at least one price (or tiers)")
        if self.tiers is not None:
            thresholds = [t.above_input_tokens for t in self.tiers]
            if len(set(thresholds)) != len(thresholds):
                raise ValueError(f"tiers must have distinct above_input_tokens, got {thresholds}")
        return self

    def values(self) -> dict[str, Any]:
        """The :class:`PriceRow` fields this fix sets, as row values."""
        out: dict[str, Any] = {name: getattr(self, name) for name in (*PRICE_FIELDS, "per_request")}
        out = {name: value for name, value in out.items() if value is not None}
        if self.tiers is not None:
            out["tiers"] = tuple(t.to_tier() for t in sorted(self.tiers, key=lambda t: t.above_input_tokens))
        return out


class Correction(BaseModel):
    """One reviewed correction of one genai-prices model's prices over a span of time."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, str_strip_whitespace=True, populate_by_name=True)

    provider: Name
    model: Name
    variant: Variant = ""  # the rows it corrects: the standard ones, or one service tier's
    effective_from: Moment | None = None
    effective_to: Moment | None = None
    fix: PriceFix = Field(alias="set")
    source: Source
    checked: date
    note: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _span(self) -> Correction:
        if self.effective_from and self.effective_to and self.effective_to <= self.effective_from:
            raise ValueError("effective_to must be after effective_from")
        return self

    def covers(self, row: PriceRow) -> bool:
        """Whether some moment of ``row``'s validity falls in this correction's span."""
        starts_before_row_ends = row.effective_to is None or self.effective_from is None or (
            self.effective_from < row.effective_to
        )
        ends_after_row_starts = self.effective_to is None or row.effective_from < self.effective_to
        return starts_before_row_ends and ends_after_row_starts


class ToolFeeFix(BaseModel):
    """The ``set:`` of a tool fee: per-use rates (USD per 1,000 uses)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    file_search_per_k: Price | None = None
    web_search_per_k: Price | None = None

    @model_validator(mode="after")
    def _sets_something(self) -> ToolFeeFix:
        if not self.values():
            raise ValueError("set: needs at least one rate")
        return self

    def values(self) -> dict[str, Any]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


class ToolFee(BaseModel):
    """One provider's per-use tool fee, for every row of that provider without its own."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, str_strip_whitespace=True, populate_by_name=True)

    provider: Name
    fix: ToolFeeFix = Field(alias="set")
    source: Source
    checked: date
    note: Annotated[str, Field(min_length=1)]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    corrections: tuple[Correction, ...] = ()
    tool_fees: tuple[ToolFee, ...] = ()


def load_corrections(path: Path | None = None) -> tuple[Correction, ...]:
    """The corrections of ``path`` (default: the file shipped with TokenOps, read once per process)."""
    return (_shipped() if path is None else _parse(path)).corrections


def load_tool_fees(path: Path | None = None) -> tuple[ToolFee, ...]:
    """The tool fees of ``path`` (default: the file shipped with TokenOps, read once per process)."""
    return (_shipped() if path is None else _parse(path)).tool_fees


def apply_tool_fees(rows: Iterable[PriceRow], fees: Iterable[ToolFee]) -> tuple[PriceRow, ...]:
    """``rows`` with each fee's rates given to every row of its provider that has none of its own (a row that has
    one, from genai-prices or a config, keeps it)."""
    by_provider: dict[str, list[ToolFee]] = {}
    for fee in fees:
        by_provider.setdefault(fee.provider, []).append(fee)
    out = []
    for row in rows:
        for fee in by_provider.get(row.provider, ()):
            missing = {name: value for name, value in fee.fix.values().items() if getattr(row, name) is None}
            if missing:
                row = dataclasses.replace(row, **missing, source=f"{row.source}, {', '.join(missing)} per {fee.source}",
                                          id="")  # fmt: skip
        out.append(row)
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _shipped() -> _File:
    return _parse(CORRECTIONS_FILE)


def _parse(path: Path) -> _File:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=file) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', None) or exc}", file=file, line=mark.line + 1 if mark else None
        ) from None
    except ValueError as exc:  # a scalar YAML cannot build, e.g. the date 2025-13-45
        raise ConfigError(f"a value cannot be read: {str(exc).split(';')[0]}", file=file) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with a `corrections:` list", file=file, line=1)
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "this key is required"
        raise ConfigError(msg, file=file, path=format_loc(loc) or None, line=line_of(root, loc)) from None
    _check_overlaps(parsed.corrections, root, file)
    return parsed


def _check_overlaps(corrections: tuple[Correction, ...], root: yaml.Node | None, file: str) -> None:
    """Two corrections of one model over the same moment would make the result depend on their order."""
    for i, later in enumerate(corrections):
        for j, earlier in enumerate(corrections[:i]):
            if (earlier.provider, earlier.model, earlier.variant) != (later.provider, later.model, later.variant):
                continue
            if _overlap(earlier, later):
                raise ConfigError(
                    f"overlaps corrections[{j}]: two corrections of {later.provider}/{later.model} cover the same time",
                    file=file, path=f"corrections[{i}]", line=line_of(root, ("corrections", i)),
                )  # fmt: skip


def _overlap(a: Correction, b: Correction) -> bool:
    """Whether the spans ``[effective_from, effective_to)`` of ``a`` and ``b`` share a moment (None: open)."""
    a_first = a.effective_to is not None and b.effective_from is not None and a.effective_to <= b.effective_from
    b_first = b.effective_to is not None and a.effective_from is not None and b.effective_to <= a.effective_from
    return not (a_first or b_first)


def apply_corrections(rows: Iterable[PriceRow], corrections: Iterable[Correction]) -> tuple[PriceRow, ...]:
    """``rows`` (a whole catalog's base rows, each model's history chained) with ``corrections`` applied.

    A correction applies to the rows of its ``variant`` ("" — the standard rows — unless it names one). Where it
    gives the daily-windowed rows of one period (DeepSeek's peak and off-peak prices) the same prices, they
    become one all-day row: a price change that ended an off-peak discount is one correction."""
    by_key: dict[tuple[str, str, str], list[Correction]] = {}
    for c in corrections:
        by_key.setdefault((c.provider, c.model, c.variant), []).append(c)
    out: list[PriceRow] = []
    for row in rows:
        pieces = [row]
        for c in by_key.get((row.provider, row.model, row.variant), ()):
            pieces = [part for piece in pieces for part in _patch(piece, c)]
        out.extend(pieces)
    return _merge_windows(out) if by_key else tuple(out)


def _merge_windows(rows: list[PriceRow]) -> tuple[PriceRow, ...]:
    """Corrected windowed rows of one period whose prices are now equal, as one row (all day when they covered it)."""
    groups: dict[tuple[Any, ...], list[PriceRow]] = {}
    for row in rows:
        if row.hours and "corrected per" in row.source:
            groups.setdefault((row.provider, row.model, row.variant, row.effective_from, row.effective_to), []).append(row)
    merged: dict[int, PriceRow | None] = {}
    for group in groups.values():
        first = group[0]
        same = all(dataclasses.replace(r, hours=()) == dataclasses.replace(first, hours=()) for r in group)
        if len(group) < 2 or not same:
            continue
        windows = tuple(sorted(w for r in group for w in r.hours))
        hours = () if _whole_day(windows) else windows
        merged[id(first)] = dataclasses.replace(first, hours=hours, id="")
        for r in group[1:]:
            merged[id(r)] = None
    out = []
    for row in rows:
        replacement = merged.get(id(row), row)
        if replacement is not None:
            out.append(replacement)
    return tuple(out)


def _whole_day(windows: tuple[Any, ...]) -> bool:
    """Whether daily windows (as :attr:`PriceRow.hours`) cover all 24 hours without overlap."""
    seconds = 0
    for start, end in windows:
        a, b = start.hour * 3600 + start.minute * 60 + start.second, end.hour * 3600 + end.minute * 60 + end.second
        seconds += (b - a) % 86400
    return seconds == 86400


def _patch(row: PriceRow, c: Correction) -> list[PriceRow]:
    """``row`` split at the correction's boundaries, the part inside them with the corrected prices."""
    values = c.fix.values()
    if not c.covers(row) or all(getattr(row, name) == value for name, value in values.items()):
        return [row]
    start = row.effective_from if c.effective_from is None else max(row.effective_from, c.effective_from)
    ends = [e for e in (row.effective_to, c.effective_to) if e is not None]
    end = min(ends) if ends else None
    out = []
    if start > row.effective_from:
        out.append(dataclasses.replace(row, effective_to=start))  # the same id: the same price from the same start
    out.append(
        dataclasses.replace(row, **values, effective_from=start, effective_to=end,
                            source=f"{row.source}, corrected per {c.source}", id="")  # fmt: skip
    )
    if end is not None and (row.effective_to is None or end < row.effective_to):
        out.append(dataclasses.replace(row, effective_from=end, id=""))
    return out


