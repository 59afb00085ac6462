"""The spool and the drain into DuckDB: durable, exactly once, nothing silently dropped."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenops.errors import LedgerBusy
from tokenops.ledger import migrations
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.events import SpendEvent, canonical, new_request_id
from tokenops.ledger.spool import Spool, segments
from tokenops.usage import Usage


def event(i: int = 0, **kw: object) -> SpendEvent:
    base = dict(request_id=new_request_id(), ts=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=i),
                source="test", provider="openai", model_requested="gpt-4o-mini", model_used="gpt-4o-mini",
                usage=Usage(input_tokens=100 + i, output_tokens=10), cost_usd=Decimal("0.000021") + i,
                tags={"team": "a", "custom": "x"})  # fmt: skip
    base.update(kw)
    return SpendEvent(**base)  # type: ignore[arg-type]


def test_event_round_trips_through_json_and_ledger(tmp_path: Path) -> None:
    e = event(3, cost_usd=Decimal("0.000000037500"), missing_tags=("env",), end_user="u")
    assert SpendEvent.from_json(e.to_json()) == e
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    ledger.append([e])
    got = ledger.get_event(e.request_id)
    assert got == e.with_(cost_usd=Decimal("0.000000037500"))
    unpriced = event(4, cost_usd=None)
    ledger.append([unpriced])
    assert ledger.get_event(unpriced.request_id).cost_usd is None


def test_migrations_are_named_ordered_and_recorded_once(tmp_path: Path) -> None:
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    with ledger.connect() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()]
        assert names == [n for n, _ in migrations.DUCKDB]
        assert migrations.apply(conn) == []  # nothing left to do


def test_drain_moves_spool_into_ledger_exactly_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    events = [event(i) for i in range(1000)]
    spool.append_sync(events)
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    assert ledger.drain(spool_dir) == 1000
    assert ledger.drain(spool_dir) == 0
    more = [event(2000 + i) for i in range(10)]
    spool.append_sync(more)
    assert ledger.drain(spool_dir) == 10
    # even if the progress marks were lost, the request ids keep the ledger free of doubles
    with ledger.connect() as conn:
        conn.execute("DELETE FROM spool_progress")
    assert ledger.drain(spool_dir) == 0
    assert ledger.count_events() == 1010
    spool.close()
    ledger.drain(spool_dir)
    assert segments(spool_dir) == [], "a finished, drained segment is removed"


def test_async_appends_are_group_committed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")

    async def many() -> None:
        await asyncio.gather(*(spool.append(event(i)) for i in range(300)))

    asyncio.run(many())
    assert spool.appended == 300
    lines = spool.path.read_bytes().splitlines()
    assert len(lines) == 300
    spool.close()


def test_torn_tail_of_a_dead_segment_is_kept_with_a_word_and_the_segment_removed(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    good = event(1)
    seg = spool_dir / "0000000000001-1-deadbeef.jsonl"
    seg.write_bytes(good.to_json() + b"\n" + b'{"not": "an event"}\n' + b'{"request_id": "torn')
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    assert ledger.drain(spool_dir) == 1
    assert ledger.get_event(good.request_id) is not None
    rejected = [orjson.loads(line) for line in (spool_dir / "rejected.log").read_bytes().splitlines()]
    assert [r["line"] for r in rejected] == ['{"not": "an event"}', '{"request_id": "torn']
    assert "torn last line" in rejected[1]["reason"] and all(r["segment"] == seg.name for r in rejected)
    assert not seg.exists(), "a dead segment whose only leftover is a torn line is removed once that line is kept"
    with ledger.connect() as conn:
        assert conn.execute("SELECT count(*) FROM spool_progress").fetchone()[0] == 0


def test_a_live_segment_keeps_its_partial_last_line(tmp_path: Path) -> None:
    """A live writer may be mid-line: its tail is not torn, only not yet complete."""
    spool = Spool(tmp_path / "spool")
    spool.append_sync([event(1)])
    with open(spool.path, "ab") as fh:
        fh.write(b'{"request_id": "half')
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    assert ledger.drain(spool.directory) == 1
    assert spool.path.exists() and not (spool.directory / "rejected.log").exists()
    spool.close()


def test_reports_see_amounts_exactly(tmp_path: Path) -> None:
    from tokenops.services.reports import spend_report

    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    costs = [Decimal("0.000000037500"), Decimal("0.1"), Decimal("0.2"), Decimal("12345.678901234567")]
    ledger.append([event(i, cost_usd=c, tags={"team": t}) for i, (c, t) in enumerate(zip(costs, "abab", strict=True))])
    report = spend_report(ledger, by=["team"])
    assert report.total_cost_usd == sum(costs)
    assert sum(r.cost_usd for r in report.rows) == report.total_cost_usd
    assert {r.keys["team"]: r.cost_usd for r in report.rows} == {"a": costs[0] + costs[2], "b": costs[1] + costs[3]}


def _hold(path: str, seconds: float, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    import duckdb

    conn = duckdb.connect(path)
    ready.set()
    time.sleep(seconds)
    conn.close()


def test_another_process_holding_the_file_means_wait_then_busy(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    DuckDBLedger(path).count_events()  # create it
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(path), 1.5, ready))
    holder.start()
    try:
        assert ready.wait(20)
        with pytest.raises(LedgerBusy):
            DuckDBLedger(path, lock_timeout=0.2).count_events()
        start = time.monotonic()
        assert DuckDBLedger(path, lock_timeout=20).count_events() == 0  # waits for its turn
        assert time.monotonic() - start > 0.2
    finally:
        holder.join(20)


@settings(max_examples=200, deadline=None)
@given(
    usage=st.builds(lambda i, r, w, o, z: Usage(input_tokens=i + r + w, cache_read_tokens=r, cache_write_5m_tokens=w,
                                                output_tokens=o + z, reasoning_tokens=z),
                    *(st.integers(0, 10**8) for _ in range(5))),  # fmt: skip
    cost=st.none() | st.decimals(min_value=-(10**25), max_value=10**25, places=12, allow_nan=False),
    tags=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    status=st.sampled_from(["ok", "upstream_error", "rejected", "cancelled", "error"]),
    latency=st.none() | st.floats(0, 1e9, allow_nan=False),
)
def test_every_valid_event_line_is_taken_as_it_is(usage: Usage, cost: Decimal | None, tags: dict[str, str],
                                                  status: str, latency: float | None) -> None:  # fmt: skip
    """What the gateway writes always takes the drain's fast path (no event built), and only what is valid does."""
    e = event(1, usage=usage, cost_usd=cost, tags=tags, status=status, latency_ms=latency)
    assert not e.problems()
    wire = canonical(e.to_json())
    assert wire is not None and (wire.request_id, wire.ts, wire.price_row_id) == (e.request_id, e.ts, e.price_row_id)
    for change in ({"http_status": True}, {"stream": 1}, {"cost_usd": "1E-4"}, {"ts": "2026-11-01T00:00:00"},
                   {"status": "fine"}, {"latency_ms": 1e16}, {"extra": 1}):  # fmt: skip
        assert canonical(orjson.dumps(orjson.loads(e.to_json()) | change)) is None, change
