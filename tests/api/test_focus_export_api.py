"""``GET /v1/admin/exports/focus``: calls made through the gateway, out as a FOCUS 1.2 file (CSV or Parquet)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq

from harness import GatewayHarness
from tokenops.ledger.events import SpendEvent, new_request_id
from tokenops.services.focus import COLUMNS
from tokenops.usage import Usage

ADMIN = "admin-secret-key-0123"
AUTH = {"authorization": f"Bearer {ADMIN}"}


async def test_calls_through_the_gateway_come_out_as_focus_rows(make_gateway: Callable[..., Any]) -> None:
    h: GatewayHarness = await make_gateway(f"admin_key: {ADMIN}\n", key_tags={"team": "search"})
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o"):
        r = await h.client.post("/v1/chat/completions", headers=h.auth(),
                                json={"model": model, "messages": [{"role": "user", "content": "hello there"}]})
        assert r.status_code == 200, r.text
    h.ledger.append([SpendEvent(request_id=new_request_id(), ts=datetime.now(UTC) - timedelta(minutes=1),
                                source="test", provider="openai", model_requested="mystery-7b", model_used="mystery-7b",
                                usage=Usage(input_tokens=100, output_tokens=10), cost_usd=None)])  # fmt: skip
    r = await h.client.get("/v1/admin/exports/focus", params={"since": "1h"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv") and "tokenops-focus.csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows and list(rows[0]) == list(COLUMNS)
    spend = (await h.client.get("/v1/admin/reports/spend", params={"since": "1h"}, headers=AUTH)).json()
    billed = sum(Decimal(row["BilledCost"]) for row in rows)
    assert billed == Decimal(spend["total_cost_usd"]) == Decimal(r.headers["x-tokenops-billed-cost"]) > 0
    assert r.headers["x-tokenops-unpriced-calls"] == "1" and not [x for x in rows if x["x_Model"] == "mystery-7b"]
    mini = [x for x in rows if x["x_Model"] == "gpt-4o-mini" and x["x_TokenType"] == "input"]
    assert len(mini) == 1 and mini[0]["x_CallCount"] == "2" and mini[0]["SubAccountId"] == h.key_record.id
    assert mini[0]["Tags"] == '{"team":"search"}' and mini[0]["ChargeCategory"] == "Usage"
    r = await h.client.get("/v1/admin/exports/focus", params={"since": "1h", "format": "parquet",
                                                              "granularity": "hour"}, headers=AUTH)  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content)).to_pylist()
    assert sum(x["BilledCost"] for x in table) == billed and len(table) == len(rows)


async def test_the_focus_export_refuses_what_it_cannot_do(make_gateway: Callable[..., Any]) -> None:
    h: GatewayHarness = await make_gateway(f"admin_key: {ADMIN}\n")
    assert (await h.client.get("/v1/admin/exports/focus")).status_code == 401
    r = await h.client.get("/v1/admin/exports/focus", params={"format": "xlsx"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "format"]  # FastAPI's, as elsewhere
    r = await h.client.get("/v1/admin/exports/focus", params={"since": "2026-11-05", "until": "2026-11-04"},
                           headers=AUTH)  # fmt: skip
    assert r.status_code == 400 and "since must be before until" in r.json()["error"]["message"]
    r = await h.client.get("/v1/admin/exports/focus", params={"month": "2026-11", "since": "1d"}, headers=AUTH)
    assert r.status_code == 400 and "month is a whole window" in r.json()["error"]["message"]
    r = await h.client.get("/v1/admin/exports/focus", params={"month": "2026-11"}, headers=AUTH)
    assert r.status_code == 200 and r.headers["x-tokenops-unpriced-calls"] == "0"
    r = await h.client.get("/v1/admin/exports/focus", params={"granularity": "week"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "granularity"]
