"""Business metrics in the ledger (``tokenops import metrics``): the same answers on DuckDB and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest

from tokenops.errors import LedgerError
from tokenops.ledger import migrations
from tokenops.ledger.base import Ledger
from tokenops.ledger.business_metrics import MetricRow, MetricsWritten, metric_id

Opener = Callable[[], Ledger]
D = Decimal


def rows() -> list[MetricRow]:
    return [
        MetricRow(date(2026, 10, 1), "tickets_resolved", D("412"), {"team": "support", "feature": "support-bot"}),
        MetricRow(date(2026, 10, 1), "tickets_resolved", D("7.5"), {"team": "support"}),
        MetricRow(date(2026, 10, 2), "tickets_resolved", D("0.000000000001"), {"team": "東京", "x.y-z": "ü"}),
        MetricRow(date(2026, 10, 2), "summaries", D("12345678901234567890"), {}),
        MetricRow(date(2026, 9, 30), "tickets_resolved", D("1"), {"customer": "c1"}),
    ]


def test_the_migration_is_named_on_both_backends() -> None:
    assert "0015_business_metrics" in migrations.NAMES
    assert [n for n, _ in migrations.POSTGRESQL] == [n for n, _ in migrations.DUCKDB]


def test_rows_round_trip_exactly_and_filter_by_metric_and_day(backend: Opener) -> None:
    written = backend().put_business_metrics(rows(), source="m.csv")
    assert written == MetricsWritten(added=5, replaced=0)
    other = backend()  # another process would see the same
    got = other.business_metrics("tickets_resolved")
    assert [(r.day, r.value, dict(r.tags)) for r in got] == [
        (date(2026, 9, 30), D(1), {"customer": "c1"}),
        (date(2026, 10, 1), D("412"), {"team": "support", "feature": "support-bot"}),
        (date(2026, 10, 1), D("7.5"), {"team": "support"}),
        (date(2026, 10, 2), D("0.000000000001"), {"team": "東京", "x.y-z": "ü"}),
    ]  # by day, then by key: the same order on both backends
    assert [r.metric for r in other.business_metrics()] == ["tickets_resolved", "tickets_resolved",
                                                            "tickets_resolved", "summaries", "tickets_resolved"]  # fmt: skip
    window = other.business_metrics("tickets_resolved", since=date(2026, 10, 1), until=date(2026, 10, 2))
    assert [r.value for r in window] == [D("412"), D("7.5")]
    assert other.business_metrics("summaries")[0].value == D("12345678901234567890")
    assert other.business_metrics("nothing") == []


def test_importing_the_same_rows_again_replaces_their_values(backend: Opener) -> None:
    ledger = backend()
    ledger.put_business_metrics(rows())
    again = [MetricRow(r.day, r.metric, r.value + 1, dict(reversed(list(r.tags.items())))) for r in rows()[:2]]
    new = MetricRow(date(2026, 10, 3), "tickets_resolved", D(3), {"team": "support"})
    assert ledger.put_business_metrics([*again, new], source="again.csv") == MetricsWritten(added=1, replaced=2)
    values = {r.id: r.value for r in backend().business_metrics("tickets_resolved")}
    assert values[metric_id(date(2026, 10, 1), "tickets_resolved", {"feature": "support-bot", "team": "support"})] == 413
    assert values[new.id] == 3 and len(values) == 5
    assert ledger.put_business_metrics([]) == MetricsWritten(0, 0)


def test_a_large_batch_is_written_whole_and_a_key_given_twice_keeps_the_later_value(backend: Opener) -> None:
    many = [MetricRow(date(2026, 1, 1 + i % 28), "tickets_resolved", D(i) / 8, {"team": f"t{i // 28}"})
            for i in range(5000)]  # fmt: skip
    twice = MetricRow(date(2026, 1, 1), "tickets_resolved", D("99.5"), {"team": "t0"})
    assert backend().put_business_metrics([*many, twice]) == MetricsWritten(added=5000, replaced=0)
    got = backend().business_metrics("tickets_resolved")
    assert len(got) == 5000
    assert sum(r.value for r in got) == sum(r.value for r in many[1:]) + D("99.5")
    assert {r.id: r.value for r in got}[twice.id] == D("99.5")


def test_a_batch_the_database_refuses_writes_nothing(backend: Opener) -> None:
    ledger = backend()
    ledger.put_business_metrics(rows()[:1])
    too_big = MetricRow(date(2026, 10, 5), "tickets_resolved", D(10) ** 30, {})
    with pytest.raises(LedgerError):
        ledger.put_business_metrics([rows()[1], MetricRow(date(2026, 10, 4), "t", D(1), {}), too_big])
    assert [r.value for r in backend().business_metrics()] == [D(412)]  # all or nothing


def test_the_key_is_unambiguous() -> None:
    assert metric_id(date(2026, 10, 1), "m", {"b": "2", "a": "1"}) == "2026-10-01|m|a=1,b=2"
    assert metric_id(date(2026, 10, 1), "m", {}) == "2026-10-01|m|"
