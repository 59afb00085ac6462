"""Unit economics: business counts brought into the ledger, and spend per unit of them.

**Import** (``tokenops import metrics FILE.csv``): a CSV file with a header row ``date,metric,value`` followed by
any number of tag columns (``team,feature,customer``…). One row is the count of a metric on a day for the tags
given on that row (an empty cell: the row does not have that tag). Every problem is a
:class:`~tokenops.errors.UsageError` ``FILE:LINE: what is wrong``, found before anything is written: a file
with an error writes nothing. Importing a (date, metric, tags) the ledger holds replaces its value, so an
import can be run again (the answer says how many rows were added and how many replaced).

**Report** (``tokenops report units``): per period (day, week or month in a time zone), the spend of a scope
(the ledger's spend report filtered by the scope's tags), the metric's count in the same scope (the metric rows
whose tags hold every condition of the scope: a row without one of the scope's tags does not match it), the
cost per unit (exact, to the pico-dollar; none where the count is 0), the trend of the cost per unit (its
change from the first to the last period that has units, and the least-squares slope per period) and, given
a value per unit, the ROI: (value × units − cost) / cost.

The window is whole days in the report's time zone: ``--since`` starts at the beginning of its day and
``--until`` ends at the end of the day before it (a time inside a day takes in that whole day), so that the
spend and the counts cover the same days.
"""

from __future__ import annotations

import csv
import decimal
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tokenops.errors import UsageError
from tokenops.ledger.base import Ledger
from tokenops.ledger.business_metrics import MetricRow, MetricsWritten
from tokenops.ledger.reports import FIXED, TIME_DIMENSIONS, ReportQuery, check_timezone
from tokenops.money import PICO, format_usd
from tokenops.tags import MAX_TAGS, TagError, check_name, parse_tags
from tokenops.textfile import read_text

HEADER = ("date", "metric", "value")
RESERVED = {*HEADER, *FIXED, *TIME_DIMENSIONS}  # names a tag column may not have (a report word of its own)
MAX_VALUE = Decimal(10) ** 26  # DECIMAL(38,12) holds 26 digits before the point
PERIODS = ("day", "week", "month")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CONTEXT = decimal.Context(prec=60)
ROI_PLACES = Decimal("0.0001")


# --- import -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricsFile:
    path: str
    rows: list[MetricRow]
    tag_columns: list[str]


def read_metrics_csv(path: str | Path) -> MetricsFile:
    """Read and check a metrics CSV file (see the module's doc); raises UsageError ``FILE:LINE: what``."""
    name = str(path)
    text = read_text(path, what="CSV file")
    # lines end at \n, \r\n or \r only (as the file's line numbers count them): str.splitlines would also break
    # at \f, \x1c or U+2028 inside a value, misreading the row and naming the wrong line
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise UsageError(f"{name}:1: empty file: expected a header row {','.join(HEADER)}[,tag,…]")
        columns = _header(name, reader.line_num, [c.strip() for c in header])
        tags = columns[len(HEADER):]
        rows: list[MetricRow] = []
        seen: dict[str, int] = {}
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            row = _row(name, line, record, columns)
            if row.id in seen:
                raise UsageError(f"{name}:{line}: repeats line {seen[row.id]} (same date, metric and tags "
                                 f"{_tags_text(row.tags)}): a file gives each count once")  # fmt: skip
            seen[row.id] = line
            rows.append(row)
    except csv.Error as exc:
        raise UsageError(f"{name}:{reader.line_num}: not valid CSV: {exc}") from None
    if not rows:
        raise UsageError(f"{name}:{reader.line_num or 1}: no rows after the header: nothing to import")
    return MetricsFile(name, rows, tags)


def _header(name: str, line: int, columns: list[str]) -> list[str]:
    if [c.lower() for c in columns[: len(HEADER)]] != list(HEADER):
        raise UsageError(f"{name}:{line}: the header must start with {','.join(HEADER)} (then tag columns), "
                         f"not {','.join(columns[:3])!r}")  # fmt: skip
    tags = columns[len(HEADER):]
    if len(tags) > MAX_TAGS:
        raise UsageError(f"{name}:{line}: {len(tags)} tag columns; at most {MAX_TAGS}")
    seen: set[str] = set()
    for col, tag in enumerate(tags, start=len(HEADER) + 1):
        try:
            check_name(tag)
        except TagError as exc:
            raise UsageError(f"{name}:{line}: column {col}: {exc}") from None
        if tag in RESERVED:
            raise UsageError(f"{name}:{line}: column {col}: {tag!r} cannot be a tag column (it is a word of "
                             "reports of its own: date, metric, value, model, provider, key, user, status, source, "
                             "route, day, week, month)")  # fmt: skip
        if tag in seen:
            raise UsageError(f"{name}:{line}: column {col}: tag column {tag!r} appears twice")
        seen.add(tag)
    return [c.lower() for c in columns[: len(HEADER)]] + tags


def _row(name: str, line: int, record: list[str], columns: list[str]) -> MetricRow:
    if len(record) != len(columns):
        raise UsageError(f"{name}:{line}: {len(record)} fields, but the header has {len(columns)}")
    day_text, metric, value_text = (c.strip() for c in record[:3])
    if not _DATE.match(day_text):
        raise UsageError(f"{name}:{line}: date {day_text!r} is not a date like 2026-10-01")
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        raise UsageError(f"{name}:{line}: date {day_text!r} is not a date like 2026-10-01") from None
    try:
        check_name(metric)
    except TagError:
        raise UsageError(f"{name}:{line}: metric {metric!r} is not a metric name: use letters, digits, '_', '-', "
                         "'.' (start with a letter or '_')") from None  # fmt: skip
    value = _value(name, line, value_text)
    tags: dict[str, str] = {}
    for tag, cell in zip(columns[3:], record[3:], strict=True):
        cell = cell.strip()
        if not cell:
            continue
        try:
            ok = parse_tags(f"{tag}={cell}") == {tag: cell}
        except TagError:
            ok = False
        if not ok:
            shown = cell if len(cell) <= 40 else cell[:40] + "…"
            raise UsageError(f"{name}:{line}: tag {tag} has an invalid value {shown!r} (1 to 200 characters, "
                             "without ',' or '=')")  # fmt: skip
        tags[tag] = cell
    return MetricRow(day, metric, value, tags)


def _value(name: str, line: int, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except decimal.InvalidOperation:
        value = None
    if value is None or not value.is_finite() or not text:
        raise UsageError(f"{name}:{line}: value {text!r} is not a number")
    if value.is_signed() and value != 0 or text.startswith("-"):
        raise UsageError(f"{name}:{line}: value {text} is negative: a count is 0 or more")
    if value >= MAX_VALUE:
        raise UsageError(f"{name}:{line}: value {text} is too large (at most 26 digits before the point)")
    if value != value.quantize(PICO, context=_CONTEXT):
        raise UsageError(f"{name}:{line}: value {text} has more than 12 decimal places")
    return value + 0  # -0 and 0E+3 as plain 0


def _tags_text(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items())) or "(none)"


@dataclass(frozen=True)
class MetricsImport:
    path: str
    rows: int
    written: MetricsWritten
    metrics: list[str]
    first: date
    last: date

    def summary(self) -> str:
        return (f"{self.path}: {self.rows} rows of {', '.join(self.metrics)} ({self.first} to {self.last}): "
                f"{self.written.added} added, {self.written.replaced} replaced (a date, metric and tags imported "
                "again replaces its value)")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path, "rows": self.rows, "added": self.written.added, "replaced": self.written.replaced,
                "metrics": self.metrics, "first_date": self.first.isoformat(), "last_date": self.last.isoformat()}  # fmt: skip


def import_metrics(ledger: Ledger, path: str | Path) -> MetricsImport:
    """Check the whole file, then write all its rows in one transaction (nothing when the file has an error)."""
    f = read_metrics_csv(path)
    written = ledger.put_business_metrics(f.rows, source=Path(path).name)
    days = [r.day for r in f.rows]
    return MetricsImport(f.path, len(f.rows), written, sorted({r.metric for r in f.rows}), min(days), max(days))


# --- the report ---------------------------------------------------------------------------------------------
@dataclass
class UnitPeriod:
    period: str
    requests: int = 0
    unpriced: int = 0
    cost: Decimal = Decimal(0)
    units: Decimal = Decimal(0)

    @property
    def all_unpriced(self) -> bool:
        """No call of the period had a price: its cost of 0 is unknown, not 0."""
        return self.requests > 0 and self.unpriced == self.requests

    @property
    def cost_per_unit(self) -> Decimal | None:
        return None if self.units == 0 else _div(self.cost, self.units)

    def roi(self, value_per_unit: Decimal | None) -> Decimal | None:
        return roi(self.cost, self.units, value_per_unit)


def roi(cost: Decimal, units: Decimal, value_per_unit: Decimal | None) -> Decimal | None:
    """(value × units − cost) / cost, to four places; None without a value per unit or a cost."""
    if value_per_unit is None or cost == 0:
        return None
    return _CONTEXT.divide(_CONTEXT.subtract(_CONTEXT.multiply(value_per_unit, units), cost), cost).quantize(ROI_PLACES)


def _div(a: Decimal, b: Decimal) -> Decimal:
    return _CONTEXT.divide(a, b).quantize(PICO, context=_CONTEXT)


@dataclass(frozen=True)
class Trend:
    first: str | None
    last: str | None
    first_cost_per_unit: Decimal | None
    last_cost_per_unit: Decimal | None
    slope: Decimal | None  # USD per unit per period, least squares over the periods that have units
    points: int

    @property
    def change(self) -> Decimal | None:
        if self.first_cost_per_unit is None or self.last_cost_per_unit is None:
            return None
        return self.last_cost_per_unit - self.first_cost_per_unit

    @property
    def change_pct(self) -> Decimal | None:
        if self.change is None or not self.first_cost_per_unit:
            return None
        return _CONTEXT.divide(self.change * 100, self.first_cost_per_unit).quantize(Decimal("0.01"))


def trend(periods: list[UnitPeriod], by: str) -> Trend:
    """Change of the cost per unit from the first to the last period that has units, and the least-squares
    slope of the cost per unit against the period's position (a missing period counts as a step)."""
    known = [p for p in periods if p.cost_per_unit is not None and not p.all_unpriced]
    points = [(_ordinal(p.period, by), p.cost_per_unit) for p in known if p.cost_per_unit is not None]
    if not points:
        return Trend(None, None, None, None, None, 0)
    with_units = known
    first, last = with_units[0], with_units[-1]
    slope = None
    if len(points) >= 2:
        n = Decimal(len(points))
        mx = _CONTEXT.divide(sum((Decimal(x) for x, _ in points), Decimal(0)), n)
        my = _CONTEXT.divide(sum((y for _, y in points), Decimal(0)), n)
        sxy = sum((_CONTEXT.multiply(Decimal(x) - mx, y - my) for x, y in points), Decimal(0))
        sxx = sum((_CONTEXT.multiply(Decimal(x) - mx, Decimal(x) - mx) for x, _ in points), Decimal(0))
        slope = _div(sxy, sxx) if sxx else None
    return Trend(first.period, last.period, first.cost_per_unit, last.cost_per_unit, slope, len(points))


def _ordinal(period: str, by: str) -> int:
    if by == "day":
        return date.fromisoformat(period).toordinal()
    if by == "week":
        year, week = period.split("-W")
        return date.fromisocalendar(int(year), int(week), 1).toordinal() // 7
    year, month = period.split("-")
    return int(year) * 12 + int(month)


def period_of(day: date, by: str) -> str:
    """The label a spend report gives the period holding ``day`` (``2026-10-01``, ``2026-W40``, ``2026-10``)."""
    if by == "day":
        return day.isoformat()
    if by == "week":
        iso = day.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    return f"{day.year:04d}-{day.month:02d}"


@dataclass
class UnitsReport:
    metric: str
    scope: dict[str, str]
    by: str
    timezone: str
    since: datetime | None
    until: datetime | None
    value_per_unit: Decimal | None
    periods: list[UnitPeriod] = field(default_factory=list)

    @property
    def total(self) -> UnitPeriod:
        t = UnitPeriod("total")
        for p in self.periods:
            t.requests += p.requests
            t.unpriced += p.unpriced
            t.cost += p.cost
            t.units += p.units
        return t

    @property
    def trend(self) -> Trend:
        return trend(self.periods, self.by)

    def row(self, p: UnitPeriod, *, na: Any = "n/a") -> dict[str, Any]:
        """A period as JSON (``na=None``) or as a table and CSV show it: ``n/a`` where there is no unit, and
        ``unpriced`` as the cost of a period none of whose calls had a price."""
        unknown = p.all_unpriced and na is not None
        out: dict[str, Any] = {
            "period": p.period, "requests": p.requests, "unpriced_requests": p.unpriced,
            "cost_usd": "unpriced" if unknown else format_usd(p.cost), "units": _number(p.units),
            "cost_per_unit_usd": na if p.cost_per_unit is None else "unpriced" if unknown else format_usd(p.cost_per_unit),
        }  # fmt: skip
        if self.value_per_unit is not None:
            r = p.roi(self.value_per_unit)
            out["value_usd"] = format_usd(self.value_per_unit * p.units)
            out["roi"] = na if r is None else format(r, "f")
        return out

    def to_json(self) -> dict[str, Any]:
        t = self.trend
        return {
            "metric": self.metric, "scope": self.scope, "by": self.by, "timezone": self.timezone,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "value_per_unit_usd": None if self.value_per_unit is None else format_usd(self.value_per_unit),
            "periods": [self.row(p, na=None) for p in self.periods],
            "total": self.row(self.total, na=None),
            "trend": {"first_period": t.first, "last_period": t.last,
                      "first_cost_per_unit_usd": _usd(t.first_cost_per_unit),
                      "last_cost_per_unit_usd": _usd(t.last_cost_per_unit), "change_usd": _usd(t.change),
                      "change_pct": None if t.change_pct is None else format(t.change_pct, "f"),
                      "slope_usd_per_period": _usd(t.slope), "periods_with_units": t.points},
        }  # fmt: skip

    @property
    def columns(self) -> list[str]:
        cols = ["period", "requests", "unpriced_requests", "cost_usd", "units", "cost_per_unit_usd"]
        return cols + (["value_usd", "roi"] if self.value_per_unit is not None else [])

    def footer(self) -> str:
        t = self.trend
        scope = ",".join(f"{k}={v}" for k, v in self.scope.items()) or "(all)"
        total = self.total
        cpu = "n/a" if total.cost_per_unit is None else f"${format_usd(total.cost_per_unit)}"
        text = f"{self.metric} in {scope}: ${format_usd(total.cost)} for {_number(total.units)} units = {cpu} per unit"
        if self.value_per_unit is not None:
            r = total.roi(self.value_per_unit)
            text += f"; ROI {'n/a' if r is None else format(r, 'f')} at ${format_usd(self.value_per_unit)} per unit"
        if t.change is not None and t.first != t.last:
            pct = "" if t.change_pct is None else f" ({'+' if t.change_pct >= 0 else ''}{t.change_pct}%)"
            text += (f". Trend: cost per unit {t.first} ${format_usd(t.first_cost_per_unit)} -> {t.last} "
                     f"${format_usd(t.last_cost_per_unit)}{pct}")  # fmt: skip
            if t.slope is not None:
                text += f", slope ${format_usd(t.slope)} per {self.by}"
        if total.unpriced:
            text += (f". {total.unpriced} calls had no price: their cost is not in these amounts "
                     "(tokenops prices list --unpriced)")  # fmt: skip
        return text


def _usd(value: Decimal | None) -> str | None:
    return None if value is None else format_usd(value)


def _number(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def whole_days(since: datetime | None, until: datetime | None, timezone: str) -> tuple[datetime | None, datetime | None]:
    """The window widened to whole days in ``timezone``: the start of ``since``'s day, the end of the day before
    ``until`` (``until`` itself when it is a midnight there)."""
    zone = ZoneInfo(check_timezone(timezone))
    start = end = None
    try:  # 0001-01-01 UTC is still in the year 0 in New York; 9999-12-31 has no day after it
        if since is not None:
            start = datetime.combine(since.astimezone(zone).date(), time(), tzinfo=zone)
            start.astimezone(UTC)
    except OverflowError:
        raise UsageError(f"--since: its day in {timezone} begins before the year 1") from None
    try:
        if until is not None:
            local = until.astimezone(zone)
            day = local.date() if local.time() == time() else local.date() + timedelta(days=1)
            end = datetime.combine(day, time(), tzinfo=zone)
            end.astimezone(UTC)
    except OverflowError:
        raise UsageError(f"--until: the end of its day in {timezone} is after the year 9999") from None
    return start, end


def units_report(ledger: Ledger, *, metric: str, scope: Mapping[str, str] | None = None, by: str = "day",
                 since: datetime | None = None, until: datetime | None = None, timezone: str = "UTC",
                 value_per_unit: Decimal | None = None) -> UnitsReport:  # fmt: skip
    """Spend, units, cost per unit (and ROI) of ``metric`` in ``scope`` per ``by`` period."""
    if by not in PERIODS:
        raise UsageError(f"--by must be one of {', '.join(PERIODS)}, not {by!r}")
    scope = dict(scope or {})
    for name in scope:
        if name in RESERVED:
            raise UsageError(f"--scope: {name!r} is not a tag (a scope of unit costs is tags only: metric rows "
                             "carry tags, not models or keys)")  # fmt: skip
    try:
        check_name(metric)
    except TagError:
        raise UsageError(f"--metric: {metric!r} is not a metric name") from None
    since, until = whole_days(since, until, timezone)
    zone = ZoneInfo(timezone)
    first_day = None if since is None else since.astimezone(zone).date()
    end_day = None if until is None else until.astimezone(zone).date()
    rows = ledger.business_metrics(metric, first_day, end_day)
    if not rows and not ledger.business_metrics(metric):
        known = sorted({r.metric for r in ledger.business_metrics()})
        raise UsageError(f"--metric: the ledger has no metric {metric!r} (" + (
            f"it has: {', '.join(known)}" if known else "import one: tokenops import metrics FILE.csv") + ")")
    spend = ledger.spend_report(ReportQuery.build([by], since, until, scope, timezone))
    periods: dict[str, UnitPeriod] = {}
    for r in spend.rows:
        p = periods.setdefault(r.keys[by], UnitPeriod(r.keys[by]))
        p.requests, p.unpriced, p.cost = r.requests, r.unpriced_requests, r.cost_usd
    for m in rows:
        if all(m.tags.get(k) == v for k, v in scope.items()):
            label = period_of(m.day, by)
            p = periods.setdefault(label, UnitPeriod(label))
            p.units += m.value
    ordered = sorted(periods.values(), key=lambda p: _ordinal(p.period, by))
    return UnitsReport(metric, scope, by, timezone, since, until, value_per_unit, ordered)
