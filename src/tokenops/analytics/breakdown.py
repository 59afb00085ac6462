"""Spend breakdowns: ``tokenops report spend --by team,model``.

Totals are exact: costs are DECIMAL(38,12) summed by the database, the report's total is the sum of its
rows, and unpriced calls (no known price) are counted apart instead of adding a silent $0. Missing tag
values show as ``(untagged)``: untagged spend is reported, never hidden.

Time buckets (day, week, month) are taken in the report's time zone (UTC unless asked); weeks start on
Monday (ISO). ``since`` is inclusive and ``until`` exclusive.
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
_FIXED = {
    "model": "model_used",
    "provider": "provider",
    "key": "key_id",
    "user": "end_user",
    "status": "status",
    "source": "source",
    "route": "route",
}
TIME_DIMENSIONS = ("day", "week", "month")


@dataclass
class SpendRow:
    keys: dict[str, str]
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    unpriced_requests: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.keys,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": format_usd(self.cost_usd),
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

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [r.to_json() for r in self.rows],
            "total_cost_usd": format_usd(self.total_cost_usd),
            "unpriced_requests": self.unpriced_requests,
        }


def _tz(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None


def dimension_sql(name: str, tz: str) -> str:
    """SQL for one --by/--where dimension; tag names are validated so they can be inlined safely."""
    if name in _FIXED:
        return f"coalesce(nullif({_FIXED[name]}, ''), '{NONE}')"
    if name in TIME_DIMENSIONS:
        local = f"timezone('{tz}', ts::TIMESTAMPTZ)" if tz != "UTC" else "ts"
        fmt = {"day": "%Y-%m-%d", "week": "%G-W%V", "month": "%Y-%m"}[name]
        return f"strftime({local}, '{fmt}')"
    if name in STANDARD_TAGS:
        return f"coalesce({name}, '{UNTAGGED}')"
    try:
        check_name(name)
    except ValueError:
        raise UsageError(f"cannot group or filter by {name!r}: not a tag name or a known dimension") from None
    return f"coalesce(tags['{name}'], '{UNTAGGED}')"


def spend_report(
    conn: Any,
    *,
    by: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
    where: Mapping[str, str] | None = None,
    timezone: str = "UTC",
    limit: int | None = None,
) -> SpendReport:
    """Group spend by dimensions. ``conn`` is an open ledger connection (DuckDB)."""
    _tz(timezone)
    if not re.fullmatch(r"[A-Za-z0-9_+\-/]+", timezone):
        raise UsageError(f"unknown time zone {timezone!r}")
    by = [b.strip() for b in by if b.strip()]
    if len(set(by)) != len(by):
        raise UsageError("--by names a dimension twice")
    dims = [dimension_sql(b, timezone) for b in by]
    conds, params = ["TRUE"], []
    if since is not None:
        conds.append("ts >= ?")
        params.append(since.astimezone(UTC).replace(tzinfo=None))
    if until is not None:
        conds.append("ts < ?")
        params.append(until.astimezone(UTC).replace(tzinfo=None))
    for name, value in (where or {}).items():
        conds.append(f"{dimension_sql(name, timezone)} = ?")
        params.append(value)
    select_dims = "".join(f"{d} AS d{i}, " for i, d in enumerate(dims))
    group = f"GROUP BY {', '.join(f'd{i}' for i in range(len(dims)))}" if dims else ""
    sql = (
        f"SELECT {select_dims} count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
        f"coalesce(sum(cost_usd), 0)::DECIMAL(38,12), count(*) FILTER (WHERE cost_usd IS NULL) "
        f"FROM events WHERE {' AND '.join(conds)} {group} ORDER BY {len(dims) + 4} DESC, "
        + ", ".join([f"d{i}" for i in range(len(dims))] + ["1"])
    )
    report = SpendReport(by=list(by))
    for row in conn.execute(sql, params).fetchall():
        keys = {b: str(row[i]) for i, b in enumerate(by)}
        n = len(by)
        if not dims and row[n] == 0:
            continue
        report.rows.append(
            SpendRow(
                keys=keys,
                requests=int(row[n]),
                input_tokens=int(row[n + 1]),
                output_tokens=int(row[n + 2]),
                cost_usd=Decimal(row[n + 3]),
                unpriced_requests=int(row[n + 4]),
            )
        )
        report.unpriced_requests += int(row[n + 4])
    if limit is not None:
        report.rows = report.rows[:limit]
        report.unpriced_requests = sum(r.unpriced_requests for r in report.rows)
    return report
