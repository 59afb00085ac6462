"""Every analysis reads the ledger through its read interface: on the same 50 days of the demo's traffic, DuckDB and
PostgreSQL give the same variance review, forecast, budget plan, chargeback, portfolio and anomaly scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services import fresh_database
from tokenops.config import AnomaliesConfig, Config
from tokenops.demo.traffic import generate
from tokenops.ledger.base import Ledger
from tokenops.ledger.duckdb import DuckDBLedger
from tokenops.ledger.postgres import PostgresLedger
from tokenops.pricing.catalog import load_catalog
from tokenops.services import anomalies, planning, portfolio, variance
from tokenops.services.chargeback import chargeback_report

END = datetime(2026, 11, 20, 12, tzinfo=UTC)


def analyses(ledger: Ledger, catalog: Any) -> dict[str, Any]:
    cfg = Config()
    return {
        "variance": variance.variance(ledger, cfg, "2026-10", now=END).to_json(),
        "variance_now": variance.variance(ledger, cfg, "2026-11", now=END).to_json(),
        "forecast": planning.forecast_scope(ledger, cfg, catalog, {"team": "search"}, 14, now=END).to_json(),
        "plan": planning.plan_budget(ledger, cfg, "2027-Q1", now=END).to_json(),
        "chargeback": chargeback_report(ledger, cfg, "2026-10").to_json(),
        "portfolio": [r.to_json() for r in portfolio.portfolio(ledger, cfg, END - timedelta(days=30), END)],
        "anomalies": anomalies.scan(ledger, AnomaliesConfig(), END - timedelta(days=12), END, {"team": "research"},
                                    bucket=3600, now=END),  # fmt: skip
    }


def test_duckdb_and_postgresql_answer_alike(tmp_path: Path) -> None:
    catalog = load_catalog(data_dir=tmp_path / "no-prices")
    pairs = list(generate(catalog, end=END, days=50, keys={},
                          price_ids={p: (p,) for p in ("openai", "anthropic", "local")}))  # fmt: skip
    events, rows = [e for e, _ in pairs], [r for _, r in pairs if r is not None]
    duck = DuckDBLedger(tmp_path / "l.duckdb")
    duck.append(events, rows)
    with fresh_database() as url:
        pg = PostgresLedger(url)
        try:
            pg.append(events, rows)
            a, b = analyses(duck, catalog), analyses(pg, catalog)
        finally:
            pg.close()
    for name in a:
        assert a[name] == b[name], name
    assert a["anomalies"], "the runaway evaluation day is found"
    assert any(x["scope"].get("feature") == "eval-runs" or x["scope"] == {"team": "research"} for x in a["anomalies"])


