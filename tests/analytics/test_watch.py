"""The live anomaly watch on a real DuckDB ledger: a runaway loop is flagged in its bucket with its contributors
and what changed, a single huge call is flagged, the gateway's rounds record every anomaly and alert once per
incident across replicas, and ``tokenops anomalies`` lists and scans."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from anomaly_samples import NOW, SPIKE, traffic
from tokenops.alerts.model import Alert, describe, subject
from tokenops.analytics.watch import AnomalyWatch
from tokenops.cli import app
from tokenops.config import AnomaliesConfig
from tokenops.gateway.anomalies import AnomalyRounds
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.spool import Spool
from tokenops.policy.state import InMemoryState


@pytest.fixture(scope="module")
def ledger_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("watch") / "ledger.duckdb"
    ledger = DuckDBLedger(path)
    ledger.append(traffic())
    ledger.close()
    return path


SETTINGS = AnomaliesConfig(scopes=[["team"], ["feature"], ["key"]], min_change_usd=Decimal("0.05"),
                           history=2 * 86400)  # fmt: skip


def test_a_runaway_loop_is_flagged_in_its_bucket_with_who_and_why(ledger_file: Path) -> None:
    watch = AnomalyWatch(DuckDBLedger(ledger_file), SETTINGS)
    found = watch.scan(NOW - timedelta(hours=6), NOW)
    cost = [a for a in found if a.signal == "cost" and a.kind == "series"]
    assert cost, [a.message for a in found]
    spike_bucket = watch.floor(SPIKE[0] + timedelta(minutes=1))
    hits = [a for a in cost if a.bucket_start == spike_bucket]
    assert hits, [a.message for a in cost]
    a = hits[0]
    assert a.scope in ({"team": "search"}, {"feature": "search-bot"}, {"key": "k-loop"})
    assert a.direction == "up" and a.severity in ("high", "critical")
    assert a.expected is not None and a.high is not None and a.actual > 10 * a.high
    assert a.actual == pytest.approx(25 * 5 * 0.025 + float(a.expected), rel=0.2)
    from tokenops.ledger.reports import ReportQuery

    exact = DuckDBLedger(ledger_file).spend_report(ReportQuery.build(
        by=[], since=a.bucket_start, until=a.bucket_start + timedelta(minutes=5), where=a.scope)).total_cost_usd
    assert a.actual_usd == exact and f"${a.to_json()['actual_usd']}" in a.message  # the money, exact
    # who: the loop's key and model; what: the model mix (gpt-4o calls appeared) and the volume
    top = {(c["dimension"], c["value"]) for c in a.contributors[:3]}
    assert ("key", "k-loop") in top or a.scope == {"key": "k-loop"}
    assert ("model", "gpt-4o") in top
    assert a.changes is not None and a.changes["largest"] in ("mix", "volume")
    effects = sum(Decimal(a.changes[f"{e}_usd"]) for e in ("volume", "mix", "tokens_per_call", "price"))
    assert effects == Decimal(a.changes["change_usd"])  # every dollar of the change has a reason
    assert "k-loop" in a.message and "expected" in a.message
    # one incident, one anomaly: the calls and tokens of that scope and bucket are folded into it
    assert not [x for x in found if x.bucket_start == spike_bucket and x.scope == a.scope and x.signal == "tokens"]
    # the quiet hours before the loop raise no spend anomaly
    assert all(x.bucket_start >= spike_bucket - timedelta(minutes=15) for x in cost), [x.message for x in cost]


def test_a_call_far_above_its_features_usual_tokens_is_flagged(ledger_file: Path) -> None:
    watch = AnomalyWatch(DuckDBLedger(ledger_file), SETTINGS)
    found = [a for a in watch.scan(NOW - timedelta(hours=1), NOW) if a.kind == "call"]
    assert len(found) == 1, [a.message for a in found]
    a = found[0]
    assert a.scope == {"feature": "support-bot"} and a.actual == 90500 and a.expected == pytest.approx(1200, rel=0.01)
    assert a.request_id is not None and ("key", "k-support") in {(c["dimension"], c["value"]) for c in a.contributors}
    assert "75×" in a.message


def test_rounds_record_every_anomaly_and_alert_once_across_replicas(ledger_file: Path, tmp_path: Path) -> None:
    async def run() -> tuple[list[Alert], list[dict[str, object]], int]:
        state = InMemoryState()  # shared by both "replicas", as Redis would be
        alerts: list[Alert] = []
        records: list[dict[str, object]] = []

        async def record(r: dict[str, object]) -> None:
            records.append(r)

        replicas = [AnomalyRounds(DuckDBLedger(ledger_file), SETTINGS, state, alerts.append, record, lambda: NOW)
                    for _ in range(2)]  # fmt: skip
        for r in replicas:
            await r.check_all()
        ran = sum(r.found for r in replicas)
        for r in replicas:  # the same bucket again: nothing new
            await r.check_all()
        assert sum(r.found for r in replicas) == ran
        return alerts, records, sum(1 for r in replicas if r.found)

    alerts, records, who = asyncio.run(run())
    assert who == 1  # one replica ran the round
    assert records and all(r["kind"] == "anomaly" for r in records)
    names = [a.budget for a in alerts]
    assert len(names) == len(set(names))  # one alert per incident
    spend = [a for a in alerts if a.budget.startswith("cost ")]
    assert spend and spend[0].spent_usd is not None and spend[0].details["severity"] in ("high", "critical")
    assert "TokenOps anomaly" in describe(spend[0]) and subject(spend[0]).startswith("[TokenOps] Anomaly (")

    # recorded through the spool, the anomalies are listed by the CLI
    spool = Spool(tmp_path / "spool")

    async def write() -> None:
        for r in records:
            await spool.append_record(r)

    asyncio.run(write())
    spool.close()
    ledger = DuckDBLedger(tmp_path / "copy.duckdb")
    ledger.drain(tmp_path / "spool", None)
    listed = ledger.anomalies(NOW - timedelta(hours=1), None)
    assert {r["id"] for r in listed} == {r["id"] for r in records}
    assert all(r["details"]["signal"] for r in listed)
    ledger.close()


def _config(tmp_path: Path, ledger_file: Path) -> Path:
    cfg = tmp_path / "tokenops.yaml"
    cfg.write_text(f"ledger: duckdb:///{ledger_file}\nanomalies:\n  scopes: [[team], [feature], [key]]\n"
                   "  min_change_usd: '0.05'\n  history: 172800\n")  # fmt: skip
    return cfg


def test_cli_scan_finds_the_loop_and_filters_by_scope(ledger_file: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, ledger_file)
    since = (NOW - timedelta(hours=2)).isoformat()
    until = NOW.isoformat()
    runner = CliRunner()
    res = runner.invoke(app, ["anomalies", "--scan", "--since", since, "--until", until, "-c", str(cfg),
                              "--format", "json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = orjson.loads(res.stdout)
    assert out["count"] == len(out["anomalies"]) > 0
    assert any(a["signal"] == "cost" and a["severity"] in ("high", "critical") for a in out["anomalies"])
    res = runner.invoke(app, ["anomalies", "--scan", "--since", since, "--until", until, "-c", str(cfg),
                              "--scope", "team=support", "--format", "json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert all(a["scope"].get("team") == "support" for a in orjson.loads(res.stdout)["anomalies"])
    # a scan inside one team, in 10-minute buckets: every series is that team's, the loop is still found
    res = runner.invoke(app, ["anomalies", "--scan", "--since", since, "--until", until, "-c", str(cfg),
                              "--scope", "team=search", "--bucket", "600", "--format", "json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    scoped = orjson.loads(res.stdout)["anomalies"]
    assert scoped and all(a["scope"]["team"] == "search" and a["bucket_seconds"] in (600, 0) for a in scoped)
    assert any(a["signal"] == "cost" for a in scoped)
    res = runner.invoke(app, ["anomalies", "--scan", "--bucket", "5", "-c", str(cfg)])
    assert res.exit_code != 0 and "--bucket must be 60 to 86400" in str(res.exception)
    # nothing recorded by a gateway yet: the list says so and points at --scan
    res = runner.invoke(app, ["anomalies", "--since", since, "-c", str(cfg)])
    assert res.exit_code == 0 and "no anomalies in this window" in res.output
    res = runner.invoke(app, ["anomalies", "--signal", "bogus", "-c", str(cfg)])
    assert res.exit_code != 0 and "--signal must be one of" in str(res.exception)


def test_closing_the_gateway_stops_a_round_learning_history(ledger_file: Path) -> None:
    """A round learning days of history in its thread gives up at the next series once the gateway closes (an
    interpreter waits for such a thread at exit), and the throttle lets the gateway's calls run meanwhile."""
    import threading
    import time

    from tokenops.gateway.anomalies import Stopped, Throttle

    stop = threading.Event()
    pace = Throttle(stop, work=0.0, rest=0.01)
    started = time.monotonic()
    pace()
    assert time.monotonic() - started >= 0.01  # it rested
    stop.set()
    with pytest.raises(Stopped):
        pace()

    async def run() -> AnomalyRounds:
        rounds = AnomalyRounds(DuckDBLedger(ledger_file), SETTINGS, InMemoryState(), lambda a: None,
                               _ignore, lambda: NOW)  # fmt: skip
        rounds.stopping.set()  # as close() does
        await rounds.check_all()
        return rounds

    rounds = asyncio.run(run())
    assert rounds.found == 0 and rounds.watch.fed_until is None


async def _ignore(record: dict[str, object]) -> None:
    return None


def test_review_findings_on_the_watch(ledger_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anomalies past the explanation cap are kept (unexplained), two teams with the same spike both alert, a quiet
    signal keeps the ring in bucket order, and something where there is usually nothing is not 'critical'."""
    import math

    from tokenops.analytics import watch as w

    full = AnomalyWatch(DuckDBLedger(ledger_file), SETTINGS).scan(NOW - timedelta(hours=6), NOW)
    monkeypatch.setattr(w, "MAX_EXPLAINED", 1)
    capped = AnomalyWatch(DuckDBLedger(ledger_file), SETTINGS).scan(NOW - timedelta(hours=6), NOW)
    assert [a.id for a in capped] == [a.id for a in full]
    assert sum(1 for a in capped if a.kind == "series" and a.contributors) <= 1

    def anomaly(team: str, actual: float) -> w.Anomaly:
        return w.Anomaly("series", "cost", {"team": team}, NOW, 300, actual, 1.0, 0.5, 1.5, 0.9, "high", "up")

    kept = w.fold([anomaly("search", 5.00), anomaly("support", 5.02)])
    assert {a.scope["team"] for a in kept} == {"search", "support"}

    track = w._Track(None, per_day=4, keep_days=3)
    for _day in range(3):
        for slot, value in enumerate((None, None, 2000.0, 200.0)):
            track.skip() if value is None else track.add(slot, value)
    track.skip()
    track.skip()  # the next day: two quiet buckets, then the busy one
    expected = track.expected(2)
    assert expected is not None and expected[0] == 2000.0
    assert not any(math.isnan(x) for x in expected)
    assert w.severity(3.0, 0.0, 0.0, "up") == "medium"


def test_a_restarted_gateway_resumes_the_watch_instead_of_learning_again(ledger_file: Path, tmp_path: Path) -> None:
    """The learnt detectors are saved at close and resumed at start: the next round reads only the new bucket; a
    state saved with other settings (or another detector) is not resumed."""
    from tokenops.analytics import watch as w

    state_file = tmp_path / "anomaly-watch.pickle"
    later = NOW + timedelta(minutes=5)

    async def first() -> AnomalyRounds:
        rounds = AnomalyRounds(DuckDBLedger(ledger_file), SETTINGS, InMemoryState(), lambda a: None, _ignore,
                               lambda: NOW, state_file=state_file)  # fmt: skip
        await rounds.check_all()
        await rounds.close()
        return rounds

    before = asyncio.run(first())
    assert state_file.exists() and before.watch.fed_until is not None

    reads: list[tuple[datetime, datetime]] = []

    class Counting(DuckDBLedger):
        def activity(self, q: Any, bucket_seconds: int) -> Any:
            reads.append((q.since, q.until))
            return super().activity(q, bucket_seconds)

    async def second() -> AnomalyRounds:
        rounds = AnomalyRounds(Counting(ledger_file), SETTINGS, InMemoryState(), lambda a: None, _ignore,
                               lambda: later, state_file=state_file)  # fmt: skip
        assert await asyncio.to_thread(rounds.resume)
        await rounds.check_all()
        return rounds

    after = asyncio.run(second())
    assert after.watch.fed_until == before.watch.fed_until + timedelta(minutes=5)
    # the new bucket and the hour before an anomaly (its explanation): not the two days of history again
    assert reads and all(until - since <= timedelta(minutes=65) for since, until in reads if since and until)
    other = w.AnomalyWatch(DuckDBLedger(ledger_file), AnomaliesConfig(bucket=600))
    assert not other.restore(state_file.read_bytes()) and other.fed_until is None
    assert not other.restore(b"not a pickle")


def test_the_watch_is_saved_while_it_runs_so_a_crash_does_not_learn_the_history_again(ledger_file: Path,
                                                                                       tmp_path: Path) -> None:  # fmt: skip
    """Saved after the first round and then once an hour (no close: the process may die at any moment)."""
    from tokenops.gateway import anomalies as ga

    state_file = tmp_path / "anomaly-watch.pickle"
    clock = [NOW]

    async def run() -> AnomalyRounds:
        rounds = AnomalyRounds(DuckDBLedger(ledger_file), SETTINGS, InMemoryState(), lambda a: None, _ignore,
                               lambda: clock[0], state_file=state_file)  # fmt: skip
        await rounds.check_all()
        assert state_file.exists()  # saved after the round that learnt the history, before any close
        first = state_file.stat().st_mtime_ns, state_file.read_bytes()
        clock[0] = NOW + timedelta(minutes=5)
        await rounds.check_all()
        assert (state_file.stat().st_mtime_ns, state_file.read_bytes()) == first  # not every round
        clock[0] = NOW + ga.SAVE_EVERY + timedelta(minutes=5)
        await rounds.check_all()
        assert state_file.read_bytes() != first[1]  # an hour later: saved again
        return rounds  # never closed: what a crash leaves

    crashed = asyncio.run(run())
    reads: list[tuple[datetime, datetime]] = []

    class Counting(DuckDBLedger):
        def activity(self, q: Any, bucket_seconds: int) -> Any:
            reads.append((q.since, q.until))
            return super().activity(q, bucket_seconds)

    clock[0] += timedelta(hours=3)  # the gateway comes back three hours after the crash
    resumed = AnomalyRounds(Counting(ledger_file), SETTINGS, InMemoryState(), lambda a: None, _ignore,
                            lambda: clock[0], state_file=state_file)  # fmt: skip
    assert resumed.resume() and resumed.watch.fed_until == crashed.watch.fed_until
    asyncio.run(resumed.check_all())
    assert resumed.watch.fed_until == resumed.watch.ready_until(clock[0])
    # the missed buckets (quietly) and the newest one: not the two days of history again
    assert reads and all(until - since <= timedelta(hours=3, minutes=5) for since, until in reads if since and until)
    assert min(since for since, _ in reads if since) >= crashed.watch.fed_until - timedelta(hours=1)
