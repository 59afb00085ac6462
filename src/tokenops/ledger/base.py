"""The ledger's interface, and what every backend shares: the spool drain, event rows, record checks.

    Ledger (one object per ledger URL; thread-safe; opened with :func:`tokenops.ledger.open_ledger`)
    ├── writes: append, drain (the spool), keys, budgets/limits/rules defined at run time, approval decisions
    ├── reads:  events, spend reports, unpriced models, budget sums, approvals, alerts
    ├── meta:   ping, identity_secret, url, migrate, close
    └── transfer: whole rows of each table in pages, and totals to verify a copy (``tokenops ledger migrate``)

Two backends implement it: :mod:`tokenops.ledger.duckdb` (one embedded file, the default) and
:mod:`tokenops.ledger.postgres` (a PostgreSQL server, for several gateways). Every SQL statement and every
database driver import of TokenOps lives in those modules; everything above the ledger asks this interface.

**The drain** (:func:`drain_spool`) is the same algorithm on every backend, written once here over a small
:class:`Session` (one database transaction's worth of primitives): read each segment past its committed
offset; keep what cannot be an event aside (``rejected.log``, with the reason); insert the rest and move the
segment's offset in one transaction (a crash at any moment loses nothing and doubles nothing: inserts skip
request ids the ledger holds); when the database refuses a batch for its data, find the events it refuses
(each tried alone, rolled back) and commit the others; remove a segment no process appends to once it is all
in the ledger.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import orjson

from tokenops.keys import KeyRecord
from tokenops.ledger import spool as spoolmod
from tokenops.ledger.business_metrics import MetricRow, MetricsWritten
from tokenops.ledger.events import SpendEvent, canonical
from tokenops.ledger.records import AlertKey, Approval, ApprovalStatus
from tokenops.ledger.reports import ActivityRow, Dimension, ReportQuery, SpendReport, UnpricedModel
from tokenops.pricing.model import (
    EXTRA_PRICE_FIELDS,
    PRICE_FIELDS,
    LongContextTier,
    PriceRow,
    format_hours,
    parse_hours,
)
from tokenops.scopes import Scope
from tokenops.tags import STANDARD_TAGS

log = logging.getLogger("tokenops.ledger")

EVENT_COLUMNS = (
    "request_id", "ts", "source", "provider", "model_requested", "model_used", "route", "stream",
    "input_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "output_tokens",
    "reasoning_tokens", "usage_estimated", "cost_usd", "price_row_id", "key_id", "end_user",
    *STANDARD_TAGS, "tags", "missing_tags", "status", "http_status", "error_code", "latency_ms", "ttft_ms",
    "cache", "upstream_request_id", "approval_id", "recorded_at",
    "input_audio_tokens", "output_audio_tokens", "web_searches",  # 0011: at the end, where ALTER TABLE puts them
    "input_image_tokens", "output_image_tokens",  # 0012
    "file_searches", "code_containers",  # 0013
    "route_reason", "cost_avoided_usd", "prefix_hash", "prefix_tokens", "request_hash", "max_output",  # 0014
)  # fmt: skip
USAGE_COLUMNS = ("input_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                 "output_tokens", "reasoning_tokens", "input_audio_tokens", "output_audio_tokens",
                 "web_searches", "input_image_tokens", "output_image_tokens", "file_searches",
                 "code_containers")  # fmt: skip
PriceRows = Callable[[str], PriceRow | None]
USAGE_ROW_COLUMNS = ("ts", "key_id", "team", "feature", "workload", "provider", "model_used", "route", "stream",
                     "input_tokens", "cache_read_tokens", "output_tokens", "max_output", "cost_usd", "prefix_hash",
                     "prefix_tokens", "request_hash", "cache")  # fmt: skip

CALL_ROW_COLUMNS = ("request_id", "ts", "key_id", "end_user", "team", "feature", "model_used", "input_tokens",
                    "output_tokens", "cost_usd")  # fmt: skip


ANOMALY_SELECT = "SELECT id, budget, period_start, threshold, message, fired_at, details FROM alerts"
CALLS_SELECT = "SELECT " + ", ".join(f'"{c}"' for c in CALL_ROW_COLUMNS) + " FROM events"


def anomaly_rows(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows of :data:`ANOMALY_SELECT` as the dicts ``Ledger.anomalies`` answers with."""
    return [{"id": r[0], "name": r[1], "bucket_start": aware(r[2]), "score": r[3], "message": r[4],
             "fired_at": aware(r[5]), "details": orjson.loads(r[6]) if r[6] else {}} for r in rows]  # fmt: skip


class Ledger(Protocol):
    """What TokenOps asks of a ledger. Times are timezone-aware; money is Decimal."""

    url: str

    # --- writes ---
    def append(self, events: Sequence[SpendEvent], price_rows: Iterable[PriceRow] = ()) -> int: ...
    def drain(self, spool_dir: Path, price_rows: PriceRows | None = None, *, timeout: float | None = None,
              quarantine: bool = True) -> int: ...  # fmt: skip
    def insert_key(self, rec: KeyRecord) -> None: ...
    def revoke_key(self, key_id: str) -> bool: ...
    def put_definition(self, kind: str, name: str, definition: Mapping[str, Any], by: str | None) -> None: ...
    def delete_definition(self, kind: str, name: str) -> bool: ...
    def decide_approval(self, approval_id: str, status: ApprovalStatus, *, by: str, at: datetime,
                        until: datetime | None, max_usd: Decimal | None) -> None: ...  # fmt: skip
    # business metrics (tokenops import metrics): all rows or none, in one transaction; a row the ledger holds
    # (same day, metric and tags) has its value replaced
    def put_business_metrics(self, rows: Sequence[MetricRow], source: str | None = None) -> MetricsWritten: ...

    # --- reads ---
    def list_keys(self) -> list[KeyRecord]: ...
    def definitions(self, kind: str) -> list[dict[str, Any]]: ...
    def get_event(self, request_id: str) -> SpendEvent | None: ...
    def event_by_upstream_id(self, upstream_id: str, route: str) -> SpendEvent | None: ...
    def count_events(self) -> int: ...
    # the answered calls (status ok) of a window, as tokenops recommend reads them (USAGE_ROW_COLUMNS), oldest first
    def usage_rows(self, since: datetime | None, until: datetime | None) -> list[tuple[Any, ...]]: ...
    # calls served by another model than the one asked for (route_reason) or from the response cache, oldest first
    def routed_events(self, since: datetime | None, until: datetime | None) -> list[SpendEvent]: ...
    # the billed calls of a window summed into FOCUS charges (see FocusGroup), by bucket start, provider and model
    def focus_groups(self, since: datetime | None, until: datetime | None, bucket_seconds: int,
                     thresholds: Sequence[int]) -> Iterator[FocusGroup]: ...  # fmt: skip
    def spend_report(self, query: ReportQuery) -> SpendReport: ...
    def activity(self, q: ReportQuery, bucket_seconds: int) -> list[ActivityRow]: ...
    def unpriced_models(self) -> list[UnpricedModel]: ...
    # anomalies the detector recorded (alerts of kind anomaly) whose bucket starts in the window, oldest first
    def anomalies(self, since: datetime | None, until: datetime | None = None) -> list[dict[str, Any]]: ...
    # answered calls of a window that used at least min_tokens (input + output), as CALL_ROW_COLUMNS
    def large_calls(self, since: datetime, until: datetime, min_tokens: int,
                    scope: Mapping[str, str] | None = None) -> list[tuple[Any, ...]]: ...
    def spent(self, scope: Scope, start: datetime, end: datetime, unit: str) -> Decimal: ...
    def approval_spend(self) -> dict[str, Decimal]: ...
    def approvals(self) -> list[Approval]: ...
    def fired_alerts(self, since: datetime) -> set[AlertKey]: ...
    def alerts(self, limit: int = 100) -> list[dict[str, Any]]: ...
    # metric rows of one metric (None: every metric) with since <= day < until (either may be None), by day
    def business_metrics(self, metric: str | None = None, since: date | None = None,
                         until: date | None = None) -> list[MetricRow]: ...  # fmt: skip

    # --- meta ---
    def ping(self, timeout: float = 0.5) -> None: ...
    def identity_secret(self) -> str: ...
    def migrate(self) -> list[str]: ...  # apply pending schema migrations now; the names applied
    def close(self) -> None: ...  # let go of connections (the ledger opens them again when next used)

    # --- transfer (tokenops ledger migrate): whole rows of the tables in TABLES, columns as in TABLES ---
    # a page of rows in key order, after the key ``after``: about ``limit`` rows (a backend may return more or
    # fewer; the last page is the empty one)
    def export_rows(self, table: str, after: tuple[Any, ...] | None, limit: int) -> list[dict[str, Any]]: ...
    def import_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int: ...
    def totals(self) -> Totals: ...


DEFINITION_KINDS = ("budget", "limit", "rule")  # what put_definition stores: validated by the policy layer


@dataclass(frozen=True)
class Table:
    """A table that ``tokenops ledger migrate`` copies: its columns, the key it is paged by (rows are exported in
    key order, ``after`` the last key seen) and whether a row may change once written (a re-run then brings it
    up to date; immutable rows are only ever inserted)."""

    columns: tuple[str, ...]
    key: tuple[str, ...]
    mutable: bool = False


# Row values crossing backends: naive UTC datetimes, Decimal, str, int, float, bool, None; tags as dict, tag
# lists as list, JSON documents (prices, definitions, details) as their text. Copied in this order. Not copied:
# spool_progress (a machine's spool, already in the events), schema_migrations (each ledger's own), ledger_meta
# (the identity secret proves which ledger a gateway serves: a copy is another ledger and makes its own).
TABLES: dict[str, Table] = {
    "price_rows": Table(("id", "provider", "model", "effective_from", "effective_to", "source", "prices",
                         "first_used_at", "variant", "hours", *EXTRA_PRICE_FIELDS), ("id",)),
    "keys": Table(("id", "name", "key_hash", "key_prefix", "tags", "locked_tags", "created_at", "revoked_at",
                   "end_user"), ("id",), mutable=True),
    "budgets": Table(("name", "definition", "updated_at", "updated_by"), ("name",), mutable=True),
    "policies": Table(("kind", "name", "definition", "updated_at", "updated_by"), ("kind", "name"), mutable=True),
    "approvals": Table(("id", "status", "key_id", "reason", "model", "message", "requested_at", "decided_at",
                        "decided_by", "until", "max_usd"), ("id",), mutable=True),
    "alerts": Table(("id", "kind", "budget", "period_start", "threshold", "message", "fired_at", "details"), ("id",)),
    "business_metrics": Table(("id", "day", "metric", "tags", "value", "source", "imported_at"), ("id",),
                              mutable=True),
    "events": Table(EVENT_COLUMNS, ("ts", "request_id")),
}  # fmt: skip


@dataclass(frozen=True)
class Totals:
    """What two ledgers holding the same data agree on: rows per table, the events' cost and tokens."""

    rows: dict[str, int]
    cost_usd: Decimal
    tokens: dict[str, int]  # usage column -> sum over the events

    def differences(self, other: Totals) -> list[str]:
        """What differs from ``other``, one phrase each (empty when they agree)."""
        out = [f"{t}: {self.rows.get(t, 0)} rows vs {other.rows.get(t, 0)}" for t in TABLES
               if self.rows.get(t, 0) != other.rows.get(t, 0)]  # fmt: skip
        if self.cost_usd != other.cost_usd:
            out.append(f"total cost: {self.cost_usd:f} vs {other.cost_usd:f} USD")
        out += [f"{c}: {self.tokens.get(c, 0)} vs {other.tokens.get(c, 0)}" for c in USAGE_COLUMNS
                if self.tokens.get(c, 0) != other.tokens.get(c, 0)]  # fmt: skip
        return out


def keyset(table: Table, after: tuple[Any, ...] | None, mark: str, text: str = "") -> tuple[str, list[Any]]:
    """The WHERE fragment of a page after the key ``after`` ("key > after" in key order), with its parameters.
    ``mark`` is the driver's placeholder; ``text`` a collation clause for the text columns of the key."""
    if after is None:
        return "TRUE", []
    cols = [f"{c}{_coll(c, text)}" for c in table.key]
    parts, params = [], [after[0]]
    for i, col in enumerate(cols):
        parts.append("(" + " AND ".join([*(f"{c} = {mark}" for c in cols[:i]), f"{col} > {mark}"]) + ")")
        params += [*after[:i], after[i]]
    return f"({cols[0]} >= {mark} AND ({' OR '.join(parts)}))", params


def _coll(column: str, text: str) -> str:
    return "" if column == "ts" else text


# --- rows -------------------------------------------------------------------------------------------------
def naive_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.astimezone(UTC).replace(tzinfo=None)


def aware(dt: datetime | None) -> datetime | None:
    """A naive UTC timestamp from the database as an aware one (aware ones are taken as they are)."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_ts(value: Any) -> datetime | None:
    """An ISO string or datetime from a spool record, as naive UTC for a TIMESTAMP column."""
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return naive_utc(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def event_values(e: SpendEvent, recorded_at: datetime) -> dict[str, Any]:
    """One event as column -> value (naive UTC times, tags as a dict, missing tags as a list)."""
    u = e.usage
    values = (
        e.request_id, naive_utc(e.ts), e.source, e.provider, e.model_requested, e.model_used, e.route, e.stream,
        u.input_tokens, u.cache_read_tokens, u.cache_write_5m_tokens, u.cache_write_1h_tokens, u.output_tokens,
        u.reasoning_tokens, e.usage_estimated, e.cost_usd, e.price_row_id, e.key_id, e.end_user,
        *(e.tags.get(t) for t in STANDARD_TAGS), dict(e.tags), list(e.missing_tags), e.status, e.http_status,
        e.error_code, e.latency_ms, e.ttft_ms, e.cache, e.upstream_request_id, e.approval_id, recorded_at,
        u.input_audio_tokens, u.output_audio_tokens, u.web_searches, u.input_image_tokens, u.output_image_tokens,
        u.file_searches, u.code_containers, e.route_reason, e.cost_avoided_usd, e.prefix_hash, e.prefix_tokens,
        e.request_hash, e.max_output,
    )  # fmt: skip
    return dict(zip(EVENT_COLUMNS, values, strict=True))


# --- FOCUS export (tokenops.services.focus) ----------------------------------------------------------------
# The calls a provider bills: answered from the cache they cost nothing; a call that consumed nothing and cost
# nothing (refused, or failed before the provider counted a token) is no charge either.
FOCUS_FILTER = "coalesce(cache, '') <> 'hit' AND (input_tokens > 0 OR output_tokens > 0 OR cost_usd <> 0)"
FOCUS_BUCKETS = (3600, 86400)


@dataclass(frozen=True, slots=True)
class FocusGroup:
    """Calls of one bucket, provider, model, key, tag set and price row, summed; ``tier``: how many of the export's
    long-context thresholds their prompts passed (the same for every call of the group, so one set of a row's
    prices applies to all of them); ``unpriced``: calls without a price (``cost_usd`` None)."""

    bucket: datetime
    provider: str
    model: str
    key_id: str | None
    tags: dict[str, str]
    price_row_id: str | None
    unpriced: bool
    tier: int
    calls: int
    min_input_tokens: int
    usage: dict[str, int]  # USAGE_COLUMNS -> the sum (audio and image: as each call bills them, FOCUS_MEDIA)
    cost_usd: Decimal | None
    estimated: bool  # some of the calls' usage is the gateway's estimate


# Audio and image tokens are billed at their own rates only as far as each call's uncached input (or plain output)
# holds them (tokenops.pricing.model.price_lines clamps per call): summed as clamped per call, so that pricing a
# group's sums bills what pricing each call did.
_UNCACHED = "(input_tokens - cache_read_tokens - cache_write_5m_tokens - cache_write_1h_tokens)"
_AUDIO_IN = f"least(input_audio_tokens, {_UNCACHED})"
_AUDIO_OUT = "least(output_audio_tokens, output_tokens - reasoning_tokens)"
FOCUS_MEDIA = {
    "input_audio_tokens": _AUDIO_IN,
    "input_image_tokens": f"least(input_image_tokens, {_UNCACHED} - {_AUDIO_IN})",
    "output_audio_tokens": _AUDIO_OUT,
    "output_image_tokens": f"least(output_image_tokens, output_tokens - reasoning_tokens - {_AUDIO_OUT})",
}


def focus_sql(where: str, epoch: str, bucket_seconds: int, thresholds: Sequence[int]) -> str:
    """The FOCUS charges query: ``epoch`` is the backend's seconds-since-1970 of ``ts``."""
    if bucket_seconds not in FOCUS_BUCKETS:
        raise ValueError(f"a FOCUS charge period is an hour or a day, not {bucket_seconds} s")
    tier = " + ".join(f"(CASE WHEN input_tokens > {int(t)} THEN 1 ELSE 0 END)" for t in sorted(set(thresholds)))
    sums = ", ".join(f"sum({FOCUS_MEDIA.get(c, c)})" for c in USAGE_COLUMNS)
    return (f"SELECT CAST(floor({epoch} / {bucket_seconds}) AS BIGINT) * {bucket_seconds} AS b, provider, "
            f"model_used, key_id, tags, price_row_id, cost_usd IS NULL AS unpriced, {tier or '0'} AS tier, count(*), "
            f"min(input_tokens), {sums}, sum(cost_usd), bool_or(usage_estimated) FROM events "
            f"WHERE {where} AND {FOCUS_FILTER} GROUP BY b, provider, model_used, key_id, tags, price_row_id, unpriced, "
            "tier ORDER BY b, provider, model_used, key_id, price_row_id")  # fmt: skip


def focus_group(r: Sequence[Any]) -> FocusGroup:
    n = len(USAGE_COLUMNS)
    tags = r[4]
    tags = dict(orjson.loads(tags) if isinstance(tags, str | bytes) else tags or {})
    return FocusGroup(
        bucket=datetime.fromtimestamp(int(r[0]), UTC), provider=r[1] or "", model=r[2] or "", key_id=r[3],
        tags=tags, price_row_id=r[5], unpriced=bool(r[6]), tier=int(r[7]), calls=int(r[8]),
        min_input_tokens=int(r[9]), usage={c: int(v or 0) for c, v in zip(USAGE_COLUMNS, r[10:10 + n], strict=True)},
        cost_usd=None if r[10 + n] is None else Decimal(r[10 + n]), estimated=bool(r[11 + n]),
    )  # fmt: skip


def price_row_from(r: Mapping[str, Any]) -> PriceRow:
    """A ``price_rows`` row (as :meth:`Ledger.export_rows` gives it) as the :class:`PriceRow` it recorded: the
    inverse of :func:`price_row_values`; its id is the one recorded."""
    prices = orjson.loads(r["prices"]) if isinstance(r["prices"], str | bytes) else r["prices"]

    def dec(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    tiers = tuple(LongContextTier(above_input_tokens=int(t["above_input_tokens"]),
                                  **{n: dec(t.get(n)) for n in PRICE_FIELDS})
                  for t in prices.get("tiers") or ())  # fmt: skip
    start = aware(r["effective_from"])
    assert start is not None
    rates: dict[str, Any] = {n: dec(prices.get(n)) for n in PRICE_FIELDS}
    rates.update({n: dec(r.get(n)) for n in EXTRA_PRICE_FIELDS})
    return PriceRow(
        provider=r["provider"], model=r["model"], effective_from=start, effective_to=aware(r["effective_to"]),
        source=r["source"], per_request=dec(prices.get("per_request")), tiers=tiers, variant=r.get("variant") or "",
        hours=parse_hours(r.get("hours")), id=r["id"], **rates,
    )  # fmt: skip


def window_filter(first: str, since: datetime | None, until: datetime | None, mark: str,
                  column: str = "ts") -> tuple[str, list[Any]]:  # fmt: skip
    """``WHERE`` text for ``first`` and ``since <= column < until`` (either may be None), with its parameters;
    ``mark`` is the driver's placeholder."""
    where, params = [first], []
    if since is not None:
        where.append(f"{column} >= {mark}")
        params.append(naive_utc(since))
    if until is not None:
        where.append(f"{column} < {mark}")
        params.append(naive_utc(until))
    return " AND ".join(where), params


def report_where(q: ReportQuery, mark: str, dimension_sql: Callable[[Dimension, str], str]) -> tuple[str, list[Any]]:
    """The events ``WHERE`` of a report query (its window and filters) with its parameters, for a backend's
    placeholder ``mark`` and its SQL of a dimension."""
    conds: list[str] = ["TRUE"]
    params: list[Any] = []
    if q.since is not None:
        conds.append(f"ts >= {mark}")
        params.append(naive_utc(q.since))
    if q.until is not None:
        conds.append(f"ts < {mark}")
        params.append(naive_utc(q.until))
    for d, value in q.where:
        conds.append(f"{dimension_sql(d, q.timezone)} = {mark}")
        params.append(value)
    return " AND ".join(conds), params


def row_event(row: Sequence[Any]) -> SpendEvent:
    """A row of EVENT_COLUMNS back into an event."""
    d = dict(zip(EVENT_COLUMNS, row, strict=True))
    usage = {k: d.pop(k) for k in USAGE_COLUMNS}
    for t in STANDARD_TAGS:
        d.pop(t)
    d.pop("recorded_at")
    d["usage"] = usage
    d["ts"] = aware(d["ts"])
    tags = d["tags"]
    d["tags"] = dict(orjson.loads(tags) if isinstance(tags, str | bytes) else tags or {})
    d["cost_usd"] = None if d["cost_usd"] is None else format(d["cost_usd"], "f")
    d["cost_avoided_usd"] = None if d["cost_avoided_usd"] is None else format(d["cost_avoided_usd"], "f")
    return SpendEvent.from_dict(d)


def price_row_json(row: PriceRow) -> str:
    prices: dict[str, Any] = {n: (None if getattr(row, n) is None else str(getattr(row, n))) for n in PRICE_FIELDS}
    prices["per_request"] = None if row.per_request is None else str(row.per_request)
    prices["tiers"] = [
        {"above_input_tokens": t.above_input_tokens, **{n: (None if getattr(t, n) is None else str(getattr(t, n)))
                                                         for n in PRICE_FIELDS}}
        for t in row.tiers
    ]
    return orjson.dumps(prices).decode()


# --- spool records (alert fired, approval requested) -----------------------------------------------------
_RECORD_FIELDS = {
    "alert": ("id", "kind", "budget", "period_start", "message", "fired_at"),
    "approval": ("id", "reason", "requested_at"),
    "price_row": ("id", "provider", "model", "source", "prices"),
}


def price_row_record(row: PriceRow) -> dict[str, Any]:
    """The spool record of a price row, written before the first event priced with it, so that a drain needs
    no price catalog of its own (see :class:`tokenops.gateway.writer.LedgerWriter`). ``variant``, ``hours`` and
    the rates of :data:`~tokenops.pricing.model.EXTRA_PRICE_FIELDS` (web searches, audio and image tokens; exact decimal
    strings) are written only when set (a service tier's row, a row of some hours of the day, a row with a web
    search, audio or image price)."""
    record = {"record": "price_row", "id": row.id, "provider": row.provider, "model": row.model,
              "effective_from": None if row.effective_from is None else row.effective_from.isoformat(),
              "effective_to": None if row.effective_to is None else row.effective_to.isoformat(),
              "source": row.source, "prices": price_row_json(row)}  # fmt: skip
    if row.variant:
        record["variant"] = row.variant
    if row.hours:
        record["hours"] = format_hours(row.hours)
    for name in EXTRA_PRICE_FIELDS:
        value = getattr(row, name)
        if value is not None:
            record[name] = format(value, "f")
    return record


def price_row_values(r: Mapping[str, Any], now: datetime) -> list[Any]:
    """The ``price_rows`` columns of a price row record (of a catalog row: ``price_row_values(price_row_record(row),
    now)``), ``now`` being when it was recorded, in the order of :data:`PRICE_ROW_INSERT`."""
    return [r["id"], r["provider"], r["model"], parse_ts(r.get("effective_from")), parse_ts(r.get("effective_to")),
            r["source"], r["prices"], now, r.get("variant") or "", r.get("hours") or None,
            *(None if r.get(n) is None else Decimal(str(r[n])) for n in EXTRA_PRICE_FIELDS)]  # fmt: skip


def price_row_insert(param: str) -> str:
    """The INSERT of one ``price_rows`` row (``param``: the driver's placeholder), ignoring a row already there."""
    columns = TABLES["price_rows"].columns
    return (f"INSERT INTO price_rows ({', '.join(columns)}) VALUES ({', '.join([param] * len(columns))}) "
            "ON CONFLICT DO NOTHING")  # fmt: skip


def record_problem(r: dict[str, Any]) -> str | None:
    """Why a spool record cannot be applied, or None."""
    kind = r.get("record")
    required = _RECORD_FIELDS.get(kind) if isinstance(kind, str) else None
    if required is None:
        return f"unknown spool record {kind!r}"
    for name in required:
        if not isinstance(r.get(name), str):
            return f"{kind} record without a text {name!r}"
    for name in ("key_id", "model", "variant", "hours"):
        if r.get(name) is not None and not isinstance(r[name], str):
            return f"{kind} record with a {name!r} that is not text"
    threshold = r.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        return f"{kind} record with a threshold that is not a number"
    if kind == "price_row":
        try:
            if not isinstance(orjson.loads(r["prices"]), dict):
                raise ValueError
        except ValueError:
            return "price_row record whose prices are not a JSON object"
        try:
            parse_hours(r.get("hours") if isinstance(r.get("hours"), str) else None)
        except ValueError:
            return "price_row record whose hours are not HH:MM-HH:MM windows"
        for name in EXTRA_PRICE_FIELDS:
            value = r.get(name)
            if value is None:
                continue
            try:
                if isinstance(value, bool) or not Decimal(str(value)).is_finite() or abs(Decimal(str(value))) >= 10**26:
                    raise ValueError
            except (ValueError, ArithmeticError):
                return f"price_row record whose {name} is not a price"
    for name in ("period_start", "fired_at", "requested_at", "effective_from", "effective_to"):
        if r.get(name) is not None:  # absent or null: nothing to parse (price rows may be open-ended)
            try:
                parse_ts(r[name])
            except (ValueError, TypeError):
                return f"{kind} record with an invalid {name!r}"
    return None


def quarantine(spool_dir: Path, segment: str, bad: list[tuple[bytes, str]]) -> None:
    """Keep lines the ledger cannot take in ``rejected.log`` (one JSON object a line), and say so in the log."""
    path = spool_dir / spoolmod.REJECTED
    now = datetime.now(UTC).isoformat()
    with open(path, "ab") as fh:
        for line, reason in bad:
            log.error("spool %s: a line the ledger cannot take is kept in %s: %s", segment, path, reason)
            fh.write(orjson.dumps({"at": now, "segment": segment, "reason": reason,
                                   "line": line.decode("utf-8", "backslashreplace")}) + b"\n")  # fmt: skip
        fh.flush()
        os.fsync(fh.fileno())


# --- the drain --------------------------------------------------------------------------------------------
class Session(Protocol):
    """One open database connection's primitives for the drain (see :func:`drain_spool`)."""

    def progress(self) -> dict[str, int]: ...
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def probe(self) -> contextlib.AbstractContextManager[None]: ...  # a transaction that is always rolled back
    def known_price_rows(self, ids: list[str]) -> set[str]: ...
    def record_price_rows(self, rows: Iterable[PriceRow]) -> None: ...
    def insert_events(self, events: Sequence[SpendEvent]) -> int: ...
    def insert_lines(self, lines: Sequence[EventLine]) -> int: ...
    def apply_record(self, record: dict[str, Any]) -> None: ...
    def set_progress(self, segment: str, offset: int) -> None: ...
    def forget_progress(self, segments: list[str]) -> None: ...


def drain_spool(session: Session, spool_dir: Path, price_rows: PriceRows | None, refused: tuple[type[BaseException], ...],
                quarantine_bad: bool = True) -> int:  # fmt: skip
    """Move everything in the spool into the ledger through ``session``; returns the events inserted.

    ``refused``: the backend's exceptions that mean "the database will not take this data" (as opposed to
    "the database is not working"), which send the events of a batch to be tried one by one.
    """
    found = spoolmod.segments(spool_dir)
    if not found:
        return 0
    inserted = 0
    progress = session.progress()
    for seg in spoolmod.pending(spool_dir, progress):
        if seg.lines:
            inserted += _drain_segment(session, spool_dir, seg, price_rows, refused, quarantine_bad)
        if not seg.live:
            _retire(session, spool_dir, seg, quarantine_bad)
    names = {p.name for p in found}
    gone = [name for name in progress if name not in names]
    if gone:  # segments deleted by hand, or rewritten by a spool that found its segment deleted
        session.forget_progress(gone)
    return inserted


class EventLine:
    """A spool line holding a valid event in :meth:`SpendEvent.to_json`'s shape, with what the drain needs of
    it: stored as it is (DuckDB reads the lines themselves) or built into an event (:meth:`event`)."""

    __slots__ = ("line", "request_id", "ts", "price_row_id", "raw", "_event")

    def __init__(self, line: bytes, request_id: str, ts: datetime, price_row_id: str | None,
                 raw: bytes | None = None, event: SpendEvent | None = None):  # fmt: skip
        self.line = line
        self.request_id = request_id
        self.ts = ts
        self.price_row_id = price_row_id
        self.raw = line if raw is None else raw  # the spool's line, kept in rejected.log if the ledger refuses it
        self._event = event

    @classmethod
    def of(cls, event: SpendEvent, raw: bytes | None = None) -> EventLine:
        return cls(event.to_json(), event.request_id, event.ts, event.price_row_id, raw, event)

    def event(self) -> SpendEvent:
        """The event (built from the line once, for a backend that stores events rather than lines)."""
        if self._event is None:
            self._event = SpendEvent.from_json(self.line)
        return self._event


def _drain_segment(session: Session, spool_dir: Path, seg: spoolmod.SegmentRead, price_rows: PriceRows | None,
                   refused: tuple[type[BaseException], ...], quarantine_bad: bool) -> int:  # fmt: skip
    events: list[EventLine] = []
    records: list[dict[str, Any]] = []
    bad: list[tuple[bytes, str]] = []
    for line in seg.lines:
        wire = canonical(line)
        if wire is not None:  # the usual case: a line as the gateway wrote it, stored without re-encoding
            events.append(EventLine(line, wire.request_id, wire.ts, wire.price_row_id))
            continue
        try:
            obj = orjson.loads(line)
            if isinstance(obj, dict) and "record" in obj:
                problem = record_problem(obj)
                if problem:
                    raise ValueError(problem)
                records.append(obj)
                continue
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            event = SpendEvent.from_dict(obj)  # an older or hand-written line: normalised, or said what is wrong
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            bad.append((line, f"unreadable: {exc}"))
            continue
        problems = event.problems()
        if problems:
            bad.append((line, "; ".join(problems)))
            continue
        events.append(EventLine.of(event, line))
    try:
        return _commit(session, spool_dir, seg, events, records, price_rows, bad, quarantine_bad)
    except refused as exc:
        log.error("spool %s: the ledger refused a batch (%s); looking for the events it refuses", seg.name, exc)
    good: list[EventLine] = []
    good_records: list[dict[str, Any]] = []
    for item in events:
        if not _refuses(session, functools.partial(session.insert_lines, [item]), item.raw, bad, refused):
            good.append(item)
    for record in records:
        if not _refuses(session, functools.partial(session.apply_record, record), orjson.dumps(record), bad, refused):
            good_records.append(record)
    return _commit(session, spool_dir, seg, good, good_records, price_rows, bad, quarantine_bad)


def _refuses(session: Session, write: Callable[[], object], line: bytes, bad: list[tuple[bytes, str]],
             refused: tuple[type[BaseException], ...]) -> bool:  # fmt: skip
    """Try one write in a transaction that is rolled back; a refusal is noted in ``bad``."""
    try:
        with session.probe():
            write()
    except refused as exc:
        bad.append((line, f"refused by the ledger: {exc}"))
        return True
    return False


def _commit(session: Session, spool_dir: Path, seg: spoolmod.SegmentRead, events: list[EventLine],
            records: list[dict[str, Any]], price_rows: PriceRows | None, bad: list[tuple[bytes, str]],
            quarantine_bad: bool) -> int:  # fmt: skip
    with session.transaction():
        for record in records:  # price rows first: the spool carries each before the first event priced with it
            session.apply_record(record)
        used = sorted({e.price_row_id for e in events if e.price_row_id})
        if price_rows is not None and used:
            missing = set(used) - session.known_price_rows(used)
            if missing:  # a spool written before price rows were spooled: from the catalog
                session.record_price_rows(r for r in (price_rows(i) for i in sorted(missing)) if r is not None)
        n = session.insert_lines(events)
        session.set_progress(seg.name, seg.end)
        if bad and quarantine_bad:
            # before the commit that moves past them: a crash in between keeps them twice, never zero times
            quarantine(spool_dir, seg.name, bad)
    return n


def _retire(session: Session, spool_dir: Path, seg: spoolmod.SegmentRead, quarantine_bad: bool) -> None:
    """Remove a segment no process appends to any more, once the ledger holds all of it."""
    path = spool_dir / seg.name
    try:
        tail = spoolmod.read_tail(path, seg.end)
    except FileNotFoundError:
        return
    valid_rest = tail if seg.valid is None else tail[: max(0, seg.valid - seg.end)]
    if b"\n" in valid_rest:
        return  # more complete lines than one pass reads: the next drain takes them
    if seg.valid is not None and len(tail) > len(valid_rest):
        void = tail[len(valid_rest):]
        log.warning("spool %s: %d bytes past its valid part were written by a write that failed (their calls "
                    "were answered 503); kept in %s", seg.name, len(void), spool_dir / spoolmod.REJECTED)  # fmt: skip
        if quarantine_bad:
            quarantine(spool_dir, seg.name, [(void, "written by a write that failed: its calls were answered 503 "
                                                    "and are recorded from the spool's retry")])  # fmt: skip
        tail = valid_rest
    if tail:
        log.warning("spool %s: its writer died mid-line; the %d-byte torn line (a call never answered) is kept in "
                    "%s", seg.name, len(tail), spool_dir / spoolmod.REJECTED)  # fmt: skip
        if quarantine_bad:
            quarantine(spool_dir, seg.name, [(tail, "torn last line of a dead segment: its call was never answered")])
    path.unlink(missing_ok=True)
    session.forget_progress([seg.name])


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield
