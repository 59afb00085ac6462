"""FOCUS 1.2 export: the ledger's LLM spend as a FinOps Open Cost and Usage Specification dataset.

``tokenops export focus --since D --until D -o FILE.csv|FILE.parquet`` writes one row per **charge**: the calls of
one UTC day (or hour, ``--granularity hour``), provider, model, virtual key, tag set and price point, split by
what they were billed for (input tokens, cache reads, 5-minute and 1-hour cache writes, output tokens, reasoning,
audio and image tokens at their own rates, web and file searches, per-request fees), because each of those has
its own published unit price (its own SKU), as the clouds' own bills do for hosted models.

How each row is built:

* **Quantities**: ``ConsumedQuantity`` tokens (``ConsumedUnit`` ``Tokens``); ``PricingQuantity`` in millions of
  tokens (``PricingUnit`` ``1000000 Tokens``), the unit providers publish their prices in (``1000 Searches``
  for tool calls, ``Requests`` for per-request fees).
* **Prices and costs**: ``ContractedUnitPrice`` is the rate of the row the calls were priced with (USD per
  million tokens at their long-context tier and service tier); ``ListUnitPrice`` the published rate of the
  built-in catalog, the same unless the config's ``prices:`` set a negotiated rate. ``ListCost`` and
  ``ContractedCost`` are each price x ``PricingQuantity`` exactly (FOCUS requires the products to match). ``BilledCost`` = ``EffectiveCost`` is what the ledger recorded: each call's cost is rounded to the
  pico-dollar, and what that rounding left over is put on the largest line of its charge, so that the export's
  ``BilledCost`` sums to the ledger's spend to the last digit (the CLI checks and says so).
* **Who**: ``ProviderName`` = ``PublisherName`` = ``InvoiceIssuerName`` (OpenAI, Anthropic, Google, or the
  configured provider's name for any other server), one ``ServiceName`` per provider, ``ServiceCategory`` "AI
  and Machine Learning" / ``ServiceSubcategory`` "Generative AI". ``BillingAccountId`` is the provider's name
  in the config (TokenOps does not know the provider's organization id); the virtual key is the sub-account
  (``SubAccountId`` = key id, ``SubAccountName`` = key name, ``SubAccountType`` ``Virtual Key``).
* **SKUs**: ``SkuId`` ``<provider>/<model>/<kind>``; ``SkuPriceId`` adds the service tier (``standard``,
  ``batch``, ``flex``, ``priority``), a long-context tier (``above-200000``) and daily hours: it stays the same
  when a price changes (FOCUS requires it to), and ``x_PriceRowId`` names the exact row used.
* **Tags**: the call's tags, unprefixed (one user-defined scheme), as a JSON object.
* **Periods**: ``ChargePeriodStart``/``End`` are the bucket, cut to the window asked for; the billing period is
  the calendar month (UTC) of the charge.
* **Left out**: answers served from the response cache (no provider charge), calls that consumed and cost nothing
  (refused, failed early), and **unpriced** calls: their cost is unknown, and FOCUS has no place for a charge
  without a price, so they are counted and named by the CLI (``tokenops prices list --unpriced``) instead of
  being exported at a silent $0.

Strings in FOCUS columns are ASCII (the FinOps Foundation's validator requires it; anything else is escaped
as ``\\uXXXX``), decimals are written in plain notation (never an exponent) and always with a point, and dates
as ``YYYY-MM-DDTHH:MM:SSZ``. A ``FILE.metadata.json`` beside the file (``november.csv.metadata.json``) describes the schema (FOCUS metadata).
"""

from __future__ import annotations

import csv
import decimal
import functools
import io
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson

from tokenops import money
from tokenops.errors import UsageError
from tokenops.ledger.base import TABLES, FocusGroup, Ledger, price_row_from
from tokenops.money import ZERO
from tokenops.pricing.catalog import PriceCatalog, load_catalog
from tokenops.pricing.model import LINE_KINDS, PriceLine, PriceRow, format_hours, price_lines

FOCUS_VERSION = "1.2"
GRANULARITIES = {"day": 86400, "hour": 3600}
FOCUS_COLUMNS = (
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingAccountType",
    "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart", "CapacityReservationId",
    "CapacityReservationStatus", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency",
    "ChargePeriodEnd", "ChargePeriodStart", "CommitmentDiscountCategory", "CommitmentDiscountId",
    "CommitmentDiscountName", "CommitmentDiscountQuantity", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "CommitmentDiscountUnit", "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "InvoiceId", "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory",
    "PricingCurrency", "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice", "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "RegionId",
    "RegionName", "ResourceId", "ResourceName", "ResourceType", "ServiceCategory", "ServiceName",
    "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName",
    "SubAccountType", "Tags",
)  # fmt: skip
# after the FOCUS columns (FOCUS: custom columns are prefixed x_ and come last)
CUSTOM_COLUMNS = ("x_CallCount", "x_Model", "x_PriceRowId", "x_Provider", "x_TokenType", "x_UsageEstimated")
COLUMNS = FOCUS_COLUMNS + CUSTOM_COLUMNS
DECIMAL_COLUMNS = frozenset((
    "BilledCost", "CommitmentDiscountQuantity", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "ListCost", "ListUnitPrice", "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice", "PricingQuantity",
))  # fmt: skip
DATETIME_COLUMNS = frozenset(("BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"))
JSON_COLUMNS = frozenset(("SkuPriceDetails", "Tags"))
INTEGER_COLUMNS = frozenset(("x_CallCount",))
BOOLEAN_COLUMNS = frozenset(("x_UsageEstimated",))

# well-known provider APIs, by host: (ProviderName, ServiceName)
KNOWN_HOSTS = {
    "api.openai.com": ("OpenAI", "OpenAI API"),
    "api.anthropic.com": ("Anthropic", "Claude API"),
    "generativelanguage.googleapis.com": ("Google", "Gemini API"),
}
# a provider no longer in the config: named by its usual config name, if it is one
USUAL_NAMES = {"openai": KNOWN_HOSTS["api.openai.com"], "anthropic": KNOWN_HOSTS["api.anthropic.com"],
               "google": KNOWN_HOSTS["generativelanguage.googleapis.com"],
               "gemini": KNOWN_HOSTS["generativelanguage.googleapis.com"]}  # fmt: skip
# kind -> (SkuMeter, ConsumedUnit, PricingUnit, quantity per pricing unit)
_METERS: dict[str, tuple[str, str, str, int]] = {
    **{kind: (meter, "Tokens", "1000000 Tokens", 1_000_000) for kind, meter in (
        ("input", "Input Tokens"), ("input_audio", "Audio Input Tokens"), ("input_image", "Image Input Tokens"),
        ("cache_read", "Cached Input Tokens"), ("cache_write_5m", "Cache Write Tokens (5m)"),
        ("cache_write_1h", "Cache Write Tokens (1h)"), ("output", "Output Tokens"),
        ("output_audio", "Audio Output Tokens"), ("output_image", "Image Output Tokens"),
        ("reasoning", "Reasoning Tokens"), ("tokens", "Tokens"),  # tokens: a charge whose price row is unknown
    )},
    "web_search": ("Web Searches", "Searches", "1000 Searches", 1000),
    "file_search": ("File Searches", "Searches", "1000 Searches", 1000),
    "request": ("Requests", "Requests", "Requests", 1),
}  # fmt: skip
assert set(LINE_KINDS) <= set(_METERS)
_PAGE = 5000  # price rows read per page
PublicRow = Callable[[str, str, datetime, str], "PriceRow | None"]  # (provider, model, at, variant) -> row
EXACT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)  # products and quotients that never round
_DECIMAL128 = decimal.Context(prec=38, traps=[decimal.InvalidOperation])
MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class _Sums:
    """A group's summed usage, as price_lines reads it (a Usage would refuse more tokens than one call holds)."""

    input_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int
    input_audio_tokens: int
    output_audio_tokens: int
    web_searches: int
    input_image_tokens: int
    output_image_tokens: int
    file_searches: int
    code_containers: int


@dataclass
class FocusExport:
    """The rows of an export and what it left out."""

    since: datetime | None
    until: datetime | None
    granularity: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # focus_export's (focus_rows streams them instead)
    row_count: int = 0
    calls: int = 0  # calls exported
    billed: Decimal = ZERO  # the sum of BilledCost: the ledger's spend of the exported calls, exactly
    ledger_cost: Decimal = ZERO  # the ledger's sum of cost_usd over the same calls
    unpriced_calls: int = 0
    unpriced_tokens: int = 0
    unpriced_models: set[tuple[str, str]] = field(default_factory=set)
    derived_charges: int = 0  # charges whose price row is not in the ledger (priced at cost / quantity)
    repriced_mismatch: int = 0  # charges whose recomputed cost differed from the ledger's by more than rounding

    def to_json(self) -> dict[str, Any]:
        return {
            "focus_version": FOCUS_VERSION, "rows": self.row_count, "calls": self.calls,
            "billed_cost_usd": money.format_usd(self.billed), "ledger_cost_usd": money.format_usd(self.ledger_cost),
            "unpriced_calls": self.unpriced_calls, "unpriced_tokens": self.unpriced_tokens,
            "unpriced_models": [f"{p}/{m}" for p, m in sorted(self.unpriced_models)],
            "since": _when(self.since), "until": _when(self.until), "granularity": self.granularity,
            "derived_charges": self.derived_charges, "repriced_charges": self.repriced_mismatch,
        }  # fmt: skip


def month_or_window(month: str | None, since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """The export's window: a calendar month in UTC (``2026-11``: a bill's period), or ``since``/``until`` as
    ``tokenops report spend`` takes them (2026-11-01, 2026-11-01T08:00, 30d)."""
    from tokenops.services.chargeback import month_window
    from tokenops.timespec import parse_window

    if month is not None:
        if since is not None or until is not None:
            raise UsageError("--month is a whole window: give it, or --since/--until, not both")
        return month_window(month)
    return parse_window(since, until)


class Catalogs:
    """The price rows an export may need beyond the ledger's, each catalog loaded when first asked: ``row`` (by
    id, from the configured catalog: the built-in one with the config's ``prices:``) and ``public`` (the built-in
    catalog alone: what providers publish), to pass as ``catalog_row`` and ``public_row``."""

    def __init__(self, config_rows: Sequence[PriceRow] = (), configured: PriceCatalog | None = None) -> None:
        self._config_rows = tuple(config_rows)
        self._configured = configured
        self._published: PriceCatalog | None = None

    def row(self, row_id: str) -> PriceRow | None:
        if self._configured is None:
            self._configured = load_catalog(self._config_rows)
        return self._configured.get(row_id)

    def public(self, provider: str, model: str, at: datetime, variant: str) -> PriceRow | None:
        if self._published is None:
            self._published = load_catalog()
        return self._published.lookup((provider,), model, at, variant=variant)


def focus_export(ledger: Ledger, *, since: datetime | None, until: datetime | None, granularity: str = "day",
                 providers: Mapping[str, Any] | None = None,
                 catalog_row: Callable[[str], PriceRow | None] | None = None,
                 public_row: PublicRow | None = None) -> FocusExport:  # fmt: skip
    """The FOCUS rows of the calls made in ``[since, until)``, in memory (see :func:`focus_rows`)."""
    out = FocusExport(since, until, granularity)
    out.rows = list(focus_rows(ledger, out, providers=providers, catalog_row=catalog_row, public_row=public_row))
    return out


def focus_rows(ledger: Ledger, out: FocusExport, *, providers: Mapping[str, Any] | None = None,
               catalog_row: Callable[[str], PriceRow | None] | None = None,
               public_row: PublicRow | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The FOCUS rows of the calls made in ``[out.since, out.until)``, one at a time; ``out``'s counts and sums
    are complete when the last has been taken. ``providers``: the config's providers (name -> ProviderConfig),
    for the provider and service names; ``catalog_row``: a price row by id, for rows the ledger does not hold (a
    ledger written by TokenOps holds every row it priced with); ``public_row``: the published price row of a
    (provider, model, time, service tier), when the row a call was priced with is another (the config's
    ``prices:``, a negotiated rate): its rates are the list prices, the row's the contracted ones."""
    if out.granularity not in GRANULARITIES:
        raise UsageError(f"--granularity: {out.granularity!r} is not one of {', '.join(GRANULARITIES)}")
    # charge and billing periods are UTC (a window given with an offset is the same instants)
    # no end: now, so that today's charge ends now, not at midnight
    since = out.since = None if out.since is None else out.since.astimezone(UTC)
    until = out.until = (out.until or datetime.now(UTC)).astimezone(UTC)
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be after --since")
    rows = _price_rows(ledger)
    thresholds = sorted({t.above_input_tokens for r in rows.values() for t in r.tiers})
    split_by = set(thresholds)
    keys = {k.id: k.name for k in ledger.list_keys()}
    size = GRANULARITIES[out.granularity]

    def price_row(row_id: str | None) -> PriceRow | None:
        row = rows.get(row_id or "") or (catalog_row(row_id) if catalog_row and row_id else None)
        if row is not None and not {t.above_input_tokens for t in row.tiers} <= split_by:
            return None  # a catalog row whose tiers the query did not split by: its calls may mix tiers
        return row

    for g, row, above in _charges(ledger.focus_groups(since, until, size, thresholds), price_row):
        if g.unpriced or g.cost_usd is None:
            out.unpriced_calls += g.calls
            out.unpriced_tokens += g.usage["input_tokens"] + g.usage["output_tokens"]
            out.unpriced_models.add((g.provider, g.model))
            continue
        lines, above = _lines(g, row, above, out)
        billed = _billed(lines, g.cost_usd, g.calls, out)
        listed = _list_prices(g, row, public_row)
        # cut to the window, in whole seconds (FOCUS dates have none) that hold every call of the charge
        start = max(g.bucket, since).replace(microsecond=0) if since is not None else g.bucket
        end = min(g.bucket + timedelta(seconds=size), _whole_second_after(until))
        common = _common(g, row, above, start, end, keys, (providers or {}).get(g.provider))
        out.calls += g.calls
        out.ledger_cost = money.add(out.ledger_cost, g.cost_usd)
        out.billed = money.add(out.billed, *billed)
        for i, (line, cost) in enumerate(zip(lines, billed, strict=True)):
            out.row_count += 1
            made = _row(common, line, cost, g, listed.get(line.kind, line.price))
            if i:  # the calls on the charge's first line only: a sum over the rows counts each call once
                made["x_CallCount"] = None
            yield made


def _whole_second_after(at: datetime) -> datetime:
    return at if not at.microsecond else at.replace(microsecond=0) + timedelta(seconds=1)


def _charges(groups: Iterable[FocusGroup], price_row: Callable[[str | None], PriceRow | None]
             ) -> Iterator[tuple[FocusGroup, PriceRow | None, int | None]]:  # fmt: skip
    """One group per charge, with its price row and the long-context threshold its calls passed (None: the
    base prices): the query's groups (in bucket order) merged where they differ only in what FOCUS does not
    show: the order of their tags, or long-context thresholds of other rows than their own."""
    bucket: datetime | None = None
    pending: dict[tuple[Any, ...], tuple[FocusGroup, PriceRow | None, int | None]] = {}
    for g in groups:
        if g.bucket != bucket:
            yield from (pending[k] for k in sorted(pending, key=repr))
            pending, bucket = {}, g.bucket
        row = None if g.unpriced else price_row(g.price_row_id)
        tier = row.tier_at(g.min_input_tokens) if row is not None else None
        above = None if tier is None else tier.above_input_tokens  # the same for every call of the charge
        key = (g.provider, g.model, g.key_id, tuple(sorted(g.tags.items())), g.price_row_id, g.unpriced, above,
               row is None)  # fmt: skip
        if key in pending:
            g = _merged(pending[key][0], g)
        pending[key] = (g, row, above)
    yield from (pending[k] for k in sorted(pending, key=repr))


def _merged(a: FocusGroup, b: FocusGroup) -> FocusGroup:
    cost = None if a.cost_usd is None or b.cost_usd is None else money.add(a.cost_usd, b.cost_usd)
    return replace(a, calls=a.calls + b.calls, min_input_tokens=min(a.min_input_tokens, b.min_input_tokens),
                   usage={k: v + b.usage[k] for k, v in a.usage.items()}, cost_usd=cost,
                   estimated=a.estimated or b.estimated)  # fmt: skip


def _price_rows(ledger: Ledger) -> dict[str, PriceRow]:
    rows: dict[str, PriceRow] = {}
    after: tuple[Any, ...] | None = None
    key = TABLES["price_rows"].key
    while True:
        page = ledger.export_rows("price_rows", after, _PAGE)
        if not page:
            return rows
        for r in page:
            row = price_row_from(r)
            rows[row.id] = row
        after = tuple(page[-1][k] for k in key)
        if len(page) < _PAGE:
            return rows


def _lines(g: FocusGroup, row: PriceRow | None, above: int | None,
           out: FocusExport) -> tuple[list[PriceLine], int | None]:  # fmt: skip
    """The group's priced lines, and ``above`` (the long-context threshold its calls passed) where they are the
    row's (None where they are derived from the recorded cost)."""
    assert g.cost_usd is not None
    if row is not None:
        lines, _ = price_lines(_Sums(**g.usage), row, prices=row.prices_at(g.min_input_tokens), calls=g.calls)
        if lines:
            return lines, above
    # no row to split the cost by (or a row that bills none of this usage): one line, its unit price derived
    out.derived_charges += 1
    tokens = g.usage["input_tokens"] + g.usage["output_tokens"]
    if tokens > 0:
        price = EXACT.divide(EXACT.multiply(g.cost_usd, MILLION), Decimal(tokens)).quantize(money.PICO, context=EXACT)
        return [PriceLine("tokens", tokens, price, money.per_mtok(price, tokens))], None
    price = EXACT.divide(g.cost_usd, Decimal(g.calls)).quantize(money.PICO, context=EXACT)
    return [PriceLine("request", g.calls, price, EXACT.multiply(price, Decimal(g.calls)))], None


def _list_prices(g: FocusGroup, row: PriceRow | None, public_row: PublicRow | None) -> dict[str, Decimal]:
    """The published rate of each kind of line, where the row the calls were priced with is not the published
    one (a negotiated rate in the config's ``prices:``); empty where it is."""
    if row is None or public_row is None:
        return {}
    public = public_row(row.provider, row.model, g.bucket, row.variant)
    if public is None or public.id == row.id:
        return {}
    lines, _ = price_lines(_Sums(**g.usage), public, prices=public.prices_at(g.min_input_tokens), calls=g.calls)
    return {line.kind: line.price for line in lines}


def _billed(lines: list[PriceLine], ledger_cost: Decimal, calls: int, out: FocusExport) -> list[Decimal]:
    """Each line's share of what the ledger recorded: its exact cost, and the rounding of the calls' costs to
    the pico-dollar on the largest line, so that the shares add up to the ledger's figure exactly."""
    costs = [line.cost for line in lines]
    rest = EXACT.subtract(ledger_cost, money.add(*costs))
    if rest:
        if abs(rest) > money.PICO * calls and not any(line.kind == "tokens" for line in lines):
            out.repriced_mismatch += 1  # the recorded cost is not what the row gives: the ledger's figure wins
        i = max(range(len(costs)), key=lambda k: costs[k])
        costs[i] = money.add(costs[i], rest)
    return costs


def _provider_names(name: str, cfg: Any) -> tuple[str, str]:
    """(ProviderName, ServiceName): the well-known APIs by their host, any other server by its config name."""
    own = (_ascii(name), f"{_ascii(name)} LLM API")
    if cfg is None:
        return USUAL_NAMES.get(name, own)
    return KNOWN_HOSTS.get(urlsplit(str(cfg.base_url)).hostname or "", own)


def _common(g: FocusGroup, row: PriceRow | None, above: int | None, start: datetime, end: datetime,
            keys: Mapping[str, str], provider_cfg: Any) -> _Charge:  # fmt: skip
    """What every row of a charge has in common."""
    provider_name, service = _provider_names(g.provider, provider_cfg)
    month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + timedelta(days=32)).replace(day=1)
    variant = (row.variant or "standard") if row is not None else "standard"
    price_point = [variant]
    if above is not None:
        price_point.append(f"above-{above}")
    if row is not None and row.hours:
        price_point.append(f"hours-{format_hours(row.hours)}")
    tags = {k: g.tags[k] for k in sorted(g.tags)}
    base: dict[str, Any] = dict.fromkeys(COLUMNS)
    base.update({
        "BillingAccountId": _ascii(g.provider), "BillingAccountName": _ascii(g.provider),
        "BillingAccountType": "Provider Account", "BillingCurrency": "USD", "BillingPeriodStart": month,
        "BillingPeriodEnd": next_month, "ChargeCategory": "Usage", "ChargeFrequency": "Usage-Based",
        "ChargePeriodStart": start, "ChargePeriodEnd": end, "InvoiceIssuerName": provider_name,
        "ProviderName": provider_name, "PublisherName": provider_name, "PricingCategory": "Standard",
        "PricingCurrency": "USD", "ServiceCategory": "AI and Machine Learning", "ServiceName": service,
        "ServiceSubcategory": "Generative AI",
        "SubAccountId": _ascii(g.key_id) if g.key_id else None,
        "SubAccountName": _ascii(keys.get(g.key_id, g.key_id)) if g.key_id else None,
        "SubAccountType": "Virtual Key" if g.key_id else None,
        "Tags": json.dumps(tags, ensure_ascii=True, separators=(",", ":")) if tags else None,  # ASCII: \u00e9
        "x_CallCount": g.calls, "x_Model": g.model, "x_PriceRowId": row.id if row is not None else None,
        "x_Provider": g.provider, "x_UsageEstimated": g.estimated,
    })  # fmt: skip
    return _Charge(base, "/".join(price_point), variant, above, f"{_ascii(g.provider)}/{_ascii(g.model)}/")


@dataclass(frozen=True, slots=True)
class _Charge:
    base: dict[str, Any]  # every column: the charge's values, None for those of each line
    price_point: str  # SkuPriceId after the SkuId: standard/above-200000/…
    variant: str
    above: int | None
    sku_prefix: str  # provider/model/


def _row(common: _Charge, line: PriceLine, billed: Decimal, g: FocusGroup, list_price: Decimal) -> dict[str, Any]:
    meter, consumed_unit, pricing_unit, per_unit = _METERS[line.kind]
    quantity = Decimal(line.quantity)
    pricing_quantity = EXACT.divide(quantity, Decimal(per_unit))  # exact: a power of ten
    contracted_cost = EXACT.multiply(line.price, pricing_quantity)  # exact: 60 digits, not the default 28
    list_cost = contracted_cost if list_price == line.price else EXACT.multiply(list_price, pricing_quantity)
    sku = common.sku_prefix + line.kind
    details: dict[str, Any] = {"x_TokenType": line.kind, "x_ServiceTier": common.variant}
    if common.above is not None:
        details["x_ContextAbove"] = common.above
    row = common.base.copy()
    row.update({
        "BilledCost": billed, "EffectiveCost": billed, "PricingCurrencyEffectiveCost": billed,
        "ChargeDescription": _ascii(f"{g.model} {meter.lower()}"),
        "ConsumedQuantity": quantity, "ConsumedUnit": consumed_unit,
        "PricingQuantity": pricing_quantity, "PricingUnit": pricing_unit,
        "ListUnitPrice": list_price, "ContractedUnitPrice": line.price, "PricingCurrencyListUnitPrice": list_price,
        "PricingCurrencyContractedUnitPrice": line.price, "ListCost": list_cost, "ContractedCost": contracted_cost,
        "SkuId": sku, "SkuMeter": meter, "SkuPriceId": f"{sku}/{common.price_point}",
        "SkuPriceDetails": orjson.dumps(details).decode(), "x_TokenType": line.kind,
    })  # fmt: skip
    return row


def _ascii(text: str) -> str:
    """FOCUS string columns as ASCII: anything else escaped (``\\u00e9``), so the text can be read back."""
    return text if text.isascii() else text.encode("ascii", "backslashreplace").decode("ascii")


def _when(dt: datetime | None) -> str | None:
    return None if dt is None else _when_text(dt)


# --- files --------------------------------------------------------------------------------------------------------
def write_focus(export: FocusExport, path: Path, rows: Iterable[Mapping[str, Any]] | None = None) -> Path:
    """Write the rows (``export.rows``, or ``rows`` as :func:`focus_rows` streams them) to ``path`` (``.csv`` or
    ``.parquet``) and the export's FOCUS metadata beside it (``<name>.metadata.json``: ``november.csv.metadata.json``); returns the metadata
    file's path. Written to a temporary file first, then moved into place, so an interrupted export never leaves
    half a file under the name asked for."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UsageError(f"-o {path}: the file must end in .csv or .parquet")
    if path.parent and not path.parent.is_dir():
        raise UsageError(f"-o {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise UsageError(f"-o {path}: is a folder, not a file")
    meta = path.with_name(path.name + ".metadata.json")  # november.csv.metadata.json: one per data file
    if meta.is_dir():
        raise UsageError(f"{meta}: is a folder; the export's metadata goes there")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    try:
        if suffix == ".csv":
            with tmp.open("w", newline="", encoding="utf-8") as f:
                _write_csv(export.rows if rows is None else rows, f)
        else:
            _write_parquet(export.rows if rows is None else rows, tmp)
        tmp_meta.write_bytes(orjson.dumps(metadata(export, path.name), option=orjson.OPT_INDENT_2))  # rows all read
        os.replace(tmp, path)
        os.replace(tmp_meta, meta)
    except OSError as exc:
        raise UsageError(f"-o {path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return meta


def focus_bytes(export: FocusExport, fmt: str) -> bytes:
    """The export's rows as the bytes of a ``csv`` or ``parquet`` file."""
    if fmt == "csv":
        text = io.StringIO()
        _write_csv(export.rows, text)
        return text.getvalue().encode("utf-8")
    if fmt == "parquet":
        data = io.BytesIO()
        _write_parquet(export.rows, data)
        return data.getvalue()
    raise UsageError(f"a FOCUS file is csv or parquet, not {fmt!r}")


def decimal_text(value: Decimal) -> str:
    """Plain notation with a point (``12.0``, ``0.000123``): never an exponent (FOCUS's numeric format) and never
    a bare integer (the validator would read the column as integers, not decimals)."""
    text = format(value.normalize(EXACT), "f") if value else "0"
    return text if "." in text else text + ".0"


@functools.lru_cache(maxsize=4096)  # a few distinct instants (buckets, months) in a whole export
def _when_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _text_of(column: str) -> Callable[[Any], str]:
    """How a column's values are written in CSV."""
    if column in DECIMAL_COLUMNS:
        return decimal_text
    if column in DATETIME_COLUMNS:
        return _when_text
    if column in BOOLEAN_COLUMNS:
        return _bool_text
    return str


def cell(column: str, value: Any) -> str:
    return "" if value is None else _text_of(column)(value)


def _write_csv(rows: Iterable[Mapping[str, Any]], out: TextIO) -> None:
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(COLUMNS)
    texts = [(c, _text_of(c)) for c in COLUMNS]
    for r in rows:
        w.writerow(["" if (v := r[c]) is None else text(v) for c, text in texts])


def _write_parquet(rows: Iterable[Mapping[str, Any]], out: Path | io.BytesIO, batch: int = 20_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def kind(c: str) -> Any:
        if c in DECIMAL_COLUMNS:  # decimal128(38, 18): 20 digits before the point, 18 after (exact for our prices)
            return pa.decimal128(38, 18)
        if c in DATETIME_COLUMNS:
            return pa.timestamp("s", tz="UTC")
        if c in INTEGER_COLUMNS:
            return pa.int64()
        if c in BOOLEAN_COLUMNS:
            return pa.bool_()
        return pa.string()

    schema = pa.schema([(c, kind(c)) for c in COLUMNS])
    places = Decimal("1e-18")

    def table(chunk: list[Mapping[str, Any]]) -> Any:
        columns = {c: [r[c] for r in chunk] for c in COLUMNS}
        try:
            for c in DECIMAL_COLUMNS:
                columns[c] = [None if v is None else v.quantize(places, context=_DECIMAL128) for v in columns[c]]
        except decimal.InvalidOperation:
            raise UsageError("a value is too large for Parquet's decimal(38,18) (20 digits before the point): "
                             "export as .csv, or a shorter window") from None  # fmt: skip
        return pa.table(columns, schema=schema)

    with pq.ParquetWriter(out, schema) as writer:  # a row group per batch: never the whole export in memory
        chunk: list[Mapping[str, Any]] = []
        for r in rows:
            chunk.append(r)
            if len(chunk) >= batch:
                writer.write_table(table(chunk))
                chunk = []
        if chunk:
            writer.write_table(table(chunk))


def metadata(export: FocusExport, data_file: str | None = None) -> dict[str, Any]:
    """FOCUS's metadata for the export (the schema, who made it, the window)."""
    from tokenops import __version__

    def definition(c: str) -> dict[str, Any]:
        kind = ("DECIMAL" if c in DECIMAL_COLUMNS else "DATETIME" if c in DATETIME_COLUMNS
                else "JSON" if c in JSON_COLUMNS else "STRING")  # fmt: skip
        d: dict[str, Any] = {"ColumnName": c, "DataType": kind}
        if c == "Tags":
            d["ProviderTagPrefixes"] = []  # the tags are the callers' own, none added by TokenOps
        if c in DECIMAL_COLUMNS:
            d["NumericPrecision"], d["NumberScale"] = 38, 18
        return d

    return {
        "SchemaId": str(uuid.uuid4()), "FocusVersion": FOCUS_VERSION, "CreationDate": _when(datetime.now(UTC)),
        "DataGenerator": "TokenOps", "DataGeneratorVersion": __version__,
        "ColumnDefinition": [definition(c) for c in FOCUS_COLUMNS],
        "x_DataFile": data_file, "x_Export": export.to_json(),
    }  # fmt: skip
