"""The admin API's analytics: recorded anomalies, a scope's forecast, the variance review and chargeback, with
bad input answered 400, never 500."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from harness import GatewayHarness
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.usage import Usage

ADMIN = "admin-secret-key-0123"
AUTH = {"authorization": f"Bearer {ADMIN}"}


def call(team: str, days_ago: int, cost: str) -> SpendEvent:
    return SpendEvent(request_id=new_request_id(), ts=datetime.now(UTC) - timedelta(days=days_ago, hours=1),
                      source="test", provider="openai", model_requested="gpt-4o-mini", model_used="gpt-4o-mini",
                      usage=Usage(input_tokens=1000, output_tokens=100), cost_usd=Decimal(cost),
                      tags={"team": team, "env": "prod"})  # fmt: skip


async def test_analytics_endpoints(make_gateway: Callable[..., Any]) -> None:
    h: GatewayHarness = await make_gateway(f"admin_key: {ADMIN}\n")
    h.ledger.append([call(team, d, "0.25" if d % 7 else "0.10") for d in range(1, 70) for team in ("a", "b")])
    f = await h.client.get("/v1/admin/reports/forecast", params={"scope": "team=a", "horizon": "14d"}, headers=AUTH)
    assert f.status_code == 200, f.text
    body = f.json()
    assert len(body["forecast"]) == 14 and Decimal(body["lo_usd"]) <= Decimal(body["total_usd"]) <= Decimal(body["hi_usd"])
    assert Decimal(body["suggested_budget_usd"]) > Decimal(body["total_usd"])
    last_month = (datetime.now(UTC).replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    v = await h.client.get("/v1/admin/reports/variance", params={"month": last_month}, headers=AUTH)
    assert v.status_code == 200, v.text
    assert {r["scope"]["team"] for r in v.json()["rows"]} == {"a", "b"}
    c = await h.client.get("/v1/admin/reports/chargeback", params={"month": last_month}, headers=AUTH)
    assert c.status_code == 200, c.text
    a = await h.client.get("/v1/admin/reports/anomalies", params={"since": "7d"}, headers=AUTH)
    assert a.status_code == 200 and a.json() == {"anomalies": [], "count": 0}
    for path, params in (("forecast", {"horizon": "forever"}), ("forecast", {"scope": "team=nobody"}),
                         ("variance", {"month": "9999-12"}), ("variance", {"month": "2026-13"}),
                         ("chargeback", {"month": "x"}), ("anomalies", {"signal": "nope"}),
                         ("anomalies", {"scope": "bad scope!"})):  # fmt: skip
        r = await h.client.get(f"/v1/admin/reports/{path}", params=params, headers=AUTH)
        assert r.status_code == 400, (path, params, r.text)
    assert (await h.client.get("/v1/admin/reports/forecast")).status_code == 401
