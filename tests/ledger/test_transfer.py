"""``tokenops ledger migrate``: a whole ledger copied between backends, losslessly, idempotently, verified."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_samples import alert_record, approval_record, event, sample_events, write_segment
from typer.testing import CliRunner

from harness import free_port
from tokenops.cli import app
from tokenops.keys import KeyRecord
from tokenops.ledger import migrations
from tokenops.ledger.base import TABLES, Ledger
from tokenops.ledger.business_metrics import MetricRow
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.postgres import PostgresLedger
from tokenops.ledger.reports import ReportQuery
from tokenops.ledger.transfer import copy_ledger, verify
from tokenops.pricing.model import PriceRow

runner = CliRunner()


def fill(ledger: Ledger, tmp_path: Path) -> None:
    """Something in every table that is copied, with what a copy could lose: exact money, non-ASCII text, times
    to the microsecond, a revoked key, a decided approval, alert details."""
    row = PriceRow(id="openai:gpt-4o:2026", provider="openai", model="gpt-4o",
                   effective_from=datetime(2026, 1, 1, tzinfo=UTC), input_per_mtok=Decimal("2.5"),
                   output_per_mtok=Decimal("10"), source="genai-prices")  # fmt: skip
    ledger.append(sample_events(300), [row])
    for i in range(3):
        ledger.insert_key(KeyRecord(id=f"key_{i}", name=f"app-{i}", key_hash=f"hash{i}", key_prefix="tok-x",
                                    tags={"team": "東京"} if i else {}, locked_tags=("team",) if i else (),
                                    created_at=datetime(2026, 11, 1, 8, 0, 0, 123456, tzinfo=UTC),
                                    end_user="bøb" if i == 2 else None))  # fmt: skip
    ledger.revoke_key("key_1")
    ledger.put_definition("budget", "monthly", {"name": "monthly", "amount_usd": "100", "z": [1], "a": None}, "me")
    ledger.put_definition("rule", "deny", {"name": "deny", "deny": ["gpt-4o"]}, None)
    at = datetime(2026, 11, 3, 10, 0, 0, 654321, tzinfo=UTC)
    write_segment(tmp_path / "spool", [approval_record(1, at), approval_record(2, at), alert_record(1, at),
                                       alert_record(2, at + timedelta(seconds=1))])  # fmt: skip
    ledger.drain(tmp_path / "spool")
    ledger.decide_approval("apr_1", "approved", by="boss", at=at, until=None, max_usd=Decimal("0.000000000001"))
    ledger.put_business_metrics([MetricRow(date(2026, 10, 1), "tickets_resolved", Decimal("412.000000000001"),
                                           {"team": "東京", "feature": "bot"}),
                                 MetricRow(date(2026, 10, 2), "revenue", Decimal("0"))], source="m.csv")  # fmt: skip


def everything(ledger: Ledger) -> dict[str, list[dict[str, object]]]:
    return {t: ledger.export_rows(t, None, 10**6) for t in TABLES}


def test_duckdb_to_postgresql_to_duckdb_keeps_everything(tmp_path: Path, pg_ledger: PostgresLedger) -> None:
    first = DuckDBLedger(tmp_path / "first.duckdb")
    fill(first, tmp_path)
    last = DuckDBLedger(tmp_path / "last.duckdb")
    assert copy_ledger(first, pg_ledger, batch=70).new["events"] == first.count_events()
    assert copy_ledger(pg_ledger, last, batch=1000).new["events"] == first.count_events()
    original = everything(first)
    assert all(original[t] for t in TABLES), "every table has something to copy"
    assert everything(pg_ledger) == original
    assert everything(last) == original
    assert verify(first, pg_ledger) == [] and verify(pg_ledger, last) == []
    for by in (["team", "model"], ["day"], ["key", "status"]):
        q = ReportQuery.build(by, timezone="Europe/Berlin")
        assert last.spend_report(q).rows == pg_ledger.spend_report(q).rows == first.spend_report(q).rows
    assert pg_ledger._all("SELECT sum(requests) FROM events_hourly") == [(first.count_events(),)]
    assert pg_ledger.identity_secret() != first.identity_secret(), "a copy is another ledger: its own identity"


def test_a_rerun_copies_nothing_twice_and_brings_changed_rows_up_to_date(tmp_path: Path,
                                                                          pg_ledger: PostgresLedger) -> None:  # fmt: skip
    source = DuckDBLedger(tmp_path / "source.duckdb")
    fill(source, tmp_path)
    copy_ledger(source, pg_ledger, batch=100)
    source.revoke_key("key_2")
    source.decide_approval("apr_2", "denied", by="boss", at=datetime(2026, 11, 4, tzinfo=UTC), until=None,
                           max_usd=None)  # fmt: skip
    source.append([late := event(1, ts=datetime(2026, 12, 30, tzinfo=UTC))])
    again = copy_ledger(source, pg_ledger, batch=100)
    assert again.new == {t: (1 if t == "events" else 0) for t in TABLES}
    assert again.read["events"] == source.count_events()
    assert everything(pg_ledger) == everything(source)
    assert pg_ledger.get_event(late.request_id) == late


def test_verify_names_what_differs(tmp_path: Path, pg_ledger: PostgresLedger) -> None:
    source = DuckDBLedger(tmp_path / "source.duckdb")
    source.append([event(i, cost_usd=Decimal("0.000000000001")) for i in range(3)])
    copy_ledger(source, pg_ledger)
    pg_ledger.append([event(9, cost_usd=Decimal("1"))])
    problems = verify(source, pg_ledger)
    assert problems == ["events: 3 rows vs 4", "total cost: 0.000000000003 vs 1.000000000003 USD",
                        "input_tokens: 303 vs 412", "output_tokens: 30 vs 40"]  # fmt: skip


# --- the command ---------------------------------------------------------------------------------------
def tokenops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenops", *args], capture_output=True, text=True, timeout=60)


def test_the_command_copies_verifies_and_reruns(tmp_path: Path, pg_url: str) -> None:
    source = DuckDBLedger(tmp_path / "source.duckdb")
    fill(source, tmp_path)
    src_url = f"duckdb:///{tmp_path}/source.duckdb"
    out = runner.invoke(app, ["ledger", "migrate", "--from", src_url, "--to", pg_url, "--batch", "100"],
                        catch_exceptions=False)  # fmt: skip
    assert out.exit_code == 0, out.output
    n = source.count_events()
    assert f"copied 1 price_rows, 3 keys, 1 budgets, 1 policies, 2 approvals, 2 alerts, 2 business_metrics, {n} events" in out.output
    assert f"verified: {n} events, ${source.totals().cost_usd:f}" in out.output
    again = runner.invoke(app, ["ledger", "migrate", "--from", src_url, "--to", pg_url], catch_exceptions=False)
    assert again.exit_code == 0 and "copied 0 price_rows, 0 keys" in again.output and ", 0 events" in again.output
    with PostgresLedger(pg_url) as dest:
        dest.append([event(1)])  # the destination now holds more than the source
    differs = tokenops("ledger", "migrate", "--from", src_url, "--to", pg_url)
    assert differs.returncode == 2 and "Traceback" not in differs.stderr
    assert f"events: {n} rows vs {n + 1}" in differs.stderr


def test_to_alone_applies_the_schema(pg_url: str, tmp_path: Path) -> None:
    out = runner.invoke(app, ["ledger", "migrate", "--to", pg_url], catch_exceptions=False)
    assert out.exit_code == 0 and f"applied {', '.join(migrations.NAMES)}" in out.output
    out = runner.invoke(app, ["ledger", "migrate", "--to", pg_url], catch_exceptions=False)
    assert out.exit_code == 0 and out.output.strip() == f"{pg_url}: schema up to date"
    out = runner.invoke(app, ["ledger", "migrate", "--to", f"duckdb:///{tmp_path}/new.duckdb"], catch_exceptions=False)
    assert out.exit_code == 0 and (tmp_path / "new.duckdb").exists()


@pytest.mark.parametrize("args, says", [
    (["--from", "mysql://u:s3cret@h/db", "--to", "duckdb:///x.duckdb"], "--from: unknown ledger URL 'mysql://u:***@h/db'"),
    (["--to", "sqlite:///x.db"], "--to: unknown ledger URL"),
    (["--from", "duckdb:///./a.duckdb", "--to", "duckdb:///a.duckdb"], "--from and --to name the same ledger"),
    (["--from", "postgres://u:s3cret@127.0.0.1/x", "--to", "postgresql://127.0.0.1:5432/x"], "the same ledger"),
    (["--from", "duckdb:///./missing.duckdb", "--to", "duckdb:///./b.duckdb"], "--from: no ledger file at"),
    (["--to", "postgresql://postgres:s3cret@127.0.0.1:{port}/x"], "cannot connect to ledger postgresql://postgres:***@"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path) -> None:
    args = [a.replace("{port}", str(free_port())) for a in args]
    done = subprocess.run([sys.executable, "-m", "tokenops", "ledger", "migrate", *args], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "s3cret" not in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
