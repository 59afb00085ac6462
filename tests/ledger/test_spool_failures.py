"""The spool when the disk misbehaves: failed and torn appends are cut back before the next one, records the
disk refused are written when it allows, a deleted spool folder is made again without losing a line, and a
line the ledger cannot take is quarantined while the rest drains."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from faults import FaultyDisk
from tokenops.ledger.duckdb import DuckDBLedger, _Session
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.ledger.spool import Spool, SpoolUnavailable, segments
from tokenops.usage import Usage


def event(i: int = 0, **kw: Any) -> SpendEvent:
    base = dict(request_id=new_request_id(), ts=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=i),
                source="test", provider="openai", model_requested="gpt-4o-mini", model_used="gpt-4o-mini",
                usage=Usage(input_tokens=100 + i, output_tokens=10), cost_usd=Decimal("0.000021"))  # fmt: skip
    base.update(kw)
    return SpendEvent(**base)  # type: ignore[arg-type]


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().split(b"\n") if line]


def ledger_ids(ledger: DuckDBLedger) -> dict[str, int]:
    with ledger.connect() as conn:
        return dict(conn.execute("SELECT request_id, count(*) FROM events GROUP BY 1").fetchall())


async def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_a_torn_failed_append_is_cut_back_before_the_next_one(tmp_path: Path) -> None:
    disk = FaultyDisk()
    spool = Spool(tmp_path / "spool", ops=disk)
    first, second, third = event(1), event(2), event(3)
    await spool.append(first)
    disk.fail_writes = 1
    with pytest.raises(SpoolUnavailable):
        await spool.append(second)
    assert [r["request_id"] for r in lines_of(spool.path)] == [first.request_id], "the torn half stayed"
    assert not spool.healthy and "No space left" in (spool.problem() or "")
    await spool.append(third)
    assert [r["request_id"] for r in lines_of(spool.path)] == [first.request_id, third.request_id]
    assert spool.healthy and spool.failures == 1
    spool.close()


async def test_a_failed_fdatasync_is_a_failed_append(tmp_path: Path) -> None:
    disk = FaultyDisk()
    spool = Spool(tmp_path / "spool", ops=disk)
    await spool.append(event(1))
    disk.fail_syncs = 1
    with pytest.raises(SpoolUnavailable):
        await spool.append(event(2))
    assert len(lines_of(spool.path)) == 1, "a line whose sync failed must not count as written"
    spool.close()


async def test_an_unrepairable_torn_append_moves_to_a_new_segment(tmp_path: Path) -> None:
    disk = FaultyDisk()
    spool = Spool(tmp_path / "spool", ops=disk)
    first, third = event(1), event(3)
    await spool.append(first)
    old = spool.path
    disk.fail_writes, disk.fail_truncates = 1, 1
    with pytest.raises(SpoolUnavailable):
        await spool.append(event(2))
    await spool.append(third)
    assert spool.path != old, "the next line must not land on the torn one"
    assert [r["request_id"] for r in lines_of(spool.path)] == [third.request_id]
    spool.close()
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    assert ledger.drain(spool.directory) == 2
    assert set(ledger_ids(ledger)) == {first.request_id, third.request_id}
    rejected = lines_of(spool.directory / "rejected.log")
    assert len(rejected) == 1 and "a write that failed" in rejected[0]["reason"]
    assert ".cut" in old.name or not old.exists(), "the segment says where its valid part ends"
    assert not segments(spool.directory)


async def test_deferred_records_are_written_when_the_disk_allows(tmp_path: Path) -> None:
    disk = FaultyDisk()
    spool = Spool(tmp_path / "spool", ops=disk)
    await spool.append(event(1))
    disk.fail_writes = 10**9
    owed = event(2)
    with pytest.raises(SpoolUnavailable):
        await spool.append(owed)
    spool.defer(owed.to_json())
    await asyncio.sleep(1.3)  # retried every second while the disk refuses
    assert spool.deferred == 1 and len(lines_of(spool.path)) == 1 and not spool.healthy
    disk.fail_writes = 0
    await wait_for(lambda: spool.deferred == 0)
    assert [r["request_id"] for r in lines_of(spool.path)][-1] == owed.request_id
    assert spool.healthy
    spool.close()


async def test_an_unhealthy_spool_finds_out_by_itself_that_the_disk_is_back(tmp_path: Path) -> None:
    disk = FaultyDisk()
    spool = Spool(tmp_path / "spool", ops=disk)
    disk.fail_writes = 1
    with pytest.raises(SpoolUnavailable):
        await spool.append(event(1))
    assert not spool.healthy
    await wait_for(lambda: spool.healthy, timeout=4)  # a probe (a blank line) was written without any traffic
    await spool.append(event(2))
    assert len(lines_of(spool.path)) == 1 and spool.appended == 1
    spool.close()


def test_little_free_space_makes_the_spool_unhealthy_before_anything_fails(tmp_path: Path) -> None:
    disk = FaultyDisk()
    disk.free = 1000
    spool = Spool(tmp_path / "spool", ops=disk)
    assert "bytes free" in (spool.problem() or "")
    spool.close()


async def test_a_deleted_spool_folder_is_made_again_and_nothing_is_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    early = [event(i) for i in range(3)]
    for e in early:
        await spool.append(e)
    assert ledger.drain(spool.directory) == 3  # drained before the deletion
    late = [event(i) for i in range(3, 6)]
    await spool.append(late[0])  # written, not yet drained, then the folder goes
    shutil.rmtree(spool.directory)
    for e in late[1:]:
        await spool.append(e)
    assert spool.directory.is_dir() and spool.recovered == 1
    spool.close()
    ledger.drain(spool.directory)
    assert ledger_ids(ledger) == {e.request_id: 1 for e in early + late}


async def test_heal_recovers_a_deleted_folder_without_traffic(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    e = event(1)
    await spool.append(e)
    shutil.rmtree(spool.directory)
    spool.heal()
    assert [r["request_id"] for r in lines_of(spool.path)] == [e.request_id]
    spool.close()


def test_an_absurd_event_from_an_older_version_is_quarantined_and_the_rest_drains(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    good = [event(i) for i in range(3)]
    bad = orjson.loads(event(9).to_json())
    bad["usage"]["input_tokens"] = 10**19  # what a gateway without usage validation spooled
    seg = spool_dir / "0000000000001-1-aaaaaaaa.jsonl"
    seg.write_bytes(b"".join(e.to_json() + b"\n" for e in good[:2]) + json.dumps(bad).encode() + b"\n"
                    + good[2].to_json() + b"\n")  # fmt: skip
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    assert ledger.drain(spool_dir) == 3
    assert set(ledger_ids(ledger)) == {e.request_id for e in good}
    rejected = lines_of(spool_dir / "rejected.log")
    assert len(rejected) == 1 and "more than any call" in rejected[0]["reason"]
    assert not seg.exists()


def test_an_event_the_database_refuses_is_quarantined_and_the_rest_drains(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    spool = Spool(tmp_path / "spool")
    events = [event(i) for i in range(5)]
    spool.append_sync(events)
    spool.close()
    refused = events[2].request_id
    real = _Session.insert_lines

    def picky(self: _Session, batch: Any) -> int:
        if any(e.request_id == refused for e in batch):
            raise duckdb.ConversionException("Conversion Error: Failed to cast value to numerical")
        return real(self, batch)

    monkeypatch.setattr(_Session, "insert_lines", picky)
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    assert ledger.drain(spool.directory) == 4
    assert set(ledger_ids(ledger)) == {e.request_id for e in events} - {refused}
    rejected = lines_of(spool.directory / "rejected.log")
    assert len(rejected) == 1 and "refused by the ledger" in rejected[0]["reason"]
    assert orjson.loads(rejected[0]["line"])["request_id"] == refused
    assert ledger.drain(spool.directory) == 0 and not segments(spool.directory)


def test_a_real_database_failure_is_not_mistaken_for_bad_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenops.errors import LedgerError

    spool = Spool(tmp_path / "spool")
    spool.append_sync([event(1)])
    spool.close()

    def broken(self: _Session, batch: Any) -> int:
        raise duckdb.IOException("IO Error: could not write")

    monkeypatch.setattr(_Session, "insert_lines", broken)
    with pytest.raises(LedgerError):
        DuckDBLedger(tmp_path / "l.duckdb").drain(spool.directory)
    assert not (spool.directory / "rejected.log").exists(), "nothing is quarantined for the ledger's own failure"
    assert segments(spool.directory), "the events stay in the spool for the next try"


def test_a_drain_that_dies_mid_transaction_leaves_nothing_half_done(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    class Crash(BaseException):
        pass

    spool = Spool(tmp_path / "spool")
    events = [event(i) for i in range(4)]
    spool.append_sync(events)
    spool.close()
    real = _Session.insert_lines

    def dies_after_inserting(self: _Session, batch: Any) -> int:
        real(self, batch)
        raise Crash()

    monkeypatch.setattr(_Session, "insert_lines", dies_after_inserting)
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    with pytest.raises(Crash):
        ledger.drain(spool.directory)
    assert ledger.count_events() == 0, "the inserts of the dead drain were rolled back with its offset"
    monkeypatch.setattr(_Session, "insert_lines", real)
    assert ledger.drain(spool.directory) == 4
    assert ledger_ids(ledger) == {e.request_id: 1 for e in events}
