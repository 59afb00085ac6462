"""The ledger's bucketed activity (what the anomaly watch reads), its large calls and recorded anomalies, on
DuckDB and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tokenops.errors import UsageError
from tokenops.ledger.base import CALL_ROW_COLUMNS, Ledger
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.reports import ReportQuery
from tokenops.usage import Usage

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _events() -> list[SpendEvent]:
    out = []
    for i in range(30):
        failed = i in (3, 4)
        out.append(SpendEvent(
            request_id=f"r{i}", ts=T0 + timedelta(minutes=i), source="t", provider="openai", model_requested="m",
            model_used="m", usage=Usage(input_tokens=10 if i != 20 else 50_000, output_tokens=5),
            cost_usd=Decimal("0.001") if i != 7 else None, tags={"team": "a" if i % 3 else "b"},
            key_id="k1", latency_ms=10.0 + i, status="upstream_error" if failed else "ok",
            http_status=429 if i == 3 else 500 if i == 4 else 200))  # fmt: skip
    return out


def test_activity_buckets_each_scope_with_its_signals(any_ledger: Ledger) -> None:
    any_ledger.append(_events())
    rows = any_ledger.activity(ReportQuery.build(by=["team"]), 600)
    assert [r.bucket for r in rows] == sorted(r.bucket for r in rows)  # oldest first
    first_a = next(r for r in rows if r.bucket == T0 and r.keys == {"team": "a"})
    first_b = next(r for r in rows if r.bucket == T0 and r.keys == {"team": "b"})
    assert first_a.requests + first_b.requests == 10
    assert first_a.errors + first_b.errors == 2 and first_a.rate_limited + first_b.rate_limited == 1
    assert first_a.cost_usd + first_b.cost_usd == Decimal("0.009")  # one unpriced call: not $0.001 more
    assert first_a.latency_n + first_b.latency_n == 8
    total = any_ledger.activity(ReportQuery.build(by=[], where={"team": "a"}), 3600)
    assert len(total) == 1 and total[0].requests == 20 and total[0].bucket == T0
    with pytest.raises(UsageError):
        any_ledger.activity(ReportQuery.build(by=[]), 0)


def test_large_calls_and_recorded_anomalies(any_ledger: Ledger, tmp_path) -> None:
    any_ledger.append(_events())
    big = any_ledger.large_calls(T0, T0 + timedelta(hours=1), 1000)
    assert [dict(zip(CALL_ROW_COLUMNS, r, strict=True))["request_id"] for r in big] == ["r20"]
    assert any_ledger.large_calls(T0, T0 + timedelta(hours=1), 1000, {"team": "a"}) == big  # r20: team a
    assert any_ledger.large_calls(T0, T0 + timedelta(hours=1), 1000, {"team": "b"}) == []
    assert any_ledger.anomalies(T0 - timedelta(days=1)) == []
