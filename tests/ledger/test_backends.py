"""The same ledger tests on every backend (DuckDB and PostgreSQL): what one answers, the other answers."""

from __future__ import annotations

import fnmatch
import threading
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from ledger_samples import START, alert_record, approval_record, event, ledger_before, sample_events, write_segment

from services import fresh_database
from tokenops.errors import LedgerError
from tokenops.keys import KeyRecord
from tokenops.ledger import migrations
from tokenops.ledger.base import Ledger
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.postgres import PostgresLedger
from tokenops.ledger.postgres_sql import rollup_can_answer
from tokenops.ledger.reports import ReportQuery
from tokenops.ledger.spool import Spool, segments
from tokenops.scopes import Scope
from tokenops.usage import Usage

Opener = Callable[[], Ledger]


def sql(ledger: Ledger, statement: str) -> list[Any]:
    """Run SQL on either backend (both have ``connect()`` yielding a connection with ``execute``)."""
    with ledger.connect() as conn:  # type: ignore[attr-defined]
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def rejected(spool_dir: Path) -> list[dict[str, Any]]:
    path = spool_dir / "rejected.log"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def ids(ledger: Ledger) -> dict[str, int]:
    return dict(sql(ledger, "SELECT request_id, count(*) FROM events GROUP BY 1"))


# --- events ----------------------------------------------------------------------------------------------
def test_append_and_get_event_round_trip_every_field(any_ledger: Ledger) -> None:
    e = event(3, cost_usd=Decimal("0.000000037500"), missing_tags=("env", "owner"), end_user="ü-user",
              tags={"team": "Ärger", "feature": "résumé", "x": "東京", "customer": "c1"}, key_id="key_1",
              usage=Usage(input_tokens=2_000, cache_read_tokens=1_000, cache_write_5m_tokens=300,
                          cache_write_1h_tokens=200, output_tokens=700, reasoning_tokens=500),
              usage_estimated=True, price_row_id="p1", route="messages", stream=True, status="cancelled",
              http_status=499, error_code="client_disconnected", latency_ms=12.345678901, ttft_ms=0.5, cache="off",
              upstream_request_id="msg_1", approval_id="apr_1", model_requested="cheap")  # fmt: skip
    unpriced = event(4, cost_usd=None, tags={})
    huge = event(5, cost_usd=Decimal("12345678901234567890123456.123456789012"))
    assert any_ledger.append([e, unpriced, huge]) == 3
    assert any_ledger.append([e]) == 0, "an event the ledger holds is not inserted again"
    assert any_ledger.get_event(e.request_id) == e
    assert any_ledger.get_event(unpriced.request_id) == unpriced
    got = any_ledger.get_event(huge.request_id)
    assert got is not None and got.cost_usd == Decimal("12345678901234567890123456.123456789012")
    assert got.ts.tzinfo is not None and got.ts == huge.ts
    assert any_ledger.get_event("req_missing") is None
    assert any_ledger.count_events() == 3
    kolkata = event(6, ts=(START + timedelta(microseconds=123_457)).astimezone(timezone(timedelta(hours=5, minutes=30))))
    assert any_ledger.append([kolkata]) == 1
    got = any_ledger.get_event(kolkata.request_id)
    assert got is not None and got.ts == kolkata.ts and got.ts.utcoffset() == timedelta(0), "stored as the same instant"
    team = sql(any_ledger, f"SELECT team FROM events WHERE request_id = '{e.request_id}'")
    assert team == [("Ärger",)], "standard tags also fill their own columns"


def test_drain_moves_the_spool_in_exactly_once(any_ledger: Ledger, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    events = [event(i) for i in range(1000)]
    spool.append_sync(events)
    assert any_ledger.drain(spool_dir) == 1000
    assert any_ledger.drain(spool_dir) == 0
    spool.append_sync(more := [event(2000 + i) for i in range(10)])
    assert any_ledger.drain(spool_dir) == 10
    sql(any_ledger, "DELETE FROM spool_progress")  # progress lost: the request ids still keep out doubles
    assert any_ledger.drain(spool_dir) == 0
    assert ids(any_ledger) == {e.request_id: 1 for e in events + more}
    spool.close()
    any_ledger.drain(spool_dir)
    assert segments(spool_dir) == [], "a finished, drained segment is removed"


def test_torn_and_unreadable_lines_are_quarantined_and_the_rest_drains(any_ledger: Ledger, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    good = [event(1), event(2)]
    absurd = orjson.loads(event(9).to_json())
    absurd["usage"]["input_tokens"] = 10**19
    seg = write_segment(spool_dir, [good[0].to_json(), b'{"not": "an event"}', b"\xff\xfe", orjson.dumps(absurd),
                                    good[1].to_json()], torn=b'{"request_id": "torn')  # fmt: skip
    assert any_ledger.drain(spool_dir) == 2
    assert set(ids(any_ledger)) == {e.request_id for e in good}
    reasons = [r["reason"] for r in rejected(spool_dir)]
    assert len(reasons) == 4 and "more than any call" in reasons[2] and "torn last line" in reasons[3]
    assert not seg.exists() and sql(any_ledger, "SELECT count(*) FROM spool_progress") == [(0,)]


def test_lines_as_the_gateway_writes_them_and_older_or_odd_lines_drain_alike(any_ledger: Ledger,
                                                                             tmp_path: Path) -> None:  # fmt: skip
    """A line in to_json's exact shape is stored as it is; any other valid line (an older version's, without a
    field; a cost in exponent notation; a local time offset) is normalised through the event; an invalid one
    is quarantined. Each stored event reads back equal to the one written."""
    spool_dir = tmp_path / "spool"
    exact = event(1, usage=Usage(input_tokens=900, cache_read_tokens=100, output_tokens=50, reasoning_tokens=20))
    old = event(2, cost_usd=Decimal("0.5"))
    old_line = orjson.loads(old.to_json())
    del old_line["approval_id"], old_line["usage"]["reasoning_tokens"]  # a line written before those fields
    exp = event(3, cost_usd=Decimal("0.00012"))
    exp_line = orjson.loads(exp.to_json()) | {"cost_usd": "1.2E-4"}
    berlin = event(4)
    berlin_line = orjson.loads(berlin.to_json()) | {"ts": berlin.ts.astimezone(timezone(timedelta(hours=1))).isoformat()}
    flag = orjson.loads(event(5).to_json()) | {"stream": 1}  # 1 is not a boolean: normalised by the event
    bad = orjson.loads(event(6).to_json())
    bad["usage"]["cache_read_tokens"] = 10**6  # more cache reads than input
    write_segment(spool_dir, [exact.to_json(), orjson.dumps(old_line), orjson.dumps(exp_line),
                              orjson.dumps(berlin_line), orjson.dumps(flag), orjson.dumps(bad)])  # fmt: skip
    assert any_ledger.drain(spool_dir) == 5
    assert any_ledger.get_event(exact.request_id) == exact
    assert any_ledger.get_event(old.request_id) == old.with_(cost_usd=Decimal("0.500000000000"))
    assert any_ledger.get_event(exp.request_id) == exp.with_(cost_usd=Decimal("0.000120000000"))
    assert any_ledger.get_event(berlin.request_id) == berlin
    stored = any_ledger.get_event(orjson.loads(orjson.dumps(flag))["request_id"])
    assert stored is not None and stored.stream is True
    assert [r["reason"] for r in rejected(spool_dir)] == [
        "unreadable: usage cache reads and writes exceed input_tokens (1000000+0 > 106)"]
    assert any_ledger.drain(spool_dir) == 0 and not segments(spool_dir)


def test_an_event_with_a_nul_character_never_stops_the_drain(any_ledger: Ledger, tmp_path: Path) -> None:
    """PostgreSQL's text cannot hold NUL: it refuses the event, which is quarantined; DuckDB keeps it."""
    spool_dir = tmp_path / "spool"
    good = [event(i) for i in range(5)]
    nul_model = event(7, model_used="gpt\x00-4o")
    nul_tag = event(8, tags={"team": "a\x00b"})
    write_segment(spool_dir, [good[0].to_json(), nul_model.to_json(), *(e.to_json() for e in good[1:3]),
                              nul_tag.to_json(), *(e.to_json() for e in good[3:])])  # fmt: skip
    drained = any_ledger.drain(spool_dir)
    stored = set(ids(any_ledger))
    assert {e.request_id for e in good} <= stored
    if isinstance(any_ledger, PostgresLedger):
        assert drained == 5 and stored == {e.request_id for e in good}
        bad = rejected(spool_dir)
        assert [orjson.loads(r["line"])["request_id"] for r in bad] == [nul_model.request_id, nul_tag.request_id]
        assert all("refused by the ledger" in r["reason"] for r in bad)
    else:
        assert drained == 7 and not rejected(spool_dir)
    assert any_ledger.drain(spool_dir) == 0 and not segments(spool_dir)


def test_concurrent_drains_never_double_an_event(backend: Opener, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    writers = [Spool(spool_dir) for _ in range(3)]
    events = [event(i, ts=START + timedelta(days=i % 70, seconds=i)) for i in range(3000)]
    for i, spool in enumerate(writers):
        spool.append_sync(events[i::3])
    writers[0].close()  # a dead segment, a retiring one and two live ones
    ledgers = [backend() for _ in range(2)]
    barrier = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def drain(ledger: Ledger) -> None:
        try:
            barrier.wait()
            counts.extend(ledger.drain(spool_dir, timeout=30) for _ in range(3))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(ledger,)) for ledger in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(counts) == len(events)
    assert ids(ledgers[0]) == {e.request_id: 1 for e in events}
    if isinstance(ledgers[0], PostgresLedger):  # the rollup counted each event once too
        assert sql(ledgers[0], "SELECT sum(requests), sum(cost_usd) FROM events_hourly") == [
            (len(events), sum(e.cost_usd for e in events))]  # fmt: skip
    for spool in writers[1:]:
        spool.close()


# --- reports ---------------------------------------------------------------------------------------------
QUERIES = [
    dict(by=[]),
    dict(by=["team"]),
    dict(by=["team", "model"]),
    dict(by=["provider", "key", "status", "source", "route"]),
    dict(by=["user", "env"]),
    dict(by=["x"]),
    dict(by=["feature", "customer"], where={"x": "ü"}),
    dict(by=["model"], where={"team": "東京", "env": "prod"}),
    dict(by=["day"]),
    dict(by=["day", "team"], timezone="Europe/Berlin"),
    dict(by=["week"], timezone="America/New_York"),
    dict(by=["month", "model"], timezone="Australia/Sydney"),
    dict(by=["day"], timezone="Asia/Kolkata"),
    dict(by=["week", "month"], timezone="Asia/Kathmandu"),
    dict(by=["day"], timezone="Australia/Lord_Howe"),
    dict(by=["team"], where={"day": "2026-10-25"}, timezone="Europe/Berlin"),
    dict(by=["model"], where={"week": "2026-W53"}, timezone="Pacific/Auckland"),
    dict(by=["day"], since=datetime(2026, 10, 31, 22, 59, 59, 999999, tzinfo=UTC),
         until=datetime(2026, 11, 30, 1, 0, 0, 1, tzinfo=UTC), timezone="Europe/Berlin"),
    dict(by=["team", "month"], since=datetime(2026, 12, 1, tzinfo=UTC)),
    dict(by=["status"], until=datetime(2026, 11, 15, 12, 30, tzinfo=UTC)),
    dict(by=["env"], since=datetime(2026, 11, 2, 3, 15, tzinfo=UTC), until=datetime(2026, 11, 2, 3, 45, tzinfo=UTC)),
    dict(by=["team"], limit=2),
    dict(by=["model"], where={"model": "nothing-like-it"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def both_filled(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One DuckDB and one PostgreSQL ledger holding the same sample events (filled once for the module)."""
    events = sample_events()
    duck = DuckDBLedger(tmp_path_factory.mktemp("duck") / "l.duckdb")
    with fresh_database() as url:
        pg = PostgresLedger(url)
        for ledger in (duck, pg):
            ledger.append(events[:150])
            ledger.append(events[100:])  # overlapping batches: the rollup counts each event once
        yield events, duck, pg
        pg.close()


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: ",".join(q["by"]) + "@" + q.get("timezone", "UTC"))
def test_spend_reports_are_identical_on_both_backends(both_filled: Any, query: dict[str, Any]) -> None:
    events, duck, pg = both_filled
    q = ReportQuery.build(**query)
    expected = duck.spend_report(q)
    assert pg.spend_report(q).rows == expected.rows
    assert pg.spend_report(q).to_json() == expected.to_json()
    # the events table and the hourly rollup give the same rows (when the rollup can answer at all)
    from tokenops.ledger.reports import report_from_rows

    assert report_from_rows(q, pg._report_from_events(q)).rows == expected.rows
    rollup = pg._report_from_rollup(q) if rollup_can_answer(q) else None
    if rollup is not None:
        assert report_from_rows(q, rollup).rows == expected.rows
    if not query["by"] and not query.get("where"):
        assert expected.total_cost_usd == sum(e.cost_usd for e in events if e.cost_usd is not None)
        assert expected.unpriced_requests == sum(1 for e in events if e.cost_usd is None) > 0


def test_the_rollup_answers_reports_in_whole_hour_zones(both_filled: Any) -> None:
    _, _, pg = both_filled
    for tz in ("UTC", "Europe/Berlin", "America/New_York"):
        q = ReportQuery.build(["day", "team"], timezone=tz, since=datetime(2026, 10, 30, 7, 5, tzinfo=UTC))
        assert rollup_can_answer(q) and pg._report_from_rollup(q) is not None
    assert not rollup_can_answer(ReportQuery.build(["day"], timezone="Asia/Kolkata"))
    assert not rollup_can_answer(ReportQuery.build(["user"]))
    assert not rollup_can_answer(ReportQuery.build(["team"], where={"x": "y"}))


def test_unpriced_models_and_approval_spend_agree(both_filled: Any) -> None:
    events, duck, pg = both_filled
    assert pg.unpriced_models() == duck.unpriced_models()
    assert sum(m.requests for m in pg.unpriced_models()) == sum(1 for e in events if e.cost_usd is None)
    assert pg.approval_spend() == duck.approval_spend()
    assert pg.approval_spend()["apr_1"] == sum(e.cost_usd or 0 for e in events if e.approval_id == "apr_1")


SCOPES = ["", "team=search", "team=東京,env=prod", "key=key_a", "user=alice", "x=ü", "model=gpt-4o*", "model=gpt-4o",
          "model=*[large]", "model=mistral[[]large]", "model=weird$^x|m%_", "model=llama.3+1(b)", "model=llama?3*",
          "model=[!g]*", "model=[a-c]*", "model=*[!a-z]", "model=cheap,team=ads", "model=*(b)"]  # fmt: skip


@pytest.mark.parametrize("scope", SCOPES)
def test_spent_counts_every_scope_kind(both_filled: Any, scope: str) -> None:
    events, duck, pg = both_filled
    s = Scope.parse(scope)
    start, end = datetime(2026, 10, 30, 12, tzinfo=UTC), datetime(2026, 12, 24, 6, 30, tzinfo=UTC)

    def falls_in(e: Any) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fnmatch warns about sets it reads as possible nested sets
            model_ok = all(fnmatch.fnmatchcase(e.model_requested, v) or fnmatch.fnmatchcase(e.model_used, v)
                           for k, v in s.conditions if k == "model")  # fmt: skip
        others = Scope(tuple((k, v) for k, v in s.conditions if k != "model"))
        return start <= e.ts < end and model_ok and others.matches(e.tags, e.key_id, e.end_user, None)

    mine = [e for e in events if falls_in(e)]
    usd = sum((e.cost_usd for e in mine if e.cost_usd is not None), Decimal(0))
    tokens = Decimal(sum(e.usage.input_tokens + e.usage.output_tokens for e in mine))
    for ledger in (duck, pg):
        assert ledger.spent(s, start, end, "usd") == usd, type(ledger).__name__
        assert ledger.spent(s, start, end, "tokens") == tokens, type(ledger).__name__


# --- keys, definitions, approvals, alerts -------------------------------------------------------------------
def test_keys_insert_list_revoke(any_ledger: Ledger) -> None:
    first = KeyRecord(id="key_b1", name="search-app", key_hash="h1", key_prefix="tok-abc", tags={"team": "Ärger"},
                      locked_tags=("team",), created_at=datetime(2026, 11, 1, 8, tzinfo=UTC),
                      end_user="ünï")  # fmt: skip
    second = KeyRecord(id="key_a2", name="ads", key_hash="h2", key_prefix="tok-def",
                       created_at=datetime(2026, 11, 1, 9, tzinfo=UTC))  # fmt: skip
    any_ledger.insert_key(second)
    any_ledger.insert_key(first)
    assert any_ledger.list_keys() == [first, second]
    with pytest.raises(LedgerError):
        any_ledger.insert_key(first)  # the same hash twice
    assert any_ledger.revoke_key("key_b1") and any_ledger.revoke_key("key_b1")
    assert not any_ledger.revoke_key("key_missing")
    listed = any_ledger.list_keys()
    assert listed[0].revoked_at is not None and listed[0].revoked_at.tzinfo is not None and listed[1].active


def test_definitions_put_delete_list(any_ledger: Ledger) -> None:
    budget = {"name": "b", "amount_usd": "100.000000000001", "scope": {"team": "東京"}, "z": 1, "a": [1, 2]}
    any_ledger.put_definition("budget", "b", budget, "admin")
    any_ledger.put_definition("budget", "a", {"name": "a", "amount_usd": "1"}, None)
    any_ledger.put_definition("limit", "b", {"name": "b", "rpm": 10}, "admin")
    any_ledger.put_definition("rule", "b", {"name": "b", "deny": ["gpt-4o"]}, "admin")
    assert any_ledger.definitions("budget") == [{"name": "a", "amount_usd": "1"}, budget]
    assert list(any_ledger.definitions("budget")[1]) == list(budget), "a definition keeps its keys' order"
    any_ledger.put_definition("budget", "a", {"name": "a", "amount_usd": "2"}, "admin")
    assert any_ledger.definitions("budget")[0] == {"name": "a", "amount_usd": "2"}
    assert any_ledger.definitions("limit") == [{"name": "b", "rpm": 10}]
    assert any_ledger.delete_definition("limit", "b") and not any_ledger.delete_definition("limit", "b")
    assert any_ledger.definitions("limit") == [] and any_ledger.definitions("rule") == [{"name": "b", "deny": ["gpt-4o"]}]
    with pytest.raises(ValueError):
        any_ledger.definitions("nonsense")


def test_approvals_from_the_spool_decided_and_listed(any_ledger: Ledger, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    at = datetime(2026, 11, 3, 10, 0, 0, 123456, tzinfo=UTC)
    write_segment(spool_dir, [approval_record(1, at), approval_record(2, at + timedelta(hours=1)),
                              approval_record(1, at), event(1, approval_id="apr_1", cost_usd=Decimal("0.5")).to_json(),
                              event(2, approval_id="apr_1", cost_usd=Decimal("0.25")).to_json()])  # fmt: skip
    assert any_ledger.drain(spool_dir) == 2
    listed = any_ledger.approvals()
    assert [a.id for a in listed] == ["apr_2", "apr_1"] and all(a.status == "pending" for a in listed)
    assert listed[1].requested_at == at and listed[1].message == "über budget 1" and listed[1].key_id == "key_a"
    until = at + timedelta(days=1)
    any_ledger.decide_approval("apr_1", "approved", by="boss", at=at + timedelta(minutes=5), until=until,
                               max_usd=Decimal("10.000000000001"))  # fmt: skip
    decided = any_ledger.approvals()[1]
    assert (decided.status, decided.decided_by, decided.until, decided.max_usd) == (
        "approved", "boss", until, Decimal("10.000000000001"))  # fmt: skip
    assert decided.decided_at == at + timedelta(minutes=5)
    assert any_ledger.approval_spend() == {"apr_1": Decimal("0.75")}


def test_alerts_from_the_spool(any_ledger: Ledger, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    at = datetime(2026, 11, 20, 9, tzinfo=UTC)
    write_segment(spool_dir, [alert_record(i, at + timedelta(minutes=i)) for i in range(3)]
                  + [alert_record(0, at), alert_record(9, at - timedelta(days=40), budget="old")])  # fmt: skip
    assert any_ledger.drain(spool_dir) == 0
    listed = any_ledger.alerts()
    assert [a["id"] for a in listed] == ["alr_2", "alr_1", "alr_0", "alr_9"]
    assert listed[0]["threshold"] == 0.7 and listed[0]["fired_at"] == (at + timedelta(minutes=2)).isoformat()
    assert [a["id"] for a in any_ledger.alerts(limit=1)] == ["alr_2"]
    start = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
    assert any_ledger.fired_alerts(datetime(2026, 10, 1, tzinfo=UTC)) == {
        ("threshold", "monthly", start, 0.5), ("threshold", "monthly", start, 0.6),
        ("threshold", "monthly", start, 0.7), ("threshold", "old", start, 1.4)}  # fmt: skip
    assert any_ledger.fired_alerts(datetime(2026, 11, 2, tzinfo=UTC)) == set()


# --- meta and schema ---------------------------------------------------------------------------------------
def test_identity_secret_is_made_once_and_kept(backend: Opener) -> None:
    first = backend().identity_secret()
    assert len(first) == 64 and backend().identity_secret() == first == backend().identity_secret()


def test_migration_names_are_the_same_on_both_backends() -> None:
    assert [n for n, _ in migrations.POSTGRESQL] == [n for n, _ in migrations.DUCKDB]


def test_migrations_run_once_and_a_rerun_is_a_no_op(backend: Opener) -> None:
    ledger = backend()
    assert ledger.migrate() == list(migrations.NAMES)
    assert ledger.migrate() == [] and backend().migrate() == []
    assert sorted(r[0] for r in sql(ledger, "SELECT name FROM schema_migrations")) == list(migrations.NAMES)
    ledger.ping()


def test_ledgers_opened_together_migrate_once(backend: Opener) -> None:
    ledgers = [backend() for _ in range(4)]
    barrier = threading.Barrier(len(ledgers))
    errors: list[BaseException] = []

    def start(ledger: Ledger) -> None:
        try:
            barrier.wait()
            ledger.ping(timeout=30)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(ledger,)) for ledger in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(r[0] for r in sql(ledgers[0], "SELECT name FROM schema_migrations")) == list(migrations.NAMES)


def test_an_interrupted_migration_is_rolled_back_and_completed_next_time(backend: Opener,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ledger = backend()
    broken = "postgresql" if isinstance(ledger, PostgresLedger) else "duckdb"
    steps = list(migrations.POSTGRESQL if broken == "postgresql" else migrations.DUCKDB)
    name, body = steps[2]
    steps[2] = (name, body + "; CREATE TABLE keys (x INTEGER)")  # fails after creating the table
    if broken == "postgresql":
        monkeypatch.setattr(migrations, "POSTGRESQL", steps)
    else:
        real = migrations.apply
        monkeypatch.setattr(migrations, "apply", lambda conn, **kw: real(conn, steps, **kw))
    with pytest.raises(LedgerError):
        ledger.ping()
    monkeypatch.undo()
    again = backend()
    done = sorted(r[0] for r in sql(again, "SELECT name FROM schema_migrations"))  # migrates on the way
    assert done == list(migrations.NAMES)
    assert again.list_keys() == []  # 0003_keys made the table whole


def test_keys_of_a_ledger_before_0009_gain_an_empty_end_user(backend: Opener,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    old = ledger_before(backend, monkeypatch, "0009_keys_end_user")
    sql(old, "INSERT INTO keys VALUES ('key_old', 'old', 'h-old', 'tok-old', NULL, NULL, "
             "TIMESTAMP '2026-11-01 08:00:00', NULL)")  # fmt: skip
    monkeypatch.undo()
    new = backend()
    assert new.migrate() == ["0009_keys_end_user"]
    assert [(k.id, k.end_user) for k in new.list_keys()] == [("key_old", None)]
    person = KeyRecord(id="key_new", name="bob's laptop", key_hash="h-new", key_prefix="tok-new",
                       created_at=datetime(2026, 11, 2, tzinfo=UTC), end_user="bob")  # fmt: skip
    new.insert_key(person)
    assert backend().list_keys()[1] == person
    assert {r["id"]: r["end_user"] for r in new.export_rows("keys", None, 10)} == {"key_old": None, "key_new": "bob"}


def test_a_database_of_a_newer_tokenops_is_refused(backend: Opener) -> None:
    sql(backend(), "INSERT INTO schema_migrations VALUES ('9999_from_the_future', now())")
    with pytest.raises(LedgerError, match="newer TokenOps.*9999_from_the_future"):
        backend().count_events()


@pytest.mark.parametrize("name", ["ledger.csv", "ledger.json", "ledger.duckdb"])
def test_a_ledger_path_holding_another_kind_of_file_is_refused_never_used_as_a_throwaway(tmp_path: Path,
                                                                                        name: str) -> None:  # fmt: skip
    """DuckDB opens a CSV or JSON file as a read-only view in memory: writes would vanish without an error."""
    path = tmp_path / name
    path.write_text('{"a": 1}\n' if name.endswith(".json") else "date,metric,value\n2026-01-01,x,1\n")
    with pytest.raises(LedgerError, match="not a DuckDB database|not a valid DuckDB"):
        DuckDBLedger(path).migrate()
    assert path.read_text().startswith(("date,", '{"a"'))  # left as it was
