"""Points in time as people type them: ``--since``/``--until`` on the CLI and the admin API's spend report.

Below both faces (the API must not import the CLI). Every malformed or out-of-range value is a
:class:`~tokenops.errors.UsageError` naming the argument, never an OverflowError from :mod:`datetime`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tokenops.errors import UsageError

_REL = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_time(value: str | None, *, what: str, now: datetime | None = None, future: bool = False) -> datetime | None:
    """ISO date (midnight UTC), ISO datetime (UTC unless it has an offset) or relative: 30d, 12h, 90m ago
    (or from now, with ``future``)."""
    if value is None:
        return None
    value = value.strip()
    now = now or datetime.now(UTC)
    m = _REL.match(value)
    if m:
        try:
            # int() refuses more than 4300 digits (ValueError); timedelta and the sum stop at years 1 and 9999.
            delta = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
            return now + delta if future else now - delta
        except (OverflowError, ValueError):
            shown = value if len(value) <= 40 else value[:20] + "…" + value[-4:]
            raise UsageError(f"{what}: {shown!r} reaches beyond the years 1 to 9999") from None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{what}: {value!r} is not a date (2026-11-01), a time (2026-11-01T12:00) or 30d/12h"
        ) from None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:
        dt.astimezone(UTC)  # 0001-01-01T00:00+14:00 is a valid string for an instant before year 1
    except OverflowError:
        raise UsageError(f"{what}: {value!r} is outside the years 1 to 9999 in UTC") from None
    return dt


def parse_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--since`` and ``--until`` as times (either may be None); a window that ends before it starts is refused
    (an empty window is a mistake, not $0). The messages name the CLI's options; the admin API renames them."""
    start, end = parse_time(since, what="--since"), parse_time(until, what="--until")
    if start and end and start >= end:
        raise UsageError("--since must be before --until")
    return start, end
