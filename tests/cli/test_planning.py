"""Forecasts of the ledger's spend, what-if scenarios, the budget plan, the variance review and the workload
portfolio, end to end through the CLI on 62 days of the demo's traffic (ending now) in a DuckDB ledger."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenops.cli import app
from tokenops.demo.traffic import generate
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.pricing.catalog import load_catalog

NOW = datetime.now(UTC)
LAST_MONTH = (NOW.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
PRICE_DAY = (NOW + timedelta(days=10)).date()


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("planning")
    ledger_path = home / "ledger.duckdb"
    catalog = load_catalog(data_dir=home / "no-prices")  # the bundled snapshot
    pairs = list(generate(catalog, end=NOW, days=62, keys={},
                          price_ids={p: (p,) for p in ("openai", "anthropic", "local")}))  # fmt: skip
    ledger = DuckDBLedger(ledger_path)
    ledger.append([e for e, _ in pairs], [r for _, r in pairs if r is not None])
    ledger.close()
    path = home / "tokenops.yaml"
    path.write_text(f"""
ledger: duckdb:///{ledger_path}
prices:
  # a known price change ten days from now: gpt-4o-mini doubles
  - {{provider: openai, model: gpt-4o-mini, input_per_mtok: "0.30", output_per_mtok: "1.20",
     effective_from: {PRICE_DAY.isoformat()}}}
budgets:
  - {{name: search-monthly, scope: {{team: search}}, amount_usd: 40, period: month}}
  - {{name: background-daily, scope: {{workload: background}}, amount_usd: 2, period: day}}
""")
    return path


def run(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, (res.output, res.exception)
    return res.stdout


def fails(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code != 0
    return str(res.exception)


def test_forecast_of_a_scope_with_interval_suggested_budget_and_known_price_change(cfg: Path) -> None:
    out = json.loads(run("forecast", "--scope", "team=search", "--horizon", "30d", "-c", str(cfg), "--format", "json"))
    assert out["scope"] == {"team": "search"} and out["horizon_days"] == 30 and len(out["forecast"]) == 30
    total, lo, hi = (Decimal(out[k]) for k in ("total_usd", "lo_usd", "hi_usd"))
    assert 0 < lo <= total <= hi
    assert abs(Decimal(out["suggested_budget_usd"]) - total * Decimal("1.25")) <= Decimal("0.01")  # total: rounded
    assert sum(Decimal(d["value"]) for d in out["forecast"]) == pytest.approx(total, abs=Decimal("0.01"))
    assert all(Decimal(d["lo"]) <= Decimal(d["value"]) <= Decimal(d["hi"]) for d in out["forecast"])
    change = [c for c in out["price_changes"] if c["model"] == "gpt-4o-mini"]
    assert change and change[0]["effective_from"] == PRICE_DAY.isoformat() and Decimal(change[0]["ratio"]) > 1
    # the table shows months, the total, the interval and the suggested budget
    text = run("forecast", "--scope", "team=search", "--horizon", "90d", "-c", str(cfg))
    assert "suggested budget with a 25 % buffer" in text and "known price change: openai/gpt-4o-mini" in text


def test_what_if_moving_traffic_to_a_cheaper_model_and_a_price_change(cfg: Path) -> None:
    base = json.loads(run("forecast", "--scope", "team=support", "--horizon", "30d", "-c", str(cfg), "-f", "json"))
    moved = json.loads(run("forecast", "--scope", "team=support", "--horizon", "30d", "--move",
                           "50%:gpt-4o=gpt-4o-mini", "-c", str(cfg), "-f", "json"))  # fmt: skip
    assert moved["scenario"]["move"] == {"share": "0.5000", "from": "gpt-4o", "to": "gpt-4o-mini"}
    assert Decimal(moved["baseline_total_usd"]) == pytest.approx(Decimal(base["total_usd"]), abs=Decimal("0.02"))
    assert Decimal(moved["total_usd"]) < Decimal(base["total_usd"])
    cut = json.loads(run("forecast", "--scope", "team=support", "--horizon", "30d", "--price-change", "-50%",
                         "-c", str(cfg), "-f", "json"))  # fmt: skip
    assert Decimal(cut["total_usd"]) == pytest.approx(Decimal(base["total_usd"]) / 2, rel=Decimal("0.01"))
    assert "no priced calls to o3" in fails("forecast", "--scope", "team=support", "--horizon", "30d", "--move",
                                            "10%:o3=gpt-4o", "-c", str(cfg))  # fmt: skip
    assert "not SHARE%:FROM=TO" in fails("forecast", "--scope", "team=support", "--horizon", "30d", "--move", "x",
                                         "-c", str(cfg))  # fmt: skip
    assert "no data for team=nobody" in fails("forecast", "--scope", "team=nobody", "--horizon", "7d", "-c", str(cfg))
    assert "--horizon" in fails("forecast", "--scope", "team=search", "--horizon", "soon", "-c", str(cfg))


def test_budget_plan_for_next_quarter(cfg: Path) -> None:
    q = (NOW.month - 1) // 3 + 1
    year, nq = (NOW.year + 1, 1) if q == 4 else (NOW.year, q + 1)
    out = json.loads(run("plan", "budget", "--quarter", f"{year}-Q{nq}", "-c", str(cfg), "--format", "json"))
    assert out["lines"] and {"team", "env"} <= set(out["lines"][0])
    for line in out["lines"]:
        parts = sum(Decimal(line[k]) for k in ("spent_usd", "fixed_usd", "variable_usd", "training_reserve_usd",
                                                "buffer_usd"))  # fmt: skip
        assert line["spent_usd"] == "0.00"  # a quarter not begun
        assert parts == Decimal(line["budget_usd"])
        assert Decimal(line["buffer_usd"]) == pytest.approx(
            (Decimal(line["variable_usd"]) + Decimal(line["training_reserve_usd"])) * Decimal("0.25"), abs=Decimal("0.02"))
    assert Decimal(out["total_budget_usd"]) == sum(Decimal(line["budget_usd"]) for line in out["lines"])
    assert any("emergency buffer" in a for a in out["assumptions"])
    text = run("plan", "budget", "--quarter", f"{year}-Q{nq}", "-c", str(cfg))
    assert "assumptions:" in text and "training/fine-tuning reserve" in text
    assert "is over" in fails("plan", "budget", "--quarter", "2020-Q1", "-c", str(cfg))
    assert "not a quarter" in fails("plan", "budget", "--quarter", "2027-Q5", "-c", str(cfg))


def test_variance_review_explains_every_dollar(cfg: Path) -> None:
    out = json.loads(run("report", "variance", "--month", LAST_MONTH, "-c", str(cfg), "--format", "json"))
    assert out["complete"] is True
    spend = json.loads(run("report", "spend", "--since", f"{LAST_MONTH}-01", "--until",
                           (date.fromisoformat(f"{LAST_MONTH}-01") + timedelta(days=32)).replace(day=1).isoformat(),
                           "-c", str(cfg), "--format", "json"))  # fmt: skip
    assert out["total_usd"] == spend["total_cost_usd"]
    budget = next(r for r in out["rows"] if r["budget"] == "search-monthly")
    assert Decimal(budget["budget_usd"]) == 40 and budget["against"] == "budget"
    assert budget["forecast_usd"] == budget["actual_usd"]  # a finished month: nothing left to forecast
    for r in out["rows"]:
        effects = sum(Decimal(r[k]) for k in ("volume_usd", "mix_usd", "tokens_per_call_usd", "price_usd"))
        assert effects == Decimal(r["variance_usd"]), r
    teams = {r["scope"].get("team") for r in out["rows"] if r["budget"] is None}
    assert teams == {"research", "support"}  # search is covered by its budget
    daily = next(r for r in out["rows"] if r["budget"] == "background-daily")
    assert Decimal(daily["budget_usd"]) == 2 * (date.fromisoformat(f"{LAST_MONTH}-01") + timedelta(days=32)).replace(
        day=1).__sub__(date.fromisoformat(f"{LAST_MONTH}-01")).days
    shares = {e["env"]: e for e in out["environments"]}
    assert sum(Decimal(e["share"]) for e in shares.values()) == pytest.approx(Decimal(1), abs=Decimal("0.001"))
    assert shares["prod"]["target"] == ["0.60", "0.70"] and shares["prod"]["status"] in (
        "on target", "below target", "above target")  # fmt: skip
    this_month = json.loads(run("report", "variance", "--month", NOW.strftime("%Y-%m"), "-c", str(cfg), "-f", "json"))
    assert this_month["complete"] is False
    row = next(r for r in this_month["rows"] if r["budget"] == "search-monthly")
    assert Decimal(row["forecast_usd"]) >= Decimal(row["actual_usd"])
    assert "no data for 2020-01" in fails("report", "variance", "--month", "2020-01", "-c", str(cfg))
    assert "not a month" in fails("report", "variance", "--month", "October", "-c", str(cfg))
    assert "Environment allocation" in run("report", "variance", "--month", LAST_MONTH, "-c", str(cfg))


def test_workload_portfolio_with_the_policies_that_apply(cfg: Path) -> None:
    out = json.loads(run("report", "portfolio", "--since", "30d", "-c", str(cfg), "--format", "json"))
    rows = out["rows"]
    assert {r["workload"] for r in rows} >= {"production", "background"}
    assert sum(Decimal(r["share"]) for r in rows) == pytest.approx(Decimal(1), abs=Decimal("0.001"))
    background = [r for r in rows if r["workload"] == "background"]
    assert all("budget background-daily" in r["policies"] for r in background)
    assert all("budget search-monthly (team=search only)" in r["policies"] for r in rows)
    assert all(r["cost_per_call_usd"] is not None for r in rows if r["cost_usd"] != "unpriced")


def test_review_findings_on_variance_and_plans(cfg: Path, tmp_path: Path) -> None:
    """Daily budgets count calendar days in a month with a DST change; custom budgets (naive datetimes included)
    are compared over the part of the month they cover, or left out; a forecast's scope may be any tag; years at
    the calendar's edges are usage errors, not tracebacks."""
    from tokenops.policy.config import BudgetConfig
    from tokenops.services.variance import budget_window, month_window

    start, end = month_window("2026-03", "Europe/Berlin")
    daily = budget_window(BudgetConfig(name="d", amount_usd=Decimal(100), period="day"), start, end, "Europe/Berlin")
    assert daily is not None and daily[0] == Decimal(3100)
    weekly = budget_window(BudgetConfig(name="w", amount_usd=Decimal(70), period="week"), start, end, "Europe/Berlin")
    assert weekly is not None and weekly[0] == Decimal(310)
    text = cfg.read_text() + (
        '  - {name: summer, scope: {team: search}, amount_usd: "500", period: custom, start: 2020-06-01, end: 2020-07-01}\n'
        '  - {name: sprint, scope: {team: support}, amount_usd: "300", period: custom, '
        f'start: "{LAST_MONTH}-11T00:00:00", end: "{NOW:%Y-%m}-01T00:00:00"}}\n')  # fmt: skip
    other = tmp_path / "custom.yaml"
    other.write_text(text)
    out = json.loads(run("report", "variance", "--month", LAST_MONTH, "-c", str(other), "--format", "json"))
    names = {r["budget"] for r in out["rows"]}
    assert "summer" not in names and any("summer" in n and "does not touch" in n for n in out["notes"])
    sprint = next(r for r in out["rows"] if r["budget"] == "sprint")
    assert Decimal(sprint["budget_usd"]) == 300  # all of it falls in the month...
    assert any("sprint" in n and "part of the month" in n for n in out["notes"])  # ...from the 11th on
    spend = json.loads(run("report", "spend", "--by", "team", "--since", f"{LAST_MONTH}-01", "--until",
                           f"{NOW:%Y-%m}-01", "--where", "team=support", "-c", str(cfg), "-f", "json"))  # fmt: skip
    assert Decimal(sprint["actual_usd"]) < Decimal(spend["total_cost_usd"])  # compared over those days only
    env = json.loads(run("forecast", "--scope", "env=prod", "--horizon", "7d", "-c", str(cfg), "-f", "json"))
    assert len(env["forecast"]) == 7 and Decimal(env["total_usd"]) > 0
    assert "not a quarter" in fails("plan", "budget", "--quarter", "0000-Q1", "-c", str(cfg))
    assert "not a quarter" in fails("plan", "budget", "--quarter", "9999-Q4", "-c", str(cfg))
    assert "no data for 0001-01" in fails("report", "variance", "--month", "0001-01", "-c", str(cfg))
