"""The built-in price source: pydantic's ``genai-prices`` data, converted into :class:`PriceRow`\\ s.

Two forms of the same data are read, never anything else: the snapshot bundled with the installed package
(``genai_prices.data``, :func:`bundled_data`), and a data file in genai-prices' published JSON format
(``prices/new_data/v2/data.json`` of its repository, :func:`load_data_file`) that ``tokenops prices update``
downloads, checks and installs (:mod:`tokenops.pricing.datafile`). genai-prices' own auto-update and network
code is never called: what the catalog holds changes only when a person runs ``tokenops prices update``, and
it works offline. The package is imported inside the functions that need it: it takes ~0.3 s, which a CLI
command that never prices anything should not pay.

How genai-prices' data maps onto a price row:

* One :class:`PriceRow` per (provider, model, price period). ``provider`` and ``model`` are genai-prices'
  provider id and model id. A model with a single ``ModelPrice`` gets one row from 1970-01-01 UTC. A model
  with a list of ``ConditionalPrice``\\ s gets one row per ``StartDateConstraint`` period, chosen with
  genai-prices' own ``ModelInfo.get_prices`` rule (the last active condition wins; before any start date the
  first entry applies, so the first period starts at 1970-01-01 UTC). A start date is midnight UTC, as in
  genai-prices. Consecutive periods whose representable prices are equal are merged into one row.
* ``input_mtok``, ``output_mtok`` and ``cache_read_mtok`` map to the fields of the same meaning;
  ``cache_write_mtok`` (genai-prices' price for a cache write of any TTL, i.e. Anthropic's 5-minute write)
  maps to ``cache_write_5m_per_mtok``; ``cache_write_1h_mtok`` (Anthropic's 1-hour write; genai-prices bills
  a 1-hour write without its own price at ``cache_write_mtok``, as :func:`price_usage` does) maps to
  ``cache_write_1h_per_mtok``; ``output_reasoning_mtok`` maps to ``reasoning_per_mtok``; ``requests_kcount``
  (USD per 1,000 requests) becomes ``per_request`` (divided by 1,000).
* ``TieredPrices`` (long context) become :class:`LongContextTier`\\ s. genai-prices applies a tier's price to
  the whole call when the call's total input tokens are strictly greater than the tier's ``start``
  (``calc_unit_price``: ``total_input_tokens > tier.start``), which is ``PriceRow.prices_for``'s rule too.
  Tiers are per price key in genai-prices; here the thresholds of all keys are merged into one tier per
  threshold, and a key with no tier at that threshold keeps the price of its lower tier (``None`` in the
  tier), which gives the same price for every key at every prompt size.

What a price row cannot represent, and what is done instead:

* ``input_audio_mtok`` and ``output_audio_mtok`` map to ``input_audio_per_mtok`` / ``output_audio_per_mtok``,
  ``input_image_mtok`` / ``output_image_mtok`` to ``input_image_per_mtok`` / ``output_image_per_mtok``,
  and ``web_searches_kcount`` (USD per 1,000 web searches) to ``web_search_per_k``; a row has them only when
  genai-prices does, so every other row keeps its id.
* Other modality prices (video tokens, cached audio and image tokens, their cache prices), ``audio_hours``, pixels,
  characters, document pages, messages, citation tokens, and the other per-call tool prices
  (``storage_searches_kcount``, …) are dropped: :class:`~tokenops.usage.Usage` has no such counts, so video
  tokens are billed at the plain input/output price and those tool calls are not billed. A model whose period has only such prices (text-to-speech per character, transcription per hour,
  OCR per page) gets no row for that period: it is unpriced then, never $0. A model genai-prices lists with
  no price at all is free by its data (OpenRouter ``:free`` models, Copilot-included ones, OpenAI
  moderation) and gets a row with explicit $0 input and output prices.
* ``price_variants`` whose condition is a service tier (``{"service_tier": "flex"}``, ``priority``, ``fast``;
  ``default`` is the standard price) or batch processing (``{"processing": "batch"}``) become rows with that
  ``variant`` (:func:`variant_name`), priced with genai-prices' own ``get_prices(…, price_context)`` and present
  only while genai-prices offers the variant (its start dates). Other variants (routing, search type,
  Anthropic's fast mode) are ignored.
* ``TimeOfDateConstraint`` prices (DeepSeek's peak/off-peak hours) become one row per price of the day, each with
  the daily UTC ``hours`` it applies in.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenops.errors import TokenOpsError
from tokenops.pricing.model import PRICE_FIELDS, STANDARD_TIERS, LongContextTier, PriceRow

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice, Provider

__all__ = [
    "EPOCH",
    "GenaiData",
    "GenaiModelMatcher",
    "PriceDataError",
    "bundled_data",
    "genai_matcher",
    "genai_price_rows",
    "genai_source",
    "load_data_file",
    "parse_data",
    "rows_for_model",
    "variant_name",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# genai-prices price key -> PriceRow field. Order matters: a specific 5-minute price, if a model ever has one,
# wins over the any-TTL ``cache_write_mtok``.
_TOKEN_KEYS: tuple[tuple[str, str], ...] = (
    ("input_mtok", "input_per_mtok"),
    ("cache_read_mtok", "cache_read_per_mtok"),
    ("cache_write_mtok", "cache_write_5m_per_mtok"),
    ("cache_write_5m_mtok", "cache_write_5m_per_mtok"),
    ("cache_write_1h_mtok", "cache_write_1h_per_mtok"),
    ("output_mtok", "output_per_mtok"),
    ("output_reasoning_mtok", "reasoning_per_mtok"),
)
_REQUESTS_KEY = "requests_kcount"
# genai-prices keys of prices a row holds beside its token prices (not in long-context tiers)
_EXTRA_KEYS: tuple[tuple[str, str], ...] = (
    ("web_searches_kcount", "web_search_per_k"),  # USD per 1,000 web searches, as the row keeps it
    ("input_audio_mtok", "input_audio_per_mtok"),
    ("output_audio_mtok", "output_audio_per_mtok"),
    ("input_image_mtok", "input_image_per_mtok"),
    ("output_image_mtok", "output_image_per_mtok"),
)
_THOUSAND = Decimal(1000)


class PriceDataError(TokenOpsError):
    """A genai-prices data file cannot be used: unreadable, not JSON, not in genai-prices' format, or empty.
    The message names the file (or URL) and the problem."""


class GenaiData:
    """One genai-prices data set: its providers, the ``source`` its rows carry, and (computed on first use, then
    kept) its price rows and the matcher over it. Compared by identity, so it can key a cache."""

    def __init__(self, providers: Sequence[Provider], source: str, path: Path | None = None) -> None:
        self.providers = list(providers)
        self.source = source
        self.path = path  # the data file, or None for the snapshot bundled with the package

    @functools.cached_property
    def rows(self) -> tuple[PriceRow, ...]:
        """Every row of the data, ordered by provider, model and date."""
        rows: list[PriceRow] = []
        for provider in self.providers:
            for model in provider.models:
                rows.extend(rows_for_model(provider.id, model, self.source))
        rows.sort(key=lambda r: (r.provider, r.model, r.effective_from))
        return tuple(rows)

    @functools.cached_property
    def matcher(self) -> GenaiModelMatcher:
        return GenaiModelMatcher(self.providers)

    @property
    def model_count(self) -> int:
        return sum(len(p.models) for p in self.providers)


def genai_source() -> str:
    """The ``source`` of every row made from the bundled snapshot, e.g. ``"genai-prices 0.2.3"``."""
    return f"genai-prices {version('genai-prices')}"


@functools.lru_cache(maxsize=1)
def bundled_data() -> GenaiData:
    """The snapshot bundled with the installed genai-prices package (loaded once per process)."""
    from genai_prices.data import providers

    return GenaiData(providers, genai_source())


def genai_price_rows() -> tuple[PriceRow, ...]:
    """Every row of the bundled snapshot, ordered by provider, model and date (computed once per process)."""
    return bundled_data().rows


def parse_data(content: bytes, *, where: str) -> list[Provider]:
    """The providers of a data file in genai-prices' published JSON format (a list of providers), read by
    genai-prices' own loader, the one its ``UpdatePrices`` uses. Numbers are read as exact decimals, never
    floats. Raises :class:`PriceDataError` naming ``where`` and the problem; a file without a single model is
    refused too (it would make every model unpriced)."""
    try:
        raw = json.loads(content, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PriceDataError(f"{where}: not JSON: {_short(exc)}") from None
    if not isinstance(raw, list):
        raise PriceDataError(f"{where}: not genai-prices data: expected a JSON list of providers, "
                             f"got a JSON {type(raw).__name__}")  # fmt: skip
    try:
        from genai_prices.types import _providers_from_raw
    except ImportError:  # pragma: no cover - a genai-prices release that renamed its loader
        raise PriceDataError(f"{where}: this genai-prices version ({version('genai-prices')}) has no data-file "
                             "loader; upgrade TokenOps") from None  # fmt: skip
    try:
        providers: list[Provider] = _providers_from_raw(raw)
    except Exception as exc:  # pydantic's ValidationError, or a TypeError for a price key this version lacks
        raise PriceDataError(f"{where}: not in the genai-prices format that genai-prices "
                             f"{version('genai-prices')} reads: {_short(exc)}") from None  # fmt: skip
    if not any(p.models for p in providers):
        raise PriceDataError(f"{where}: holds no models (an empty price list would make every call unpriced)")
    return providers


def load_data_file(path: Path) -> GenaiData:
    """A data file (as ``tokenops prices update`` installs it) as :class:`GenaiData`; loaded again only when
    the file changed. Its rows' ``source`` is ``genai-prices data <first 12 hex digits of its sha256>``, so the
    same file always gives the same row ids."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise PriceDataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return _load_data_file(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_data_file(path: str, _mtime_ns: int, _size: int) -> GenaiData:
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise PriceDataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    providers = parse_data(content, where=path)
    return GenaiData(providers, data_source(content), Path(path))


def data_source(content: bytes) -> str:
    """The ``source`` of the rows made from a data file with this content."""
    return f"genai-prices data {hashlib.sha256(content).hexdigest()[:12]}"


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def variant_name(when: dict[str, str]) -> str | None:
    """The :attr:`PriceRow.variant` of a genai-prices ``price_variants`` condition, or None for one TokenOps does not
    price by (routing, search type, Anthropic's fast mode, and the service tier ``default``, which is the
    standard price): ``{"service_tier": "flex"}`` is ``"flex"``, ``{"processing": "batch"}`` is ``"batch"``."""
    if len(when) != 1:
        return None
    ((key, value),) = when.items()
    if key == "service_tier" and value not in STANDARD_TIERS:
        return value
    if key == "processing" and value == "batch":
        return "batch"
    return None


def rows_for_model(provider_id: str, model: ModelInfo, source: str) -> list[PriceRow]:
    """The price history of one genai-prices model as rows, each closed by the next one's start: its standard
    rows, then the rows of each service-tier variant (:func:`variant_name`)."""
    contexts: dict[str, dict[str, str] | None] = {"": None}
    for v in model.price_variants or ():
        name = variant_name(v.when)
        if name is not None:
            contexts.setdefault(name, dict(v.when))
    rows: list[PriceRow] = []
    for variant, when in contexts.items():
        rows.extend(_line_rows(provider_id, model, source, variant, when))
    return rows


_DayPrices = tuple[tuple[tuple[tuple[time, time], ...], dict[str, Any]], ...]


def _line_rows(provider_id: str, model: ModelInfo, source: str, variant: str,
               when: dict[str, str] | None) -> list[PriceRow]:  # fmt: skip
    periods: list[tuple[datetime, _DayPrices]] = []
    for start in _period_starts(model, when):
        prices = _day_prices(model, start, when)
        if periods and periods[-1][1] == prices:
            continue  # nothing we can represent changed (e.g. only a web-search price did)
        periods.append((start, prices))

    rows = []
    for i, (start, prices) in enumerate(periods):
        end = periods[i + 1][0] if i + 1 < len(periods) else None
        for hours, values in prices:
            rows.append(
                PriceRow(
                    provider=provider_id,
                    model=model.id,
                    effective_from=start,
                    effective_to=end,
                    source=source,
                    variant=variant,
                    hours=hours,
                    context_window=model.context_window if isinstance(model.context_window, int) else None,
                    **values,
                )
            )
    return rows


def _period_starts(model: ModelInfo, when: dict[str, str] | None = None) -> list[datetime]:
    """Midnight UTC of every start date of the model's prices (and of the variant's, for a variant)."""
    from genai_prices.types import StartDateConstraint

    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    if when is not None:
        constraints += [v.constraint for v in model.price_variants or () if v.when == when]
    dates = {c.start_date for c in constraints if isinstance(c, StartDateConstraint)}
    starts = sorted(datetime.combine(d, time(), tzinfo=UTC) for d in dates)
    return [EPOCH, *(s for s in starts if s > EPOCH)]


def _time_of_day_bounds(model: ModelInfo, when: dict[str, str] | None) -> list[timedelta]:
    """Offsets from midnight UTC where a daily price window opens or closes (0 always)."""
    from genai_prices.types import TimeOfDateConstraint

    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    if when is not None:
        constraints += [v.constraint for v in model.price_variants or () if v.when == when]
    bounds = {timedelta(0)}
    for c in constraints:
        if isinstance(c, TimeOfDateConstraint):
            for t in (c.start_time, c.end_time):
                utc = datetime.combine(EPOCH.date(), t, tzinfo=t.tzinfo or UTC).astimezone(UTC)
                bounds.add(timedelta(hours=utc.hour, minutes=utc.minute, seconds=utc.second))
    return sorted(bounds)


def _day_prices(model: ModelInfo, day: datetime, when: dict[str, str] | None) -> _DayPrices:
    """The representable prices genai-prices applies on ``day`` (a period start: start dates fall on midnight, so
    a day never spans two periods), each with the daily UTC windows it applies in (``()``: all day); for a
    variant, only the windows where the variant is offered."""
    bounds = _time_of_day_bounds(model, when)
    segments: list[tuple[timedelta, timedelta, dict[str, Any] | None]] = []
    for i, b in enumerate(bounds):
        end = bounds[i + 1] if i + 1 < len(bounds) else timedelta(days=1)
        at = day + b
        if when is not None and not _variant_offered(model, when, at):
            prices = None
        else:
            prices = _representable(model.get_prices(at, when))
        segments.append((b, end, prices))
    distinct: list[dict[str, Any]] = []
    for _, _, prices in segments:
        if prices is not None and prices not in distinct:
            distinct.append(prices)
    if len(distinct) == 1 and all(p is not None for _, _, p in segments):
        return (((), distinct[0]),)
    out = []
    for prices in distinct:
        windows: list[list[timedelta]] = []
        for start, end, p in segments:
            if p != prices:
                continue
            if windows and windows[-1][1] == start:
                windows[-1][1] = end
            else:
                windows.append([start, end])
        if len(windows) > 1 and windows[0][0] == timedelta(0) and windows[-1][1] == timedelta(days=1):
            first = windows.pop(0)  # a window that runs past midnight: one window ending the next day
            windows[-1][1] = first[1]
        hours = tuple((_clock(a), _clock(b)) for a, b in windows)
        out.append((hours, prices))
    return tuple(out)


def _clock(offset: timedelta) -> time:
    seconds = int(offset.total_seconds()) % 86400
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60)


def _variant_offered(model: ModelInfo, when: dict[str, str], at: datetime) -> bool:
    """Whether a variant with exactly this condition is in force at ``at`` (genai-prices' own constraint rule)."""
    return any(v.when == when and (v.constraint is None or v.constraint.active(at)) for v in model.price_variants or ())


def _representable(price: ModelPrice) -> dict[str, Any] | None:
    """The PriceRow keyword arguments for ``price``; ``None`` when it has no price a row can hold."""
    from genai_prices.types import TieredPrices

    values = {k: v for k, v in vars(price).items() if not k.startswith("_") and v is not None}
    if not values:
        # genai-prices lists free models (OpenRouter ":free", Copilot-included, OpenAI moderation) with no price
        # at all and prices them at $0; that is a stated price, so it becomes explicit zeros, not "unpriced".
        values = {"input_mtok": Decimal(0), "output_mtok": Decimal(0)}
    base: dict[str, Decimal] = {}
    tiers: dict[int, dict[str, Decimal]] = {}
    for key, name in _TOKEN_KEYS:
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, TieredPrices):
            base[name] = value.base
            for tier in value.tiers:
                tiers.setdefault(tier.start, {})[name] = tier.price
        else:
            base[name] = value
    per_request = values.get(_REQUESTS_KEY)
    if isinstance(per_request, TieredPrices):  # not in the data; a request count has no prompt size
        per_request = per_request.base
    if not base and per_request is None:
        return None
    result: dict[str, Any] = {name: base.get(name) for name in PRICE_FIELDS}
    result["per_request"] = per_request / _THOUSAND if per_request is not None else None
    for key, name in _EXTRA_KEYS:
        extra = values.get(key)
        if isinstance(extra, TieredPrices):  # audio/image tiers are not in the data; the base price is what a row holds
            extra = extra.base
        if extra is not None:
            result[name] = extra
    result["tiers"] = tuple(
        LongContextTier(above_input_tokens=start, **tier_prices) for start, tier_prices in sorted(tiers.items())
    )
    return result


class GenaiModelMatcher:
    """Resolves a model reference to the (provider id, model id) of its genai-prices row, with genai-prices' own
    matching: ``Provider.find_model`` (each model's ``match`` clauses, compact ``-YYYYMMDD`` dates, and the
    provider's fallback providers, e.g. Azure → OpenAI). The provider of the result is the one whose data
    holds the model, which for a fallback is not the provider asked about.

    >>> match = genai_matcher()
    >>> match("openai", "gpt-4o-2024-08-06")
    ('openai', 'gpt-4o')
    """

    def __init__(self, providers: Sequence[Provider]) -> None:
        self._all = list(providers)
        self._by_id = {p.id: p for p in self._all}
        # genai-prices returns the ModelInfo object; its identity tells which provider's data it came from.
        self._owner = {id(m): p.id for p in self._all for m in p.models}

    def __call__(self, provider: str, model_ref: str) -> tuple[str, str] | None:
        found = self._by_id.get(provider.lower())
        if found is None:
            return None
        info = found.find_model(model_ref, all_providers=self._all)
        if info is None:
            return None
        return self._owner[id(info)], info.id


def genai_matcher() -> GenaiModelMatcher:
    """The matcher over the bundled snapshot (the same providers :func:`genai_price_rows` converts)."""
    return bundled_data().matcher
