"""Unpriced calls are visible in every spend report, on both backends: each row counts its unpriced calls
(``unpriced_requests`` in JSON and CSV; ``priced`` and ``unpriced`` columns in the table), a row whose calls all
lack a price shows ``unpriced`` as its cost in the table instead of ``0.00``, and the footer says how many calls
were unpriced. "Unpriced" is the definition ``tokenops prices list --unpriced`` uses: a NULL cost."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ledger_samples import event
from typer.testing import CliRunner

from services import fresh_database
from tokenops.cli import app
from tokenops.ledger import open_ledger
from tokenops.ledger.base import Ledger
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.postgres import PostgresLedger
from tokenops.ledger.postgres_sql import rollup_can_answer
from tokenops.ledger.reports import ReportQuery, report_from_rows
from tokenops.usage import Usage

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
# team -> the costs of its calls (None: no price known). "mixed" has both, "dark" only unpriced calls, and the
# unpriced calls of "mixed" and "dark" fall in whole hours and in the partial hours at the window's ends.
CALLS: dict[str, list[Decimal | None]] = {
    "mixed": [Decimal("0.000000037500"), None, Decimal("1.5"), None, None],
    "dark": [None, None],
    "lit": [Decimal("0.25")],
}


def events() -> list[SpendEvent]:
    out, i = [], 0
    for team, costs in CALLS.items():
        for cost in costs:
            # 09:00, 09:50, 10:40, …: spread over several hours so that the PostgreSQL rollup holds some of them
            out.append(event(ts=T0 + timedelta(minutes=50 * i), cost_usd=cost, tags={"team": team},
                             model_used="mystery-7b" if cost is None else "gpt-4o-mini",
                             price_row_id=None if cost is None else "p1",
                             usage=Usage(input_tokens=100 + i, output_tokens=10)))  # fmt: skip
            i += 1
    return out


@pytest.fixture(params=["duckdb", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new ledger holding :func:`events`: a DuckDB file, then a PostgreSQL database."""
    if request.param == "duckdb":
        url = f"duckdb:///{tmp_path}/l.duckdb"
        fill(url)
        yield url
    else:
        with fresh_database() as url:
            fill(url)
            yield url


def fill(url: str) -> None:
    ledger = open_ledger(url)
    try:
        assert ledger.append(events()) == sum(len(c) for c in CALLS.values())
    finally:
        ledger.close()


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = open_ledger(ledger_url)
    yield opened
    opened.close()


def expected_row(team: str) -> dict[str, Any]:
    costs = CALLS[team]
    return {"requests": len(costs), "unpriced_requests": sum(c is None for c in costs),
            "cost": sum((c for c in costs if c is not None), Decimal(0))}  # fmt: skip


# --- the ledger's answer ---------------------------------------------------------------------------------
def test_each_row_counts_its_unpriced_calls(ledger: Ledger) -> None:
    report = ledger.spend_report(ReportQuery.build(["team"]))
    rows = {r["team"]: r for r in report.to_json()["rows"]}
    assert set(rows) == set(CALLS)
    for team, row in rows.items():
        want = expected_row(team)
        assert row["requests"] == want["requests"] and row["unpriced_requests"] == want["unpriced_requests"], team
        assert Decimal(row["cost_usd"]) == want["cost"], team
        assert isinstance(row["unpriced_requests"], int) and isinstance(row["cost_usd"], str)
    assert rows["mixed"]["unpriced_requests"] == 3 and rows["dark"]["unpriced_requests"] == 2
    assert rows["lit"]["unpriced_requests"] == 0
    # the contract's keys stay as they were, in their order; unpriced_requests is added after them
    assert list(rows["mixed"]) == ["team", "requests", "input_tokens", "output_tokens", "cost_usd",
                                   "unpriced_requests"]  # fmt: skip
    assert report.to_json()["unpriced_requests"] == 5 == sum(m.requests for m in ledger.unpriced_models())
    assert report.to_json()["total_cost_usd"] == "1.7500000375"


def test_the_table_says_unpriced_where_no_call_had_a_price(ledger: Ledger) -> None:
    report = ledger.spend_report(ReportQuery.build(["team"]))
    table = {r["team"]: r for r in report.table_rows()}
    assert report.table_columns == ["team", "requests", "priced", "unpriced", "input_tokens", "output_tokens",
                                    "cost_usd"]  # fmt: skip
    assert table["dark"]["cost_usd"] == "unpriced" and (table["dark"]["priced"], table["dark"]["unpriced"]) == (0, 2)
    assert table["mixed"]["cost_usd"] == "1.5000000375" and (table["mixed"]["priced"], table["mixed"]["unpriced"]) == (2, 3)
    assert table["lit"]["cost_usd"] == "0.25" and (table["lit"]["priced"], table["lit"]["unpriced"]) == (1, 0)
    assert report.footer().startswith("total: $1.7500000375   priced calls: 3   unpriced calls: 5")
    # a window holding only the unpriced calls of "dark": its total row is unpriced too, not $0.00
    dark = ledger.spend_report(ReportQuery.build([], where={"team": "dark"}))
    assert [r["cost_usd"] for r in dark.table_rows()] == ["unpriced"]
    assert dark.to_json() == {"rows": [{"requests": 2, "input_tokens": 211, "output_tokens": 20, "cost_usd": "0.00",
                                        "unpriced_requests": 2}],
                              "total_cost_usd": "0.00", "unpriced_requests": 2}  # fmt: skip
    assert "priced calls: 0   unpriced calls: 2" in dark.footer()


def test_filters_windows_and_the_rollup_count_the_same_unpriced_calls(ledger: Ledger) -> None:
    """A window that cuts hours in two (PostgreSQL: whole hours from the rollup, the ends from the events) and
    grouping by model and day count each unpriced call once, in its row."""
    since, until = T0 + timedelta(minutes=30), T0 + timedelta(minutes=50 * 7 + 1)  # calls 1..7
    in_window = [e for e in events() if since <= e.ts < until]
    q = ReportQuery.build(["team", "model", "day"], since=since, until=until)
    report = ledger.spend_report(q)
    got = {(r.keys["team"], r.keys["model"]): (r.requests, r.unpriced_requests) for r in report.rows}
    want: dict[tuple[str, str], tuple[int, int]] = {}
    for e in in_window:
        n, u = want.get((e.tags["team"], e.model_used), (0, 0))
        want[(e.tags["team"], e.model_used)] = (n + 1, u + (e.cost_usd is None))
    assert got == want
    assert report.unpriced_requests == sum(e.cost_usd is None for e in in_window) == 5
    if isinstance(ledger, PostgresLedger):  # both of its ways to answer agree
        assert rollup_can_answer(q)
        rollup = ledger._report_from_rollup(q)
        assert rollup is not None and report_from_rows(q, rollup).rows == report.rows
        assert report_from_rows(q, ledger._report_from_events(q)).rows == report.rows


def test_limit_keeps_the_counts_of_the_rows_kept(ledger: Ledger) -> None:
    report = ledger.spend_report(ReportQuery.build(["team"], limit=2))  # biggest cost first: mixed, lit
    assert [r.keys["team"] for r in report.rows] == ["mixed", "lit"]
    assert report.unpriced_requests == 3 and report.to_json()["unpriced_requests"] == 3


# --- the CLI's answer, over the same ledgers ------------------------------------------------------------
def cli(tmp_path: Path, url: str, *args: str) -> str:
    cfg = tmp_path / "tokenops.yaml"
    cfg.write_text(f"ledger: {url}\n")
    result = CliRunner().invoke(app, ["report", "spend", "--config", str(cfg), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_json_csv_and_table(ledger_url: str, tmp_path: Path) -> None:
    out = json.loads(cli(tmp_path, ledger_url, "--by", "team", "--format", "json"))
    assert set(out) == {"rows", "total_cost_usd", "unpriced_requests"}
    assert {r["team"]: (r["requests"], r["unpriced_requests"], r["cost_usd"]) for r in out["rows"]} == {
        "mixed": (5, 3, "1.5000000375"), "lit": (1, 0, "0.25"), "dark": (2, 2, "0.00")}  # fmt: skip
    assert out["unpriced_requests"] == 5 and out["total_cost_usd"] == "1.7500000375"

    rows = list(csv.DictReader(io.StringIO(cli(tmp_path, ledger_url, "--by", "team", "--format", "csv"))))
    assert list(rows[0]) == ["team", "requests", "input_tokens", "output_tokens", "cost_usd", "unpriced_requests"]
    assert {r["team"]: r["unpriced_requests"] for r in rows} == {"mixed": "3", "lit": "0", "dark": "2"}

    table = cli(tmp_path, ledger_url, "--by", "team")  # CliRunner's terminal is 80 columns: nothing is cut short
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in table.splitlines() if line.startswith("│")}  # fmt: skip
    header = next(line for line in table.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["team", "requests", "priced", "unpriced", "input_tokens",
                                                            "output_tokens", "cost_usd"]  # fmt: skip
    assert lines["dark"] == ["2", "0", "2", "211", "20", "unpriced"]
    assert lines["mixed"][:3] == ["5", "2", "3"] and lines["mixed"][-1] == "1.5000000375"
    assert lines["lit"][:3] == ["1", "1", "0"] and lines["lit"][-1] == "0.25"
    assert "total: $1.7500000375   priced calls: 3   unpriced calls: 5 (" in table


def test_cli_table_of_priced_calls_only_says_none_were_unpriced(ledger_url: str, tmp_path: Path) -> None:
    table = cli(tmp_path, ledger_url, "--by", "model", "--where", "team=lit")
    assert "total: $0.25   priced calls: 1   unpriced calls: 0" in table and "prices list" not in table
