"""The PostgreSQL dialect of the ledger's reads: spend reports (from the events, or from the hourly rollup),
budget scopes and model globs. Pure SQL text and parameters; :mod:`tokenops.ledger.postgres` runs them.

PostgreSQL has no ``GLOB``, ``strftime``, ``tags['x']`` or ``GROUP BY ALL``: a model glob becomes a regular
expression (:func:`glob_regex`), time buckets ``to_char`` of the local time (ISO weeks ``IYYY-"W"IW``), tags
``tags->>'x'``; text is ordered ``COLLATE "C"`` (by code point, as DuckDB orders it).

**The rollup.** ``events_hourly`` holds, per UTC hour and combination of :data:`ROLLUP_DIMS`, the sums a report
needs. A report whose dimensions and filters are all among those columns (or day/week/month) reads it: the whole
hours of its window from the rollup, the partial hours at either end from the events (:func:`rollup_report`).
An hour belongs to one day of a zone whose offset is a whole number of hours; the query checks that for every
hour it reads (its first and last instant fall in the same bucket, with no change of offset between them) and
says so in a last column ``exact``: when an hour straddles two buckets (a zone like Asia/Kolkata, or Berlin's
local mean time before 1893) the report is read from the events instead. Both give the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tokenops.ledger.base import naive_utc, report_where
from tokenops.ledger.reports import UNPRICED_SQL, Dimension, ReportQuery
from tokenops.scopes import Scope
from tokenops.tags import STANDARD_TAGS

C = ' COLLATE "C"'  # order text by code point, as DuckDB does
ROLLUP_DIMS = ("provider", "model_used", "key_id", "status", "route", "source", *STANDARD_TAGS)
HOURLY_SUMS = ("requests", "input_tokens", "output_tokens", "cost_usd", "unpriced")
_TIME_FORMATS = {"day": "YYYY-MM-DD", "week": 'IYYY-"W"IW', "month": "YYYY-MM"}


def glob_regex(pattern: str) -> str:
    """A PostgreSQL regular expression (``~``) matching what :func:`fnmatch.fnmatchcase` matches: ``*``, ``?``
    and ``[...]`` (``[!...]`` negated, ranges) are wildcards, everything else is itself."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i  # where fnmatch looks for the closing bracket: a leading '!' and then ']' are part of the set
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(r"\[")
            else:
                out.append(_bracket(pattern[i:j]))
                i = j + 1
        else:
            out.append(_literal(c))
    return "^" + "".join(out) + "$"


def _literal(c: str) -> str:
    return c if c.isalnum() else "\\" + c  # in an ARE, backslash before a non-alphanumeric is that character


def _bracket(stuff: str) -> str:
    """One ``[...]`` set, read as fnmatch reads it (a leading ``!`` negates; ``a-z`` is a range; a range whose
    ends are reversed is dropped), written with every member escaped."""
    negate = stuff.startswith("!") and len(stuff) > 0
    body = stuff[1:] if negate else stuff
    if negate and not body:
        return "."  # "[!]": fnmatch reads it as any character
    items: list[tuple[str, str]] = []  # (first, last) of each range; a single character is (c, c)
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            items.append((body[k], body[k + 2]))
            k += 3
        else:
            items.append((body[k], body[k]))
            k += 1
    ranges = [f"{_literal(a)}-{_literal(b)}" if a != b else _literal(a) for a, b in items if a <= b]
    if not ranges:
        return "(?!)" if not negate else "."  # an empty set matches nothing (negated: anything)
    return "[" + ("^" if negate else "") + "".join(ranges) + "]"


def _local(t: str, tz: str) -> str:
    return t if tz == "UTC" else f"(({t}) AT TIME ZONE 'UTC') AT TIME ZONE '{tz}'"  # tz passed check_timezone


def _raw(d: Dimension, tz: str, t: str) -> str:
    """What rows are grouped by for a dimension: cheap to compute and to hash (its label comes after grouping)."""
    if d.kind == "fixed":
        return f"nullif({d.column}, '')"
    if d.kind == "standard_tag":
        return d.column
    if d.kind == "time":
        return f"date_trunc('{d.name}', {_local(t, tz)})"  # a Monday for weeks: the ISO week's first day
    return f"tags->>'{d.name}'"  # a validated tag name: safe to inline


def _label(d: Dimension, raw: str) -> str:
    """What a report shows for a grouped value."""
    return f"to_char({raw}, '{_TIME_FORMATS[d.name]}')" if d.kind == "time" else f"coalesce({raw}, '{d.missing}')"


def dimension_sql(d: Dimension, tz: str, t: str = "ts") -> str:
    """A dimension's label for one row of events (``t`` is its time column)."""
    return _label(d, _raw(d, tz, t))


def scope_where(scope: Scope) -> tuple[str, list[str]]:
    """A WHERE fragment over the events table for a scope, with its parameters."""
    parts, params = ["TRUE"], []
    for name, want in scope.conditions:
        if name == "key":
            parts.append("key_id = %s")
        elif name == "user":
            parts.append("end_user = %s")
        elif name == "model":
            parts.append("(model_requested ~ %s OR model_used ~ %s)")
            want = glob_regex(want)
            params.append(want)
        elif name in STANDARD_TAGS:
            parts.append(f"{name} = %s")
        else:
            parts.append(f"tags->>'{name}' = %s")  # name passed check_name: safe to inline
        params.append(want)
    return " AND ".join(parts), params


def _whole_hours(tz: str) -> bool:
    """Whether the zone's offset is a whole number of hours now and around this year (else the hourly rollup
    cannot be bucketed in it: reports read the events)."""
    zone, now = ZoneInfo(tz), datetime.now(UTC)
    moments = [now, datetime(now.year, 1, 15, tzinfo=UTC), datetime(now.year, 7, 15, tzinfo=UTC)]
    return all((m.astimezone(zone).utcoffset() or timedelta()) % timedelta(hours=1) == timedelta() for m in moments)


def _hour_floor(dt: datetime) -> datetime:
    return dt.replace(minute=0, second=0, microsecond=0)


def rollup_can_answer(q: ReportQuery) -> bool:
    dims = [*q.by, *(d for d, _ in q.where)]
    if any(d.kind == "tag" or (d.kind == "fixed" and d.column not in ROLLUP_DIMS) for d in dims):
        return False
    return q.timezone == "UTC" or not any(d.kind == "time" for d in dims) or _whole_hours(q.timezone)

def query_where(q: ReportQuery) -> tuple[str, list[Any]]:
    """The events ``WHERE`` of a report query (its window and filters), with its parameters."""
    return report_where(q, "%s", dimension_sql)


def events_report(q: ReportQuery) -> tuple[str, list[Any]]:
    """The report from the events table."""
    where, params = query_where(q)
    sums = ("count(*) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
            f"sum(cost_usd) AS cost_usd, count(*) FILTER (WHERE {UNPRICED_SQL}) AS unpriced")  # fmt: skip
    return _grouped(q, "ts", sums, f"events WHERE {where}", exact=False), params


def rollup_report(q: ReportQuery) -> tuple[str, list[Any]] | None:
    """The report from whole hours of the rollup plus the events of the partial hours at the window's ends, with
    a last column ``exact`` (false: an hour straddles two time buckets of the zone; read the events instead).
    None when the window is shorter than an hour."""
    since, until = naive_utc(q.since), naive_utc(q.until)
    lo = None if since is None else _hour_floor(since) + (timedelta(hours=1) if since != _hour_floor(since)
                                                          else timedelta())  # fmt: skip
    hi = None if until is None else _hour_floor(until)
    if lo is not None and hi is not None and lo >= hi:
        return None  # less than an hour: the events answer at once
    cols = ", ".join(ROLLUP_DIMS)
    hour_conds, edges, params = ["TRUE"], [], list[Any]()
    if lo is not None:
        hour_conds.append("hour >= %s")
        params.append(lo)
    if hi is not None:
        hour_conds.append("hour < %s")
        params.append(hi)
    edge_params: list[Any] = []
    if since is not None and since < lo:  # type: ignore[operator]
        edges.append("(ts >= %s AND ts < %s)")
        edge_params += [since, lo]
    if until is not None and hi < until:  # type: ignore[operator]
        edges.append("(ts >= %s AND ts < %s)")
        edge_params += [hi, until]
    source = (f"SELECT hour AS t, interval '00:59:59.999999' AS w, {cols}, {', '.join(HOURLY_SUMS)} "
              f"FROM events_hourly WHERE {' AND '.join(hour_conds)}")  # fmt: skip
    if edges:
        source += (f" UNION ALL SELECT ts, interval '0', {cols}, 1, input_tokens, output_tokens, "
                   f"coalesce(cost_usd, 0), ({UNPRICED_SQL})::int FROM events WHERE {' OR '.join(edges)}")  # fmt: skip
        params += edge_params
    tz = q.timezone
    conds, exact = ["TRUE"], ["TRUE"]
    for d, value in q.where:
        start = dimension_sql(d, tz, "t")
        if d.kind == "time" and tz != "UTC":  # an hour may end in the next bucket: keep it, to be checked
            conds.append(f"({start} = %s OR {dimension_sql(d, tz, 't + w')} = %s)")
            params += [value, value]
        else:
            conds.append(f"{start} = %s")
            params.append(value)
    if tz != "UTC":  # each hour read: its first and last instant in one bucket, no change of offset between
        for d in {d.name: d for d in [*q.by, *(d for d, _ in q.where)] if d.kind == "time"}.values():
            exact.append(f"{_raw(d, tz, 't')} = {_raw(d, tz, 't + w')}")
        if len(exact) > 1:
            exact.append(f"{_local('t + w', tz)} - {_local('t', tz)} = w")
    sums = ("sum(requests) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
            f"sum(cost_usd) AS cost_usd, sum(unpriced) AS unpriced, bool_and({' AND '.join(exact)}) AS exact")  # fmt: skip
    return _grouped(q, "t", sums, f"({source}) u WHERE {' AND '.join(conds)}", exact=True), params


def _grouped(q: ReportQuery, t: str, sums: str, rows: str, *, exact: bool) -> str:
    """Group ``rows`` by the dimensions' raw values, then by their labels (two labels may share a value:
    NULL and '' are both "(none)"), biggest cost first, then the labels in code point order (as DuckDB sorts)."""
    raws = [_raw(d, q.timezone, t) for d in q.by]
    inner = f"SELECT {''.join(f'{r} AS k{i}, ' for i, r in enumerate(raws))}{sums} FROM {rows}"
    if raws:
        inner += f" GROUP BY {', '.join(f'k{i}' for i in range(len(raws)))}"
    labels = "".join(f"{_label(d, f'k{i}')} AS d{i}, " for i, d in enumerate(q.by))
    outer = (f"SELECT {labels}coalesce(sum(requests), 0) AS requests, coalesce(sum(input_tokens), 0) AS "
             "input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens, coalesce(sum(cost_usd), 0)::NUMERIC(38,12) "
             f"AS cost_usd, coalesce(sum(unpriced), 0) AS unpriced{', bool_and(exact) AS exact' if exact else ''} "
             f"FROM ({inner}) g")  # fmt: skip
    if q.by:
        outer += f" GROUP BY {', '.join(f'd{i}' for i in range(len(q.by)))}"
    order = ", ".join(["cost_usd DESC", *(f"d{i}{C}" for i in range(len(q.by)))])
    return f"SELECT * FROM ({outer}) r ORDER BY {order}"
