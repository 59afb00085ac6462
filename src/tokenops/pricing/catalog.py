"""The price catalog: every price row, with history, and the lookup the gateway does on each call.

A catalog is built once from base rows (genai-prices' data, the bundled snapshot or the file ``tokenops prices
update`` installed, with TokenOps' reviewed corrections applied: :func:`load_catalog`) and override rows (the
config's ``prices:`` list), then only read. Rows are grouped by (provider, model) into a *history*: rows ordered by
``effective_from``, each closed by the next one's start, so exactly one row is in force at any time from
the first start on.

Overrides replace, they do not merge: when the config has rows for a (provider, model), the earliest of them,
at date D, ends the base history at D (base rows that started before D keep pricing calls before D; base rows
from D on are dropped), and the config rows form the history from D on.

Lookup (``lookup(["local", "openai"], "gpt-4o-2024-08-06", at)``) tries each provider in order: the exact
model name first, then the same name ignoring case, then the match logic (genai-prices' own for the built-in
catalog), and returns the row in force at ``at`` from the first provider that has one. A model that no
provider knows gives ``None``, which callers record as *unpriced*: a missing price is never $0.

Everything a lookup needs is precomputed in dicts; the one thing that is computed on demand, a name's match
(a walk over regexes), is remembered per instance in a bounded dict.
"""

from __future__ import annotations

import dataclasses
import functools
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tokenops.pricing.model import PriceRow, format_hours

if TYPE_CHECKING:
    from tokenops.pricing.genai import GenaiData

__all__ = ["Matcher", "PriceCatalog", "base_rows", "load_catalog"]

Matcher = Callable[[str, str], tuple[str, str] | None]
"""``matcher(provider, model_ref)`` → the (provider, model) key of the rows that price ``model_ref``, or None."""

_Key = tuple[str, str]
# A *line*: the rows of one (provider, model, variant, hours), each ended by the next one's start.
_LineKey = tuple[str, str, str, str]
_MISSING = object()


class PriceCatalog:
    """Immutable set of price rows with history, looked up by provider, model name and time.

    >>> from datetime import UTC, datetime
    >>> from decimal import Decimal
    >>> row = PriceRow(provider="local", model="llama-3.1-8b", effective_from=datetime(2025, 1, 1, tzinfo=UTC),
    ...                source="config", input_per_mtok=Decimal("0.05"), output_per_mtok=Decimal("0.08"))
    >>> catalog = PriceCatalog([row])
    >>> catalog.lookup(["local"], "llama-3.1-8b", datetime(2025, 6, 1, tzinfo=UTC)) is row
    True
    >>> catalog.lookup(["local"], "llama-3.1-8b", datetime(2024, 6, 1, tzinfo=UTC)) is None
    True
    """

    def __init__(
        self,
        rows: Iterable[PriceRow],
        overrides: Iterable[PriceRow] = (),
        *,
        matcher: Matcher | None = None,
        match_cache_size: int = 4096,
    ) -> None:
        base = _group(rows, "catalog")
        extra = _group(overrides, "override")
        # Overrides replace per (provider, model): the earliest config row, of any variant or hours, ends every
        # built-in line of that model.
        cutover: dict[_Key, datetime] = {}
        for line_key, config_rows in extra.items():
            key = line_key[:2]
            cutover[key] = min(cutover.get(key, config_rows[0].effective_from), config_rows[0].effective_from)
        lines: dict[_LineKey, tuple[PriceRow, ...]] = {}
        for line_key in base.keys() | extra.keys():
            cut = cutover.get(line_key[:2])
            kept = base.get(line_key, [])
            if cut is not None:
                kept = [_end_by(r, cut) for r in kept if r.effective_from < cut]
            if kept or line_key in extra:
                lines[line_key] = (*kept, *extra.get(line_key, []))

        # per (provider, model, variant): the lines to try, each with its start times for a bisect
        self._lines: dict[tuple[str, str, str], list[tuple[tuple[datetime, ...], tuple[PriceRow, ...]]]] = {}
        histories: dict[_Key, list[PriceRow]] = {}
        for line_key in sorted(lines):
            line = lines[line_key]
            self._lines.setdefault(line_key[:3], []).append((tuple(r.effective_from for r in line), line))
            histories.setdefault(line_key[:2], []).extend(line)
        self._histories = {key: tuple(sorted(rows, key=_row_order)) for key, rows in histories.items()}
        self._by_lower: dict[_Key, _Key] = {}
        for provider, model in sorted(self._histories):
            self._by_lower.setdefault((provider, model.lower()), (provider, model))
        self._all = tuple(row for key in sorted(self._histories) for row in self._histories[key])
        self._by_id = {row.id: row for row in self._all}
        self._matcher = matcher
        self._match_cache_size = match_cache_size
        self._matches: dict[_Key, _Key | None] = {}

    def lookup(self, providers: Sequence[str], model: str, at: datetime, variant: str = "") -> PriceRow | None:
        """The row that prices ``model`` at ``at``, from the first of ``providers`` that has one in force.

        ``at`` picks the row in force at that moment, and among rows with daily ``hours`` (DeepSeek's peak and
        off-peak prices) the one whose window holds its UTC time of day. ``variant`` (``"flex"``, ``"priority"``,
        ``"batch"``, …) asks for that service tier's row instead of the standard one: the first provider whose
        rows price the model at ``at`` answers, with its variant row, or None when it has no such variant (the
        caller then prices at the standard rate and says so); a later provider's variant is never mixed in."""
        if at.tzinfo is None:
            raise ValueError("PriceCatalog.lookup needs a timezone-aware time")
        if isinstance(providers, str):  # a bare name would otherwise be read as a sequence of letters
            providers = (providers,)
        for provider in providers:
            key = self._resolve(provider, model)
            if key is None:
                continue
            if (row := self._in_force(key, at, variant)) is not None:
                return row
            if variant and self._in_force(key, at, "") is not None:
                return None
        return None

    def resolve(self, provider: str, model: str) -> tuple[str, str] | None:
        """The (provider, model) key whose history prices ``model`` when called through ``provider``."""
        return self._resolve(provider, model)

    def rows(self, provider: str | None = None, model: str | None = None) -> tuple[PriceRow, ...]:
        """Rows in force at some time, history included, ordered by provider and model, then the standard rows
        before each variant's, by date and daily hours."""
        if provider is not None and model is not None:
            return self._histories.get((provider, model), ())
        return tuple(
            r for r in self._all if (provider is None or r.provider == provider) and (model is None or r.model == model)
        )

    def get(self, row_id: str) -> PriceRow | None:
        return self._by_id.get(row_id)

    def models(self, providers: Sequence[str]) -> list[str]:
        """Names of the models priced under any of ``providers``, in order, each once."""
        wanted = {providers} if isinstance(providers, str) else set(providers)
        return sorted({model for (provider, model) in self._histories if provider in wanted})

    def __len__(self) -> int:
        return len(self._all)

    def _in_force(self, key: _Key, at: datetime, variant: str = "") -> PriceRow | None:
        for starts, line in self._lines.get((*key, variant), ()):
            i = bisect_right(starts, at) - 1
            if i < 0:
                continue
            row = line[i]
            if (row.effective_to is None or at < row.effective_to) and row.applies_at(at):
                return row
        return None

    def _resolve(self, provider: str, model: str) -> _Key | None:
        key = (provider, model)
        if key in self._histories:
            return key
        cached = self._matches.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        found = self._by_lower.get((provider, model.lower()))
        if found is None and self._matcher is not None:
            matched = self._matcher(provider, model)
            if matched is not None:
                # The provider's own row for the canonical name first (e.g. a config override for azure's
                # gpt-4o), then the row of the provider whose data holds the model (openai's gpt-4o).
                for candidate in ((provider, matched[1]), matched):
                    if candidate in self._histories:
                        found = candidate
                        break
        if len(self._matches) >= self._match_cache_size:
            # Clearing (not evicting one entry) keeps this safe under threads without a lock; the hot names
            # come back after one miss each.
            self._matches.clear()
        self._matches[key] = found
        return found


def load_catalog(extra_rows: Iterable[PriceRow] = (), *, data_dir: Path | None = None) -> PriceCatalog:
    """The built-in catalog with ``extra_rows`` (the config's prices) as overrides.

    The built-in rows are genai-prices' data — the file ``tokenops prices update`` installed in ``data_dir``
    (default ``~/.tokenops/prices``) if there is one, else the snapshot bundled with the package — with
    TokenOps' reviewed corrections (:mod:`tokenops.pricing.corrections`) applied."""
    from tokenops.pricing.datafile import current_data

    data = current_data(data_dir)
    return PriceCatalog(base_rows(data), extra_rows, matcher=data.matcher)


def base_rows(data: GenaiData | None = None) -> tuple[PriceRow, ...]:
    """The rows of genai-prices ``data`` (default: the bundled snapshot) with the shipped corrections applied;
    computed once per data set."""
    from tokenops.pricing.genai import bundled_data

    return _corrected(data or bundled_data())


@functools.lru_cache(maxsize=4)
def _corrected(data: GenaiData) -> tuple[PriceRow, ...]:
    from tokenops.pricing.corrections import apply_corrections, apply_tool_fees, load_corrections, load_tool_fees

    return apply_tool_fees(apply_corrections(data.rows, load_corrections()), load_tool_fees())


def _group(rows: Iterable[PriceRow], what: str) -> dict[_LineKey, list[PriceRow]]:
    """Rows by (provider, model, variant, hours), each line ordered and chained (a row ends where the next begins)."""
    groups: dict[_LineKey, list[PriceRow]] = {}
    for row in rows:
        groups.setdefault((row.provider, row.model, row.variant, format_hours(row.hours)), []).append(row)
    for key, history in groups.items():
        history.sort(key=lambda r: r.effective_from)
        for earlier, later in zip(history, history[1:], strict=False):
            if earlier.effective_from == later.effective_from and earlier != later:
                which = f"{key[0]}/{key[1]}" + (f" ({key[2]})" if key[2] else "") + (f" at {key[3]}" if key[3] else "")
                raise ValueError(f"two {what} prices for {which} start at {earlier.effective_from.isoformat()}")
        deduped = [r for i, r in enumerate(history) if i == 0 or r != history[i - 1]]
        groups[key] = [_end_by(r, nxt.effective_from) for r, nxt in zip(deduped, deduped[1:], strict=False)]
        groups[key].append(deduped[-1])
    return groups


def _row_order(row: PriceRow) -> tuple[bool, str, datetime, str]:
    """Listing order within a model: the standard rows first, then each variant; by date, then by hours."""
    return (row.variant != "", row.variant, row.effective_from, format_hours(row.hours))


def _end_by(row: PriceRow, end: datetime) -> PriceRow:
    """``row`` ending no later than ``end`` (the same id: the id names the price, not its validity)."""
    if row.effective_to is not None and row.effective_to <= end:
        return row
    return dataclasses.replace(row, effective_to=end)
