"""What only the PostgreSQL ledger has: its URL and connections, rights, the migration lock, monthly partitions,
the hourly rollup's guard, the glob translation, and what PostgreSQL refuses that DuckDB takes."""

from __future__ import annotations

import fnmatch
import multiprocessing
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_samples import event, write_segment

from harness import free_port
from services import admin, database_url, fresh_database, login_role
from tokenops.errors import LedgerError
from tokenops.ledger import migrations, open_ledger
from tokenops.ledger.postgres import PostgresLedger, safe_url
from tokenops.ledger.postgres_sql import glob_regex, rollup_can_answer
from tokenops.ledger.reports import ReportQuery, report_from_rows
from tokenops.ledger.spool import Spool


def test_safe_url_masks_the_password() -> None:
    assert safe_url("postgresql://u:s3cr%40t@db:5432/x?sslmode=require") == "postgresql://u:***@db:5432/x?sslmode=require"
    assert safe_url("postgres://u@db/x?password=s3cret&a=b") == "postgres://u@db/x?password=***&a=b"
    assert safe_url("postgresql://db/x") == "postgresql://db/x"
    assert "s3cret" not in repr(PostgresLedger("postgresql://u:s3cret@db/x"))


@pytest.mark.parametrize("where", ["refused", "unknown database", "unknown host"])
def test_a_url_that_points_at_nothing_is_a_clear_error_quickly(where: str) -> None:
    url = {
        "refused": f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/tokenops",
        "unknown database": database_url("tokenops_no_such_database").replace("postgres@", "postgres:s3cret@"),
        "unknown host": "postgresql://postgres:s3cret@no-such-host.invalid:5432/tokenops",
    }[where]
    ledger = open_ledger(url)
    start = time.monotonic()
    with pytest.raises(LedgerError) as err:
        ledger.count_events()
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert message.startswith(f"cannot connect to ledger {safe_url(url)}: ") and "s3cret" not in message
    assert "\n" not in message
    if where == "unknown database":
        assert "does not exist" in message
    ledger.close()


def test_a_user_without_rights_is_told_who_must_migrate_then_works_once_migrated() -> None:
    with login_role() as role, fresh_database() as url:
        name = url.rpartition("/")[2]
        user_url = database_url(name, user=role)
        user = PostgresLedger(user_url)
        with pytest.raises(LedgerError, match=f"may not create.*tokenops ledger migrate --to {user_url}"):
            user.count_events()
        owner = PostgresLedger(url)
        assert owner.migrate() == list(migrations.NAMES)
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        november = [event(i, ts=datetime(2026, 11, 5, tzinfo=UTC) + timedelta(hours=i)) for i in range(3)]
        assert user.append(november) == 3  # no rights to make the month's partition: the default one keeps it
        assert user.spend_report(ReportQuery.build(["team"])).rows[0].requests == 3
        assert owner.append([event(9, ts=datetime(2026, 11, 20, tzinfo=UTC))]) == 1
        where = dict(owner._all("SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1"))
        assert where == {"events_default": 4}, "a month in the default partition stays there"
        user.close()
        owner.close()


def test_events_get_monthly_partitions_made_on_demand(pg_ledger: PostgresLedger) -> None:
    times = [datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
             datetime(2027, 1, 15, tzinfo=UTC), datetime(1999, 12, 31, 23, tzinfo=UTC),
             datetime(2250, 1, 1, tzinfo=UTC)]  # fmt: skip
    assert pg_ledger.append([event(i, ts=t) for i, t in enumerate(times)]) == 5
    where = dict(pg_ledger._all("SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1"))
    assert where == {"events_2026_10": 1, "events_2026_11": 1, "events_2027_01": 1, "events_default": 2}
    parts = {r[0] for r in pg_ledger._all("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                          "WHERE i.inhparent = 'events'::regclass")}  # fmt: skip
    assert "events_2027_02" in parts, "the month after a batch's last is made ahead of time"
    assert pg_ledger.count_events() == 5 and pg_ledger.append([event(0, ts=times[0])]) == 1


def test_an_hour_that_straddles_two_days_of_the_zone_is_read_from_the_events(pg_ledger: PostgresLedger) -> None:
    """Berlin's clocks ran 53 minutes 28 seconds ahead of UTC before 1893: the rollup's hours do not fit its
    days then, and the report reads the events (the zone passes the quick check on today's offset)."""
    pg_ledger.append([event(i, ts=datetime(1890, 6, 1, 23, i, tzinfo=UTC)) for i in range(20)])  # midnight: 23:06:32
    q = ReportQuery.build(["day"], timezone="Europe/Berlin")
    assert rollup_can_answer(q) and pg_ledger._report_from_rollup(q) is None
    report = pg_ledger.spend_report(q)
    assert report.rows == report_from_rows(q, pg_ledger._report_from_events(q)).rows
    assert [(r.keys["day"], r.requests) for r in report.rows] == [("1890-06-02", 13), ("1890-06-01", 7)]


def test_what_postgresql_cannot_hold_is_quarantined_and_the_rest_drains(pg_ledger: PostgresLedger,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    spool_dir = tmp_path / "spool"
    good = [event(i) for i in range(3)]
    long_id = event(5, request_id="req_" + "x" * 5000)
    nul_user = event(6, end_user="bob\x00")
    write_segment(spool_dir, [good[0].to_json(), long_id.to_json(), good[1].to_json(), nul_user.to_json(),
                              good[2].to_json()])  # fmt: skip
    assert pg_ledger.drain(spool_dir) == 3
    lines = [orjson.loads(line) for line in (spool_dir / "rejected.log").read_bytes().splitlines()]
    assert [orjson.loads(r["line"])["request_id"] for r in lines] == [long_id.request_id, nul_user.request_id]
    assert pg_ledger._all("SELECT sum(requests) FROM events_hourly") == [(3,)]


def test_a_migration_cut_off_half_way_is_rolled_back_and_completed_on_the_next_start(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    steps = list(migrations.POSTGRESQL)
    name, body = steps[2]
    steps[2] = (name, body + "; SELECT pg_sleep(60)")
    monkeypatch.setattr(migrations, "POSTGRESQL", steps)
    first, second = PostgresLedger(pg_url), PostgresLedger(pg_url)
    outcome: dict[str, Any] = {}

    def run(key: str, ledger: PostgresLedger) -> None:
        try:
            outcome[key] = ledger.migrate()
        except LedgerError as exc:
            outcome[key] = exc

    cut = threading.Thread(target=run, args=("first", first))
    cut.start()
    with admin() as conn:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE %s"
        deadline = time.monotonic() + 20
        while not (pids := conn.execute(query, [pg_url.rpartition("/")[2], "%pg_sleep%"]).fetchall()):
            assert time.monotonic() < deadline, "the migration never started"
            time.sleep(0.05)
        monkeypatch.undo()  # the next start has the real migrations
        waiting = threading.Thread(target=run, args=("second", second))
        waiting.start()  # blocks on the advisory lock while the first one holds it
        time.sleep(0.5)
        assert "second" not in outcome
        conn.execute("SELECT pg_terminate_backend(%s)", [pids[0][0]])  # the first process dies mid-migration
    cut.join(30)
    waiting.join(30)
    assert isinstance(outcome["first"], LedgerError)
    assert outcome["second"] == list(migrations.NAMES[2:])
    assert second.list_keys() == [] and second.count_events() == 0
    second.close()


def _drain_in_a_process(url: str, spool_dir: str, start: Any) -> int:
    start.wait(30)
    with PostgresLedger(url) as ledger:
        return ledger.drain(Path(spool_dir), timeout=30)


def test_drains_in_two_processes_never_double_an_event(pg_ledger: PostgresLedger, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    events = [event(i, ts=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=i)) for i in range(4000)]
    spool = Spool(spool_dir)
    spool.append_sync(events)
    spool.close()
    pg_ledger.migrate()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(2) as pool:
            results = [pool.apply_async(_drain_in_a_process, (pg_ledger.url, str(spool_dir), start)) for _ in range(2)]
            start.set()
            counts = [r.get(60) for r in results]
    assert sum(counts) == 4000
    assert pg_ledger._all("SELECT count(*), count(DISTINCT request_id) FROM events") == [(4000, 4000)]
    assert pg_ledger._all("SELECT sum(requests) FROM events_hourly") == [(4000,)]


def test_a_pool_whose_connections_were_cut_reconnects(pg_ledger: PostgresLedger) -> None:
    pg_ledger.append([event(1)])
    with admin() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                     "pg_backend_pid()", [pg_ledger.url.rpartition("/")[2]])  # fmt: skip
    assert pg_ledger.count_events() == 1
    pg_ledger.ping()


GLOB_CHARS = "ab-!^]\\[*?.$|()+{}%_é\n"


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(GLOB_CHARS, max_size=8), names=st.lists(st.text(GLOB_CHARS, max_size=6), min_size=1, max_size=8))
def test_model_globs_match_what_fnmatch_matches(pattern: str, names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fnmatch warns about sets it reads as possible nested sets
        expected = [fnmatch.fnmatchcase(n, pattern) for n in names]
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        got = conn.execute("SELECT n ~ %s FROM unnest(%s::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i",
                           [glob_regex(pattern), names]).fetchall()  # fmt: skip
    assert [g[0] for g in got] == expected, glob_regex(pattern)


def test_spent_with_a_glob_of_special_characters(pg_ledger: PostgresLedger) -> None:
    from tokenops.scopes import Scope

    models = ["a\\b", "a[b]", "a.b", "a*b", "ab", "a%b", "a_b", "a^b", "a$b", "a(b)"]
    pg_ledger.append([event(i, model_used=m, model_requested=m, cost_usd=Decimal(1) + i) for i, m in enumerate(models)])
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    for pattern in ["a\\b", "a[[]b]", "a.b", "a[*]b", "a?b", "a%b", "a_b", "a^b", "a$b", "a(b)", "a*", "a[!b]*"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = sum((Decimal(1) + i for i, m in enumerate(models) if fnmatch.fnmatchcase(m, pattern)), Decimal(0))
        assert pg_ledger.spent(Scope((("model", pattern),)), start, end, "usd") == want, pattern


def test_a_url_with_another_scheme_is_refused() -> None:
    with pytest.raises(LedgerError, match="not a PostgreSQL URL"):
        PostgresLedger("mysql://u:pw@h/db")
    with fresh_database() as url:
        ledger = PostgresLedger(url.replace("postgresql://", "postgres://"))
        assert ledger.count_events() == 0
        ledger.close()


async def test_a_gateway_on_postgresql_records_and_reports_its_calls(pg_url: str, tmp_path: Path,
                                                                     fake_app: Any) -> None:  # fmt: skip
    import httpx

    from harness import FAKE_URL, PROVIDER_KEY, create_key
    from tokenops.app import create_app
    from tokenops.config import parse_config

    text = (f"ledger: {pg_url}\nproviders:\n  openai: {{base_url: \"{FAKE_URL}/v1\", api_key: {PROVIDER_KEY}}}\n"
            f"gateway: {{writer_interval: 0.2, writer: thread, spool_dir: {tmp_path}/spool}}\n")  # fmt: skip
    gw = create_app(parse_config(text, file=str(tmp_path / "tokenops.yaml")), transport=httpx.ASGITransport(app=fake_app))
    assert isinstance(gw.ledger, PostgresLedger)
    rec, key = create_key(gw.ledger, tags={"team": "東京"})  # type: ignore[arg-type]
    await gw.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gateway.test")
    try:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                "fake": {"usage": {"input": 1234, "output": 56}}}  # fmt: skip
        r = await client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        gw.ledger.drain(gw.spool_dir, gw.catalog.get, timeout=10)
        ev = gw.ledger.get_event(r.headers["x-tokenops-request-id"])
        assert ev is not None and ev.cost_usd == Decimal(r.headers["x-tokenops-cost-usd"]) and ev.key_id == rec.id
        report = gw.ledger.spend_report(ReportQuery.build(["team", "model"]))
        assert [(row.keys, row.requests) for row in report.rows] == [({"team": "東京", "model": "gpt-4o-mini"}, 1)]
        assert (await client.get("/readyz")).status_code == 200
    finally:
        await client.aclose()
        await gw.close()
        gw.ledger.close()  # type: ignore[attr-defined]


def test_a_new_month_waits_only_so_long_behind_a_long_query(pg_ledger: PostgresLedger,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from tokenops.errors import LedgerBusy
    from tokenops.ledger import postgres

    monkeypatch.setattr(postgres, "PARTITION_LOCK_TIMEOUT", "200ms")
    assert pg_ledger.append([event(1, ts=datetime(2026, 11, 5, tzinfo=UTC))]) == 1
    march = event(2, ts=datetime(2027, 3, 5, tzinfo=UTC))
    with psycopg.connect(pg_ledger.url) as reader:  # a report's transaction holds the events table
        reader.execute("SELECT count(*) FROM events").fetchone()
        assert pg_ledger.append([event(3, ts=datetime(2026, 11, 6, tzinfo=UTC))]) == 1, "its month exists: no wait"
        start = time.monotonic()
        with pytest.raises(LedgerBusy, match="partition of a new month"):
            pg_ledger.append([march])
        assert time.monotonic() - start < 5
        reader.rollback()
    assert pg_ledger.append([march]) == 1 and pg_ledger.count_events() == 3
