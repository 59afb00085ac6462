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

from tokenops.pricing.model import PriceRow

if TYPE_CHECKING:
    from tokenops.pricing.genai import GenaiData

__all__ = ["Matcher", "PriceCatalog", "base_rows", "load_catalog"]

Matcher = Callable[[str, str], tuple[str, str] | None]
"""``matcher(provider, model_ref)`` → the (provider, model) key of the rows that price ``model_ref``, or None."""

_Key = tuple[str, str]
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
        histories: dict[_Key, tuple[PriceRow, ...]] = {}
        for key in base.keys() | extra.keys():
            histories[key] = _replace_from(base.get(key, []), extra.get(key, []))

        self._histories = histories
        self._starts = {key: tuple(r.effective_from for r in rows) for key, rows in histories.items()}
        self._by_lower: dict[_Key, _Key] = {}
        for provider, model in sorted(histories):
            self._by_lower.setdefault((provider, model.lower()), (provider, model))
        self._all = tuple(row for key in sorted(histories) for row in histories[key])
        self._by_id = {row.id: row for row in self._all}
        self._matcher = matcher
        self._match_cache_size = match_cache_size
        self._matches: dict[_Key, _Key | None] = {}

    def lookup(self, providers: Sequence[str], model: str, at: datetime) -> PriceRow | None:
        """The row that prices ``model`` at ``at``, from the first of ``providers`` that has one in force."""
        if at.tzinfo is None:
            raise ValueError("PriceCatalog.lookup needs a timezone-aware time")
        if isinstance(providers, str):  # a bare name would otherwise be read as a sequence of letters
            providers = (providers,)
        for provider in providers:
            key = self._resolve(provider, model)
            if key is not None and (row := self._in_force(key, at)) is not None:
                return row
        return None

    def resolve(self, provider: str, model: str) -> tuple[str, str] | None:
        """The (provider, model) key whose history prices ``model`` when called through ``provider``."""
        return self._resolve(provider, model)

    def rows(self, provider: str | None = None, model: str | None = None) -> tuple[PriceRow, ...]:
        """Rows in force at some time, history included, ordered by provider, model and date."""
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

    def _in_force(self, key: _Key, at: datetime) -> PriceRow | None:
        history = self._histories[key]
        i = bisect_right(self._starts[key], at) - 1
        if i < 0:
            return None
        row = history[i]
        return row if row.effective_to is None or at < row.effective_to else None

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
    from tokenops.pricing.corrections import apply_corrections, load_corrections

    return apply_corrections(data.rows, load_corrections())


def _group(rows: Iterable[PriceRow], what: str) -> dict[_Key, list[PriceRow]]:
    """Rows by (provider, model), each history ordered and chained (a row ends where the next begins)."""
    groups: dict[_Key, list[PriceRow]] = {}
    for row in rows:
        groups.setdefault((row.provider, row.model), []).append(row)
    for key, history in groups.items():
        history.sort(key=lambda r: r.effective_from)
        for earlier, later in zip(history, history[1:], strict=False):
            if earlier.effective_from == later.effective_from and earlier != later:
                raise ValueError(
                    f"two {what} prices for {key[0]}/{key[1]} start at {earlier.effective_from.isoformat()}"
                )
        deduped = [r for i, r in enumerate(history) if i == 0 or r != history[i - 1]]
        groups[key] = [_end_by(r, nxt.effective_from) for r, nxt in zip(deduped, deduped[1:], strict=False)]
        groups[key].append(deduped[-1])
    return groups


def _replace_from(base: list[PriceRow], overrides: list[PriceRow]) -> tuple[PriceRow, ...]:
    if not overrides:
        return tuple(base)
    cutover = overrides[0].effective_from
    kept = [_end_by(r, cutover) for r in base if r.effective_from < cutover]
    return (*kept, *overrides)


def _end_by(row: PriceRow, end: datetime) -> PriceRow:
    """``row`` ending no later than ``end`` (the same id: the id names the price, not its validity)."""
    if row.effective_to is not None and row.effective_to <= end:
        return row
    return dataclasses.replace(row, effective_to=end)
