"""The admin API's spend report counts each row's unpriced calls (``unpriced_requests``), as the CLI's JSON does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from harness import GatewayHarness
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.usage import Usage

ADMIN = "admin-secret-key-0123"


def call(team: str, cost: Decimal | None, minutes: int) -> SpendEvent:
    model = "gpt-4o-mini" if cost is not None else "mystery-7b"
    return SpendEvent(request_id=new_request_id(), ts=datetime.now(UTC) - timedelta(minutes=minutes), source="test",
                      provider="openai", model_requested=model, model_used=model,
                      usage=Usage(input_tokens=100, output_tokens=10), cost_usd=cost, tags={"team": team})  # fmt: skip


async def test_spend_report_rows_count_unpriced_calls(make_gateway: Callable[..., Any]) -> None:
    h: GatewayHarness = await make_gateway(f"admin_key: {ADMIN}\n")
    h.ledger.append([call("mixed", Decimal("0.5"), 1), call("mixed", None, 2), call("mixed", None, 3),
                     call("dark", None, 4), call("lit", Decimal("0.125"), 5)])  # fmt: skip
    r = await h.client.get("/v1/admin/reports/spend", params={"by": "team"},
                           headers={"authorization": f"Bearer {ADMIN}"})  # fmt: skip
    assert r.status_code == 200, r.text
    report = r.json()
    assert set(report) == {"rows", "total_cost_usd", "unpriced_requests"}
    rows = {row["team"]: row for row in report["rows"]}
    assert {t: (row["requests"], row["unpriced_requests"], row["cost_usd"]) for t, row in rows.items()} == {
        "mixed": (3, 2, "0.50"), "lit": (1, 0, "0.125"), "dark": (1, 1, "0.00")}  # fmt: skip
    assert list(rows["dark"]) == ["team", "requests", "input_tokens", "output_tokens", "cost_usd", "unpriced_requests"]
    assert report["unpriced_requests"] == 3 and report["total_cost_usd"] == "0.625"
