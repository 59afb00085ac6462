"""``tokenops import metrics``, ``tokenops report units`` and ``tokenops report chargeback``, end to end through the
CLI on a DuckDB ledger file filled with events: exact unit costs, statements that add up to the bill to the cent,
and every bad input a one-line error that writes nothing."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cli_runs import refused, run, runner, write
from tokenops.cli import app
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.usage import Usage

D = Decimal
CHARGEBACK = """
chargeback:
  cost_centres:
    - {name: CC-100 Search, match: {team: search}}
    - {name: "CC-200 <Support> & Co", match: {team: support}}
  shared:
    - {match: {team: platform}, rule: proportional}
    - {match: {feature: shared-gpu}, rule: weights, weights: {CC-100 Search: 3, "CC-200 <Support> & Co": 1}}
  untagged: proportional
  rounding: largest_remainder
"""


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "tokenops.yaml"
    path.write_text("ledger: duckdb:///./l.duckdb\n" + extra)
    return path


def ledger(cfg: Path) -> DuckDBLedger:
    return DuckDBLedger(cfg.parent / "l.duckdb")


def call(ts: datetime, cost: str | None, **tags: str) -> SpendEvent:
    return SpendEvent(request_id=new_request_id(), ts=ts, source="test", provider="openai", model_requested="gpt-4o",
                      model_used="gpt-4o", usage=Usage(input_tokens=100, output_tokens=10),
                      cost_usd=None if cost is None else D(cost), tags=tags)  # fmt: skip


# --- import metrics -------------------------------------------------------------------------------------------
def test_import_is_idempotent_and_says_what_it_added_and_replaced(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    f = write(tmp_path, "m.csv", "date,metric,value,team,feature\n2026-10-01,tickets_resolved,412,support,support-bot\n"
                                 "2026-10-02,tickets_resolved,300,support,support-bot\n\n"
                                 "2026-10-02,tickets_resolved,10.5,support,\n")  # fmt: skip
    assert "3 added, 0 replaced" in run("import", "metrics", str(f), "--config", str(cfg))
    f.write_text(f.read_text().replace("412", "415") + "2026-10-03,tickets_resolved,1,support,support-bot\n")
    out = json.loads(run("import", "metrics", str(f), "--config", str(cfg), "--format", "json"))
    assert (out["rows"], out["added"], out["replaced"], out["metrics"]) == (4, 1, 3, ["tickets_resolved"])
    stored = {(r.day.isoformat(), tuple(sorted(r.tags.items()))): r.value for r in ledger(cfg).business_metrics()}
    assert stored[("2026-10-01", (("feature", "support-bot"), ("team", "support")))] == 415
    assert stored[("2026-10-02", (("team", "support"),))] == D("10.5") and len(stored) == 4


BAD_FILES = [
    ("", "bad.csv:1: empty file"),
    ("\n\n", "bad.csv:1: empty file"),
    ("date,metric,value,team\n", "bad.csv:1: no rows after the header"),
    ("day,metric,value\n2026-10-01,t,1\n", "bad.csv:1: the header must start with date,metric,value"),
    ("date,metric,value,bad name\n2026-10-01,t,1,x\n", "bad.csv:1: column 4: invalid tag name 'bad name'"),
    ("date,metric,value,team,\n2026-10-01,t,1,x,y\n", "bad.csv:1: column 5: invalid tag name ''"),
    ("date,metric,value,model\n2026-10-01,t,1,x\n", "bad.csv:1: column 4: 'model' cannot be a tag column"),
    ("date,metric,value,team,team\n2026-10-01,t,1,x,y\n", "bad.csv:1: column 5: tag column 'team' appears twice"),
    ("date,metric,value,team\n2026-10-01,t,1,a\n2026-10-02,t,2,a\n2026-10-01,t,3,a\n",
     "bad.csv:4: repeats line 2 (same date, metric and tags team=a)"),
    ("date,metric,value\n2026-10-01,t,abc\n", "bad.csv:2: value 'abc' is not a number"),
    ("date,metric,value\n2026-10-01,t,\n", "bad.csv:2: value '' is not a number"),
    ("date,metric,value\n2026-10-01,t,NaN\n", "bad.csv:2: value 'NaN' is not a number"),
    ("date,metric,value\n2026-10-01,t,-3\n", "bad.csv:2: value -3 is negative"),
    ("date,metric,value\n2026-10-01,t,-0\n", "bad.csv:2: value -0 is negative"),
    ("date,metric,value\n2026-10-01,t,0.0000000000001\n", "bad.csv:2: value 0.0000000000001 has more than 12 decimal"),
    ("date,metric,value\n2026-10-01,t,1e30\n", "bad.csv:2: value 1e30 is too large"),
    ("date,metric,value\n2026-13-01,t,1\n", "bad.csv:2: date '2026-13-01' is not a date"),
    ("date,metric,value\n10/01/2026,t,1\n", "bad.csv:2: date '10/01/2026' is not a date"),
    ("date,metric,value\n20261001,t,1\n", "bad.csv:2: date '20261001' is not a date"),
    ("date,metric,value\n2026-10-01,bad metric,1\n", "bad.csv:2: metric 'bad metric' is not a metric name"),
    ("date,metric,value,team\n2026-10-01,t,1\n", "bad.csv:2: 3 fields, but the header has 4"),
    ("date,metric,value,team\n2026-10-01,t,1,\"a,b\"\n", "bad.csv:2: tag team has an invalid value 'a,b'"),
]


@pytest.mark.parametrize(("text", "says"), BAD_FILES, ids=[s.split(": ", 1)[1][:40] for _, s in BAD_FILES])
def test_a_bad_file_is_refused_naming_file_and_line_and_writes_nothing(tmp_path: Path, text: str, says: str) -> None:
    cfg = config(tmp_path)
    # good rows before the bad one: all or nothing
    good = "date,metric,value,team\n2026-09-01,t,1,a\n" if text.startswith("date,metric,value,team\n2026") else ""
    f = write(tmp_path, "bad.csv", text if not good else good + text.split("\n", 1)[1])
    message = refused("import", "metrics", str(f), "--config", str(cfg))
    expected = says if not good else says.replace(":2:", ":3:").replace(":4: repeats line 2", ":5: repeats line 3")
    assert message.startswith(str(tmp_path / expected.split(":", 1)[0]) + ":" + expected.split(":", 1)[1]), message
    assert ledger(cfg).business_metrics() == []


def test_a_missing_file_and_the_exit_status(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert refused("import", "metrics", str(tmp_path / "nope.csv"), "--config", str(cfg)).endswith("nope.csv: no such file")
    bad = write(tmp_path, "bad.csv", "date,metric,value\n2026-10-01,t,-1\n")
    r = subprocess.run([sys.executable, "-m", "tokenops", "import", "metrics", str(bad), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith(f"error: {bad}:2: value -1 is negative") and "Traceback" not in r.stderr


# --- report units ---------------------------------------------------------------------------------------------
def seed_units(cfg: Path) -> None:
    day = datetime(2026, 10, 1, 12, tzinfo=UTC)
    ledger(cfg).append([
        call(day, "1.00", team="support", feature="support-bot"),
        call(day, "0.50", team="support", feature="support-bot"),
        call(day, "9.00", team="search", feature="summary"),  # another scope
        call(day + timedelta(days=1), "3.00", team="support", feature="support-bot"),
        call(day + timedelta(days=1), None, team="support", feature="support-bot"),  # unpriced: counted, not $0
        call(day + timedelta(days=2), "2.00", team="support", feature="support-bot"),
        call(day + timedelta(days=9), "1.00", team="support", feature="support-bot"),
    ])  # fmt: skip
    f = cfg.parent / "tickets.csv"
    f.write_text("date,metric,value,team,feature\n"
                 "2026-10-01,tickets_resolved,300,support,support-bot\n"
                 "2026-10-02,tickets_resolved,400,support,support-bot\n"
                 "2026-10-02,tickets_resolved,50,support,\n"  # no feature tag: not in a feature scope
                 "2026-10-03,tickets_resolved,0,support,support-bot\n"
                 "2026-10-04,tickets_resolved,7,support,support-bot\n"
                 "2026-10-01,tickets_resolved,1000,search,summary\n")  # fmt: skip
    run("import", "metrics", str(f), "--config", str(cfg))


def test_units_per_day_exact_with_trend_and_roi(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    seed_units(cfg)
    out = json.loads(run("report", "units", "--metric", "tickets_resolved", "--scope", "feature=support-bot",
                         "--since", "2026-10-01", "--until", "2026-10-05", "--value-per-unit", "0.01",
                         "--config", str(cfg), "--format", "json"))  # fmt: skip
    rows = {p["period"]: p for p in out["periods"]}
    assert list(rows) == ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]
    assert (rows["2026-10-01"]["cost_usd"], rows["2026-10-01"]["units"]) == ("1.50", "300")
    assert rows["2026-10-01"]["cost_per_unit_usd"] == "0.005"
    assert (rows["2026-10-02"]["cost_per_unit_usd"], rows["2026-10-02"]["unpriced_requests"]) == ("0.0075", 1)
    assert rows["2026-10-03"]["cost_per_unit_usd"] is None and rows["2026-10-03"]["roi"] == "-1.0000"  # no units
    assert (rows["2026-10-04"]["requests"], rows["2026-10-04"]["cost_per_unit_usd"]) == (0, "0.00")
    assert rows["2026-10-01"]["roi"] == "1.0000"  # (0.01 x 300 - 1.50) / 1.50
    assert rows["2026-10-01"]["value_usd"] == "3.00"
    total = out["total"]
    assert (total["cost_usd"], total["units"], total["cost_per_unit_usd"]) == ("6.50", "707", "0.009193776521")
    trend = out["trend"]
    assert (trend["first_period"], trend["last_period"], trend["periods_with_units"]) == ("2026-10-01", "2026-10-04", 3)
    assert (trend["change_usd"], trend["change_pct"]) == ("-0.005", "-100.00")
    # least squares over (0, 0.005), (1, 0.0075), (3, 0): slope = -11/5600 = -0.00196428571428…
    assert trend["slope_usd_per_period"] == "-0.001964285714"
    table = run("report", "units", "--metric", "tickets_resolved", "--scope", "feature=support-bot", "--until",
                "2026-10-05", "--config", str(cfg))  # fmt: skip
    assert "n/a" in table and "cost per unit 2026-10-01 $0.005 -> 2026-10-04 $0.00" in table
    assert "1 calls had no price" in table


def test_units_scope_periods_and_window(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    seed_units(cfg)
    team = json.loads(run("report", "units", "--metric", "tickets_resolved", "--scope", "team=support", "--by", "month",
                          "--config", str(cfg), "--format", "json"))  # fmt: skip
    assert [(p["period"], p["cost_usd"], p["units"]) for p in team["periods"]] == [("2026-10", "7.50", "757")]
    everything = json.loads(run("report", "units", "--metric", "tickets_resolved", "--by", "week", "--config",
                                str(cfg), "--format", "json"))  # fmt: skip
    assert [(p["period"], p["cost_usd"], p["units"]) for p in everything["periods"]] == [
        ("2026-W40", "15.50", "1757"), ("2026-W41", "1.00", "0")]  # fmt: skip
    # a time inside a day takes in the whole day, for the spend and the counts alike
    day = json.loads(run("report", "units", "--metric", "tickets_resolved", "--scope", "feature=support-bot",
                         "--since", "2026-10-02T15:00", "--until", "2026-10-02T16:00", "--config", str(cfg),
                         "--format", "json"))  # fmt: skip
    assert [(p["period"], p["cost_usd"], p["units"]) for p in day["periods"]] == [("2026-10-02", "3.00", "400")]
    assert day["since"] == "2026-10-02T00:00:00+00:00" and day["until"] == "2026-10-03T00:00:00+00:00"
    rows = list(csv.DictReader(io.StringIO(run("report", "units", "--metric", "tickets_resolved", "--config", str(cfg),
                                               "--format", "csv"))))  # fmt: skip
    assert rows[0].keys() == {"period", "requests", "unpriced_requests", "cost_usd", "units", "cost_per_unit_usd"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--metric", "nope"], "the ledger has no metric 'nope' (it has: tickets_resolved)"),
        (["--metric", "tickets_resolved", "--by", "hour"], "--by must be one of day, week, month"),
        (["--metric", "tickets_resolved", "--scope", "model=gpt-4o"], "--scope: 'model' is not a tag"),
        (["--metric", "tickets_resolved", "--scope", "team"], "malformed --scope: 'team' is not key=value"),
        (["--metric", "tickets_resolved", "--value-per-unit", "-1"], "--value-per-unit must not be negative"),
        (["--metric", "tickets_resolved", "--value-per-unit", "abc"], "--value-per-unit"),
        (["--metric", "tickets_resolved", "--tz", "Mars/Base"], "time zone"),
    ],
)
def test_units_bad_arguments(tmp_path: Path, args: list[str], says: str) -> None:
    cfg = config(tmp_path)
    seed_units(cfg)
    assert says in refused("report", "units", *args, "--config", str(cfg))


# --- report chargeback ----------------------------------------------------------------------------------------
def seed_month(cfg: Path) -> None:
    t = datetime(2026, 10, 10, 12, tzinfo=UTC)
    ledger(cfg).append([
        call(t, "10.000000000001", team="search", feature="summary"),
        call(t, "5.333333333333", team="support", feature="bot"),
        call(t, None, team="support", feature="bot"),
        call(t, "3.333333333333", team="platform", feature="gateway"),
        call(t, "2", team="search", feature="shared-gpu"),
        call(t, "0.999999999999", feature="mystery"),  # untagged
        call(datetime(2026, 10, 31, 23, 30, tzinfo=UTC), "100", team="search"),  # November in Berlin
        call(datetime(2026, 9, 30, 23, 30, tzinfo=UTC), "1000", team="search"),  # October in Berlin
    ])  # fmt: skip


def test_chargeback_statements_add_up_to_the_bill(tmp_path: Path) -> None:
    cfg = config(tmp_path, CHARGEBACK)
    seed_month(cfg)
    out = json.loads(run("report", "chargeback", "--month", "2026-10", "--config", str(cfg), "--format", "json"))
    statements = {s["cost_centre"]: s for s in out["statements"]}
    assert list(statements) == ["CC-100 Search", "CC-200 <Support> & Co"]
    assert out["reconciliation"] == {"statements_total_usd": "121.67", "bill_usd": "121.67",
                                     "ledger_total_usd": "121.666666666666", "reconciled": True}  # fmt: skip
    assert sum(D(s["total_usd"]) for s in out["statements"]) == D("121.67")
    assert out["rounding"]["rule"] == "largest_remainder" and out["unpriced_requests"] == 1
    search = statements["CC-100 Search"]
    kinds = [(line["kind"], line["pool"], line["rule"]) for line in search["lines"]]
    assert kinds[0] == ("direct", None, None)
    assert ("shared", "shared team=platform", "proportional") in kinds
    assert ("shared", "shared feature=shared-gpu", "weights CC-100 Search: 3, CC-200 <Support> & Co: 1") in kinds
    gpu = next(line for line in search["lines"] if line["pool"] == "shared feature=shared-gpu")
    assert (gpu["share"], gpu["exact_usd"], gpu["amount_usd"]) == ("0.750000", "1.50", "1.50")
    support = statements["CC-200 <Support> & Co"]
    assert support["unpriced_requests"] == 1 and support["lines"][0]["keys"] == {"team": "support", "feature": "bot",
                                                                                 "model": "gpt-4o"}  # fmt: skip
    pools = {p["name"]: p for p in out["pools"]}
    assert pools["untagged"]["rule"] == "proportional" and pools["untagged"]["exact_usd"] == "0.999999999999"
    # in Berlin the month starts and ends an hour earlier
    berlin = json.loads(run("report", "chargeback", "--month", "2026-10", "--timezone", "Europe/Berlin", "--config",
                            str(cfg), "--format", "json"))  # fmt: skip
    assert berlin["reconciliation"]["ledger_total_usd"] == "1021.666666666666"
    assert berlin["since"] == "2026-10-01T00:00:00+02:00" and berlin["until"] == "2026-11-01T00:00:00+01:00"


def test_chargeback_table_csv_and_html(tmp_path: Path) -> None:
    cfg = config(tmp_path, CHARGEBACK)
    seed_month(cfg)
    table = run("report", "chargeback", "--month", "2026-10", "--config", str(cfg))
    assert "CC-100 Search: statement 2026-10" in table and "sum of statements" in table
    assert "reconciled" in table and "largest remainder" in table and "unpriced: 1" in table
    rows = list(csv.DictReader(io.StringIO(run("report", "chargeback", "--month", "2026-10", "--config", str(cfg),
                                               "--format", "csv"))))  # fmt: skip
    lines = [r for r in rows if r["kind"] not in ("total", "bill")]
    totals = [r for r in rows if r["kind"] == "total"]
    assert sum(D(r["amount_usd"]) for r in lines) == sum(D(r["amount_usd"]) for r in totals) == D("121.67")
    assert rows[-1]["kind"] == "bill" and rows[-1]["amount_usd"] == "121.67" and rows[-1]["exact_usd"] == "121.666666666666"
    page = tmp_path / "statements.html"
    result = runner.invoke(app, ["report", "chargeback", "--month", "2026-10", "--config", str(cfg), "--format",
                                 "html", "-o", str(page)], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "CC-200 &lt;Support&gt; &amp; Co" in text and "<Support>" not in text
    assert text.count("<section>") == 3 and "page-break-after" in text and "http" not in text  # self-contained


def test_chargeback_without_config_and_without_data(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    seed_month(cfg)
    out = json.loads(run("report", "chargeback", "--month", "2026-10", "--config", str(cfg), "--format", "json"))
    assert [(s["cost_centre"], s["total_usd"]) for s in out["statements"]] == [
        ("platform", "3.33"), ("search", "112.00"), ("support", "5.34"), ("Unallocated", "1.00")]  # fmt: skip
    # the exact amounts round down to 121.65: one cent to Unallocated (0.99|9999), one to the tie between support and
    # platform (both .33|33): the larger line
    assert out["reconciliation"]["reconciled"] and out["reconciliation"]["bill_usd"] == "121.67"
    assert out["statements"][-1]["lines"][0]["kind"] == "untagged"
    assert run("report", "chargeback", "--month", "2026-08", "--config", str(cfg)).strip() == (
        "no data for 2026-08 (UTC): the ledger holds no calls in that month")  # fmt: skip
    empty = json.loads(run("report", "chargeback", "--month", "2026-08", "--config", str(cfg), "--format", "json"))
    assert empty["no_data"] and empty["statements"] == [] and empty["reconciliation"]["bill_usd"] == "0.00"
    for bad, says in ((["--month", "2026-13"], "--month"), (["--month", "October"], "--month"),
                      (["--month", "2026-10", "--tz", "Mars/Base"], "time zone"),
                      (["--month", "2026-10", "--format", "pdf"], "--format")):  # fmt: skip
        assert says in refused("report", "chargeback", *bad, "--config", str(cfg))


def test_chargeback_of_30_days_of_demo_traffic_reconciles_to_the_cent(tmp_path: Path) -> None:
    from tokenops.demo.traffic import generate
    from tokenops.pricing.catalog import load_catalog

    cfg = config(tmp_path, CHARGEBACK.replace("{team: platform}", "{team: research}"))
    catalog = load_catalog(data_dir=tmp_path / "no-prices")  # the bundled snapshot, whatever this machine updated
    pairs = list(generate(catalog, end=datetime(2026, 11, 1, tzinfo=UTC), days=30, keys={},
                          price_ids={p: (p,) for p in ("openai", "anthropic", "local")}))  # fmt: skip
    ledger(cfg).append([e for e, _ in pairs], [r for _, r in pairs if r is not None])
    spend = json.loads(run("report", "spend", "--since", "2026-10-01", "--until", "2026-11-01", "--config", str(cfg),
                           "--format", "json"))  # fmt: skip
    for extra in ([], ["--timezone", "UTC"]):
        out = json.loads(run("report", "chargeback", "--month", "2026-10", *extra, "--config", str(cfg), "--format",
                             "json"))  # fmt: skip
        r = out["reconciliation"]
        assert r["reconciled"] and r["ledger_total_usd"] == spend["total_cost_usd"]
        bill = D(spend["total_cost_usd"]).quantize(D("0.01"), rounding="ROUND_HALF_UP")
        assert sum(D(s["total_usd"]) for s in out["statements"]) == bill == D(r["statements_total_usd"])
        lines = [line for s in out["statements"] for line in s["lines"]]
        assert sum(D(line["amount_usd"]) for line in lines) == bill
        assert all(abs(D(line["amount_usd"]) - D(line["exact_usd"])) < D("0.01") for line in lines)
        assert out["unpriced_requests"] == spend["unpriced_requests"] > 0  # the demo's model without a price
        assert {s["cost_centre"] for s in out["statements"]} == {"CC-100 Search", "CC-200 <Support> & Co"}
