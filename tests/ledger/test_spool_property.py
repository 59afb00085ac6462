"""A property test of the spool and the drain (hypothesis): random sequences of appends, torn and failed writes,
failed syncs, crashes mid-write, restarts, drains that die mid-transaction and a deleted spool folder. After
the last drain, the ledger holds every answered call exactly once, and no call whose append failed or was
torn by a crash.

One loss is allowed, and only one: a deleted spool folder takes with it the segments no process holds open any
more (a dead process's, or this process's previous one after a rotation) that were not drained yet. The live
segment is always recovered (its process still holds it open); a gateway drains dead segments at start and
every ``gateway.writer_interval`` seconds, so the window is that short.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faults import FaultyDisk
from tokenops.ledger import duckdb as duckdb_ledger
from tokenops.ledger.duckdb import DuckDBLedger, _Session
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.ledger.spool import Spool, SpoolUnavailable
from tokenops.usage import Usage


class SimulatedCrash(BaseException):
    """The drain's process dies mid-transaction."""


class CrashingSession(_Session):
    crash_next = False

    def insert_lines(self, events: Any) -> int:
        n = super().insert_lines(events)
        if CrashingSession.crash_next and events:
            CrashingSession.crash_next = False
            raise SimulatedCrash()
        return n


class CrashingLedger(DuckDBLedger):
    """A DuckDB ledger whose next drain can be made to die mid-transaction, after it inserted events."""

    @property
    def crash_next(self) -> bool:
        return CrashingSession.crash_next

    @crash_next.setter
    def crash_next(self, value: bool) -> None:
        CrashingSession.crash_next = value


def event() -> SpendEvent:
    return SpendEvent(request_id=new_request_id(), ts=datetime(2026, 11, 1, tzinfo=UTC), source="test",
                      provider="openai", model_requested="m", model_used="m", usage=Usage(input_tokens=3),
                      cost_usd=Decimal("0.000001"))  # fmt: skip


ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 6)),
    st.tuples(st.just("fault"), st.sampled_from(["torn", "sync", "torn+truncate"])),
    st.tuples(st.just("crash_mid_write"), st.just(0)),
    st.tuples(st.just("restart"), st.just(0)),
    st.tuples(st.just("drain"), st.just(0)),
    st.tuples(st.just("drain_crash"), st.just(0)),
    st.tuples(st.just("delete_folder"), st.integers(1, 3)),
), max_size=18)  # fmt: skip


def _ids(path: Path) -> set[str]:
    import orjson

    out = set()
    for line in path.read_bytes().split(b"\n") if path.exists() else []:
        try:
            out.add(orjson.loads(line)["request_id"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


async def play(root: Path, script: list[tuple[str, Any]]) -> tuple[set[str], set[str], set[str], DuckDBLedger, Path]:
    spool_dir = root / "spool"
    ledger = CrashingLedger(root / "l.duckdb")
    duckdb_ledger._Session = CrashingSession  # type: ignore[misc]  # restored by the test
    disk = FaultyDisk()
    spool = Spool(spool_dir, fsync=False, ops=disk)
    answered: set[str] = set()
    lost: set[str] = set()  # appends that failed or were torn: never answered
    at_risk: set[str] = set()  # answered, undrained, in a segment no process held when the folder was deleted

    async def append(n: int) -> None:
        events = [event() for _ in range(n)]
        results = await asyncio.gather(*(spool.append(e) for e in events), return_exceptions=True)
        for e, result in zip(events, results, strict=True):
            if result is None:
                answered.add(e.request_id)
            else:
                assert isinstance(result, SpoolUnavailable), result
                lost.add(e.request_id)

    for op, n in script:
        if op == "append":
            await append(n)
        elif op == "fault":  # the next write fails: torn then ENOSPC, a failed sync, or torn and not repairable
            disk.fail_writes = int(n in ("torn", "torn+truncate"))
            disk.fail_syncs = int(n == "sync")
            disk.fail_truncates = int(n == "torn+truncate")
        elif op in ("crash_mid_write", "restart"):
            if op == "crash_mid_write":
                torn = event()
                line = torn.to_json()
                os.write(spool._fd, line[: len(line) // 2])  # the process dies with half a line written
                lost.add(torn.request_id)
            spool.close()  # the dead process's descriptors close; nothing else of it runs
            disk = FaultyDisk()
            spool = Spool(spool_dir, fsync=False, ops=disk)
        elif op == "drain":
            ledger.drain(spool_dir)
        elif op == "drain_crash":
            ledger.crash_next = True
            try:
                ledger.drain(spool_dir)
            except SimulatedCrash:
                pass
            ledger.crash_next = False
        elif op == "delete_folder":
            disk.fail_writes = disk.fail_syncs = disk.fail_truncates = 0
            with ledger.connect() as conn:
                drained = {r[0] for r in conn.execute("SELECT request_id FROM events").fetchall()}
            at_risk |= answered - drained - _ids(spool.path)
            shutil.rmtree(spool_dir, ignore_errors=True)
            await append(n)  # the next write finds its segment gone and writes it again
    spool.close()
    return answered, lost, at_risk, ledger, spool_dir


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(script=ops)
def test_every_answered_call_is_drained_exactly_once_whatever_happens(script: list[tuple[Any, Any]]) -> None:
    root = Path(tempfile.mkdtemp(prefix="spool-prop-"))
    try:
        answered, lost, at_risk, ledger, spool_dir = asyncio.run(play(root, script))
        ledger.drain(spool_dir)
        ledger.drain(spool_dir)
        with ledger.connect() as conn:
            counts = dict(conn.execute("SELECT request_id, count(*) FROM events GROUP BY 1").fetchall())
        assert all(c == 1 for c in counts.values()), "a call was recorded twice"
        missing = answered - set(counts) - at_risk
        assert not missing, f"{len(missing)} answered calls lost in {script}"
        assert not (lost & set(counts)), f"a call whose append failed or was torn was recorded in {script}"
        assert set(counts) <= answered
    finally:
        duckdb_ledger._Session = _Session  # type: ignore[misc]
        shutil.rmtree(root, ignore_errors=True)
