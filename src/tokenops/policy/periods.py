"""Budget periods: day, week (ISO, Monday), calendar month, quarter, or a custom fixed window, in a time zone.

A period starts at local midnight of its first day in the budget's time zone and ends (exclusive) where the
next one starts; both are returned in UTC. DST is handled by computing the local wall-clock boundary and
converting it: a Europe/Berlin month starts at 00:00 local, whether that is 22:00 or 23:00 UTC. Where a zone
skips local midnight (a DST change at 00:00), the period starts at the first instant that exists after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PeriodKind = Literal["day", "week", "month", "quarter", "custom"]
PERIODS = ("day", "week", "month", "quarter", "custom")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    key: str = field(default="", compare=False)  # the counter key of the period: its start, ISO 8601

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.start.isoformat())

    def fraction_elapsed(self, at: datetime) -> float:
        total = (self.end - self.start).total_seconds()
        return min(1.0, max(0.0, (at - self.start).total_seconds() / total)) if total > 0 else 1.0

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``tz``, in UTC."""
    naive = datetime.combine(day, time(0))
    for hour in range(0, 4):  # a skipped midnight: take the first wall-clock time that exists
        candidate = (naive + timedelta(hours=hour)).replace(tzinfo=tz)
        back = candidate.astimezone(UTC).astimezone(tz)
        if back.replace(tzinfo=None) == candidate.replace(tzinfo=None):
            return candidate.astimezone(UTC)
    return naive.replace(tzinfo=tz).astimezone(UTC)


def _first_day(kind: str, d: date) -> date:
    if kind == "day":
        return d
    if kind == "week":
        return d - timedelta(days=d.weekday())
    if kind == "month":
        return d.replace(day=1)
    if kind == "quarter":
        return date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)
    raise ValueError(f"unknown period {kind!r}")


def _next_first_day(kind: str, first: date) -> date:
    if kind == "day":
        return first + timedelta(days=1)
    if kind == "week":
        return first + timedelta(days=7)
    months = 1 if kind == "month" else 3
    y, m = divmod(first.month - 1 + months, 12)
    return date(first.year + y, m + 1, 1)


def window(kind: str, tz_name: str, at: datetime, *, custom: tuple[datetime, datetime] | None = None) -> Window:
    """The period of kind ``kind`` in zone ``tz_name`` that contains ``at`` (timezone-aware)."""
    if at.tzinfo is None:
        raise ValueError("window() needs a timezone-aware time")
    if kind == "custom":
        if custom is None:
            raise ValueError("a custom period needs a start and an end")
        return Window(custom[0].astimezone(UTC), custom[1].astimezone(UTC))
    tz = zone(tz_name)
    local_day = at.astimezone(tz).date()
    first = _first_day(kind, local_day)
    start = local_midnight(first, tz)
    if at < start:  # only possible around a skipped midnight
        first = _first_day(kind, first - timedelta(days=1))
        start = local_midnight(first, tz)
    end = local_midnight(_next_first_day(kind, first), tz)
    return Window(start, end)
