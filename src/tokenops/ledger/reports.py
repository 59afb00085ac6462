"""The shapes the ledger's read side answers with, and the words a report may be grouped or filtered by.

A backend turns a :class:`ReportQuery` into its own SQL; everything a user can get wrong (an unknown
dimension, a time zone that does not exist, a dimension named twice) is refused here, once, for every
backend. Totals are exact: costs are summed as DECIMAL(38,12) by the database, and unpriced calls are counted
apart instead of adding a silent $0: every row says how many of its calls were unpriced (the definition is
:data:`UNPRICED_SQL`, the one ``tokenops prices list --unpriced`` uses too), and a table shows ``unpriced``, not
``0.00``, as the cost of a row none of whose calls had a price.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tokenops.errors import UsageError
from tokenops.money import ZERO, format_usd
from tokenops.tags import STANDARD_TAGS, UNTAGGED, check_name

NONE = "(none)"
UNPRICED = "unpriced"  # what a table shows as the cost of a row whose calls all lack a price
# An event is unpriced when no price was known for it: its cost is NULL, never a silent 0 (both backends).
UNPRICED_SQL = "cost_usd IS NULL"
# The columns of a spend report's table (after the --by columns): the calls, then how many of them were priced and
# unpriced (see SpendRow.table_row).
TABLE_COLUMNS = ("requests", "priced", "unpriced", "input_tokens", "output_tokens", "cost_usd")
# dimension -> events column
FIXED = {"model": "model_used", "provider": "provider", "key": "key_id", "user": "end_user", "status": "status",
         "source": "source", "route": "route"}  # fmt: skip
TIME_DIMENSIONS = ("day", "week", "month")


@dataclass(frozen=True)
class Dimension:
    """One --by / --where word: a fixed column, a time bucket, a standard tag column or a free tag."""

    name: str
    kind: str  # "fixed" | "time" | "standard_tag" | "tag"
    column: str = ""  # the events column, for fixed dimensions and standard tags

    @property
    def missing(self) -> str:
        """What a row without a value shows."""
        return NONE if self.kind == "fixed" else UNTAGGED


def dimension(name: str) -> Dimension:
    if name in FIXED:
        return Dimension(name, "fixed", FIXED[name])
    if name in TIME_DIMENSIONS:
        return Dimension(name, "time")
    if name in STANDARD_TAGS:
        return Dimension(name, "standard_tag", name)
    try:
        check_name(name)  # a tag name: safe to inline in SQL
    except ValueError:
        raise UsageError(f"cannot group or filter by {name!r}: not a tag name or a known dimension") from None
    return Dimension(name, "tag")


def check_timezone(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_+\-/]+", name):
        raise UsageError(f"unknown time zone {name!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None
    return name


@dataclass(frozen=True)
class ReportQuery:
    by: tuple[Dimension, ...]
    since: datetime | None
    until: datetime | None
    where: tuple[tuple[Dimension, str], ...]
    timezone: str
    limit: int | None = None

    @classmethod
    def build(cls, by: Sequence[str], since: datetime | None = None, until: datetime | None = None,
              where: Mapping[str, str] | None = None, timezone: str = "UTC", limit: int | None = None) -> ReportQuery:  # fmt: skip
        names = [b.strip() for b in by if b.strip()]
        if len(set(names)) != len(names):
            raise UsageError("--by names a dimension twice")
        return cls(
            by=tuple(dimension(b) for b in names),
            since=None if since is None else since.astimezone(UTC),
            until=None if until is None else until.astimezone(UTC),
            where=tuple((dimension(k), v) for k, v in (where or {}).items()),
            timezone=check_timezone(timezone),
            limit=limit,
        )


@dataclass
class SpendRow:
    keys: dict[str, str]
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    unpriced_requests: int = 0

    @property
    def priced_requests(self) -> int:
        return self.requests - self.unpriced_requests

    @property
    def all_unpriced(self) -> bool:
        """No call of the row had a price: its ``cost_usd`` of 0 is not a cost, it is unknown."""
        return self.requests > 0 and self.unpriced_requests == self.requests

    def to_json(self) -> dict[str, Any]:
        """The row of ``--format json`` and CSV (the contract's keys, then ``unpriced_requests``)."""
        return {
            **self.keys,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": format_usd(self.cost_usd),
            "unpriced_requests": self.unpriced_requests,
        }

    def table_row(self) -> dict[str, Any]:
        """The row as a table shows it (:data:`TABLE_COLUMNS`): priced and unpriced calls apart, and
        ``unpriced`` instead of ``0.00`` as the cost of a row whose calls all lack a price."""
        return {
            **self.keys,
            "requests": self.requests,
            "priced": self.priced_requests,
            "unpriced": self.unpriced_requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": UNPRICED if self.all_unpriced else format_usd(self.cost_usd),
        }


@dataclass
class SpendReport:
    by: list[str]
    rows: list[SpendRow] = field(default_factory=list)
    unpriced_requests: int = 0

    @property
    def total_cost_usd(self) -> Decimal:
        total = ZERO
        for r in self.rows:
            total += r.cost_usd
        return total

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [r.to_json() for r in self.rows],
            "total_cost_usd": format_usd(self.total_cost_usd),
            "unpriced_requests": self.unpriced_requests,
        }

    @property
    def json_columns(self) -> list[str]:
        """The columns of CSV output: the --by dimensions, then the keys of :meth:`SpendRow.to_json`."""
        return [*self.by, "requests", "input_tokens", "output_tokens", "cost_usd", "unpriced_requests"]

    @property
    def table_columns(self) -> list[str]:
        return [*self.by, *TABLE_COLUMNS]

    def table_rows(self) -> list[dict[str, Any]]:
        return [r.table_row() for r in self.rows]

    def footer(self) -> str:
        """The line under a table: the total and how many of the calls were priced and unpriced."""
        text = (f"total: ${format_usd(self.total_cost_usd)}   priced calls: {self.requests - self.unpriced_requests}"
                f"   unpriced calls: {self.unpriced_requests}")  # fmt: skip
        if self.unpriced_requests:
            text += " (no price known: tokenops prices list --unpriced)"
        return text


def report_from_rows(q: ReportQuery, rows: Sequence[Sequence[Any]]) -> SpendReport:
    """Rows of (dims..., requests, input, output, cost, unpriced), biggest cost first, into a report."""
    report = SpendReport(by=[d.name for d in q.by])
    n = len(q.by)
    for row in rows:
        if not q.by and int(row[n]) == 0:
            continue
        report.rows.append(SpendRow(
            keys={d.name: str(row[i]) for i, d in enumerate(q.by)}, requests=int(row[n]),
            input_tokens=int(row[n + 1]), output_tokens=int(row[n + 2]), cost_usd=Decimal(row[n + 3]),
            unpriced_requests=int(row[n + 4]),
        ))  # fmt: skip
    if q.limit is not None:
        report.rows = report.rows[: q.limit]
    report.unpriced_requests = sum(r.unpriced_requests for r in report.rows)
    return report


@dataclass(frozen=True)
class UnpricedModel:
    """A model that served calls with no known price (``tokenops prices list --unpriced``)."""

    provider: str
    model: str
    requests: int
    first_seen: datetime
    last_seen: datetime
    input_tokens: int
    output_tokens: int


# --- activity: the same events in fixed-width time buckets (anomaly detection) --------------------------------
MAX_BUCKETS = 200_000  # rows one activity query may answer with


@dataclass(frozen=True)
class ActivityRow:
    """What a scope did in one time bucket: the signals the anomaly detector watches."""

    bucket: datetime  # the bucket's start, UTC
    keys: dict[str, str]
    requests: int
    errors: int  # calls that failed (upstream error or gateway error), blocked calls not counted
    rate_limited: int  # calls the provider answered with 429
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    latency_ms_sum: float  # over successful calls that report a latency
    latency_n: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


ERROR_SQL = "status IN ('upstream_error', 'error')"
RATE_LIMITED_SQL = "(status = 'upstream_error' AND http_status = 429)"


def activity_from_rows(q: ReportQuery, rows: Sequence[Sequence[Any]]) -> list[ActivityRow]:
    """Rows of (bucket epoch seconds, dims..., requests, errors, rate_limited, input, output, cost, latency sum,
    latency count) into :class:`ActivityRow` values, oldest first."""
    n = len(q.by)
    out = []
    for r in rows:
        out.append(ActivityRow(
            bucket=datetime.fromtimestamp(int(r[0]), UTC), keys={d.name: str(r[1 + i]) for i, d in enumerate(q.by)},
            requests=int(r[n + 1]), errors=int(r[n + 2]), rate_limited=int(r[n + 3]), input_tokens=int(r[n + 4]),
            output_tokens=int(r[n + 5]), cost_usd=Decimal(r[n + 6]), latency_ms_sum=float(r[n + 7] or 0.0),
            latency_n=int(r[n + 8]),
        ))  # fmt: skip
    return out


def check_bucket(seconds: int) -> int:
    if not 1 <= seconds <= 31 * 86400:
        raise UsageError(f"a time bucket must be 1 s to 31 days, not {seconds} s")
    return seconds
