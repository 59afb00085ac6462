"""Budget periods are exact: local midnight in the budget's zone, across DST changes and leap days."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tokenops.policy.periods import window


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_berlin_month_resets_at_local_midnight_on_the_first() -> None:
    # 2026-11-30 22:59:59 UTC is 23:59:59 in Berlin (CET, UTC+1): still November
    w = window("month", "Europe/Berlin", utc(2026, 11, 30, 22, 59, 59))
    assert (w.start, w.end) == (utc(2026, 10, 31, 23), utc(2026, 11, 30, 23))
    # one second later it is December 1st 00:00 in Berlin: the next period
    w2 = window("month", "Europe/Berlin", utc(2026, 11, 30, 23, 0, 0))
    assert w2.start == utc(2026, 11, 30, 23) and w2.end == utc(2026, 12, 31, 23)


def test_month_containing_a_dst_change_is_23_or_25_hours_shorter_or_longer() -> None:
    # Berlin switches to summer time on 2026-03-29: March starts at 23:00 UTC (CET), April at 22:00 UTC (CEST)
    w = window("month", "Europe/Berlin", utc(2026, 3, 15))
    assert w.start == utc(2026, 2, 28, 23) and w.end == utc(2026, 3, 31, 22)
    # the DST day itself is 23 hours long
    d = window("day", "Europe/Berlin", utc(2026, 3, 29, 12))
    assert (d.end - d.start).total_seconds() == 23 * 3600
    # and the autumn change day is 25 hours long
    d = window("day", "Europe/Berlin", utc(2026, 10, 25, 12))
    assert (d.end - d.start).total_seconds() == 25 * 3600


def test_february_of_a_leap_year_has_29_days() -> None:
    w = window("month", "UTC", utc(2028, 2, 29, 23, 59))
    assert w.start == utc(2028, 2, 1) and w.end == utc(2028, 3, 1)
    assert (w.end - w.start).days == 29
    assert window("month", "UTC", utc(2028, 3, 1)).start == utc(2028, 3, 1)


def test_week_starts_monday_and_quarter_on_the_quarter() -> None:
    w = window("week", "America/New_York", utc(2026, 11, 29, 12))  # Sunday
    assert w.start == utc(2026, 11, 23, 5) and w.end == utc(2026, 11, 30, 5)
    q = window("quarter", "Asia/Tokyo", utc(2026, 12, 31, 16))  # Jan 1 01:00 in Tokyo: Q1 2027
    assert q.start == utc(2026, 12, 31, 15) and q.end == utc(2027, 3, 31, 15)


def test_zone_that_skips_midnight() -> None:
    # Santiago (Chile) moved clocks from 00:00 to 01:00 on 2022-09-11: the day starts at 01:00 local
    d = window("day", "America/Santiago", utc(2022, 9, 11, 12))
    assert d.start == utc(2022, 9, 11, 4)  # 01:00 at UTC-3
    assert d.contains(utc(2022, 9, 11, 12))


def test_custom_and_unknown() -> None:
    w = window("custom", "UTC", utc(2026, 1, 5), custom=(utc(2026, 1, 1), utc(2026, 2, 15)))
    assert (w.start, w.end) == (utc(2026, 1, 1), utc(2026, 2, 15))
    with pytest.raises(ValueError, match="unknown time zone"):
        window("month", "Mars/Olympus", utc(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        window("month", "UTC", datetime(2026, 1, 1))
