"""``tokenops.timespec.parse_time``: the --since/--until forms of the CLI and the admin API's spend report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tokenops.errors import UsageError
from tokenops.timespec import parse_time

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def test_forms() -> None:
    assert parse_time(None, what="--since") is None
    assert parse_time("30d", what="--since", now=NOW) == NOW - timedelta(days=30)
    assert parse_time(" 12h ", what="--since", now=NOW) == NOW - timedelta(hours=12)
    assert parse_time("90m", what="--until", now=NOW, future=True) == NOW + timedelta(minutes=90)
    assert parse_time("2026-11-01", what="--since") == datetime(2026, 11, 1, tzinfo=UTC)
    plus2 = parse_time("2026-11-01T12:00+02:00", what="--since")
    assert plus2 == datetime(2026, 11, 1, 10, 0, tzinfo=UTC) and plus2 is not None
    assert plus2.utcoffset() == timezone(timedelta(hours=2)).utcoffset(None)  # the offset given is kept


@pytest.mark.parametrize("value", ["99999999d", "999999999999h", "9" * 5000 + "m", "0001-01-01T00:00:00+14:00",
                                   "9999-12-31T23:00:00-14:00", "99999-01-01", "0000-01-01", "yesterday", "-5d",
                                   "1e3d"])  # fmt: skip
def test_out_of_range_or_malformed_is_a_usage_error(value: str) -> None:
    for future in (False, True):
        with pytest.raises(UsageError, match="^--since: "):
            parse_time(value, what="--since", now=NOW, future=future)


def test_the_cli_module_no_longer_holds_it() -> None:
    import tokenops.cli.common as common

    assert not hasattr(common, "parse_time")
