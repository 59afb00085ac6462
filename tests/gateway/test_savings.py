"""``tokenops report savings``: routed-down calls, fallbacks and downgrades, each against the same usage priced at
the model the client asked for, by kind and by team.

Prices (https://platform.openai.com/docs/pricing, read 2026-12-02): gpt-5 $1.25 / $10, gpt-4o $2.50 / $10,
gpt-4o-mini $0.15 / $0.60, gpt-4.1 $2 / $8 per 1M input / output tokens.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from typer.testing import CliRunner

from harness import GatewayHarness
from tokenops.cli import app
from tokenops.services.savings import savings_report

M = Decimal(1_000_000)
CONFIG = """routing:
  tiers: {small: [gpt-4o-mini], frontier: [gpt-5]}
  tasks: {classify: small}
  fallbacks: {gpt-4o: [gpt-4.1]}
  backoff: 0
"""


def cost(usage: Any, inp: str, out: str) -> Decimal:
    return (Decimal(usage.input_tokens) * Decimal(inp) + Decimal(usage.output_tokens) * Decimal(out)) / M


async def test_savings_by_kind_and_team(make_gateway: Any, tmp_path: Any) -> None:
    gw: GatewayHarness = await make_gateway(CONFIG, key_tags={"team": "search"})
    body = {"messages": [{"role": "user", "content": "Is this spam?"}], "max_tokens": 40}
    routed = await gw.client.post("/v1/chat/completions", json={**body, "model": "gpt-5"},
                                  headers=gw.auth(**{"x-tokenops-tags": "task=classify"}))  # fmt: skip
    fell = await gw.client.post("/v1/chat/completions", json={**body, "model": "gpt-4o",
                                "fake": {"status": 503, "status_models": "gpt-4o"}}, headers=gw.auth())  # fmt: skip
    plain = await gw.client.post("/v1/chat/completions", json={**body, "model": "gpt-4o"}, headers=gw.auth())
    assert routed.status_code == fell.status_code == plain.status_code == 200
    r_ev, f_ev = gw.event(routed.headers["x-tokenops-request-id"]), gw.event(fell.headers["x-tokenops-request-id"])

    report = savings_report(gw.ledger, gw.gateway.config, gw.gateway.catalog, by=["kind"])
    rows = {r.group["kind"]: r for r in report.rows}
    assert set(rows) == {"routed", "fallback"}  # the plain call changed nothing: not in the report
    assert rows["routed"].calls == 1 and rows["routed"].paid == r_ev.cost_usd == cost(r_ev.usage, "0.15", "0.60")
    assert rows["routed"].counterfactual == cost(r_ev.usage, "1.25", "10")  # the same usage on gpt-5
    assert rows["fallback"].paid == cost(f_ev.usage, "2", "8")  # gpt-4.1 answered ...
    assert rows["fallback"].counterfactual == cost(f_ev.usage, "2.50", "10")  # ... for gpt-4o
    total = report.total
    assert total.saved == rows["routed"].saved + rows["fallback"].saved > 0 and total.calls == 2

    by_team = savings_report(gw.ledger, gw.gateway.config, gw.gateway.catalog, by=["team", "kind"],
                             where={"team": "search"})  # fmt: skip
    assert {tuple(r.group.values()) for r in by_team.rows} == {("search", "routed"), ("search", "fallback")}
    assert savings_report(gw.ledger, gw.gateway.config, gw.gateway.catalog, by=["kind"], where={"team": "x"}).rows == []

    await gw.gateway.close()  # the ledger file is the CLI's now
    result = CliRunner().invoke(app, ["report", "savings", "--by", "kind", "-f", "json", "-c",
                                      str(tmp_path / "tokenops.yaml")])  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.output)
    assert Decimal(payload["total"]["saved_usd"]) == total.saved and payload["total"]["calls"] == 2
