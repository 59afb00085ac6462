"""Calls priced by the service tier the provider says served them, and by the time of day (DeepSeek off-peak).

Published prices, USD per 1M tokens, each read on 2026-12-02:

* OpenAI, https://platform.openai.com/docs/pricing (Flex and Priority processing tables): gpt-5 standard $1.25
  input / $0.125 cached input / $10 output; Flex $0.625 / $0.0625 / $5; Priority $2.50 / $0.25 / $20.
* Anthropic, https://docs.anthropic.com/en/docs/about-claude/pricing: claude-sonnet-4-5 $3 input / $15 output.
  Priority Tier is sold by commitment, with no list price: a call Anthropic says Priority Tier served is billed
  at the standard rate here, and flagged.
* DeepSeek, https://api-docs.deepseek.com/quick_start/pricing: until 2025-09-05 16:00 UTC deepseek-chat cost
  $0.27 input (cache miss) / $0.07 cache hit / $1.10 output in UTC 00:30-16:30, and the "discount price"
  $0.135 / $0.035 / $0.55 in UTC 16:30-00:30; from 2025-09-29 $0.28 / $0.028 / $0.42 all day.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from harness import FAKE_URL, PROVIDER_KEY, GatewayHarness, create_key, sql, write_config
from tokenops.app import create_app
from tokenops.config import parse_config

M = Decimal(1_000_000)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # OpenAI's tier rows are in genai-prices' data from 2026-10-12


def cost(tokens: int, per_mtok: str) -> Decimal:
    return Decimal(tokens) * Decimal(per_mtok) / M


def chat(model: str, tier: str | None = None, **usage: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}],
                            "fake": {"usage": usage or {"input": 10_000, "cached": 2_000, "output": 1_000}}}  # fmt: skip
    if tier is not None:
        body["service_tier"] = tier
    return body


GPT5 = {  # (input, cached input, output) per tier
    "standard": ("1.25", "0.125", "10"),
    "flex": ("0.625", "0.0625", "5"),
    "priority": ("2.50", "0.25", "20"),
}


def gpt5_cost(tier: str) -> Decimal:
    inp, cached, out = GPT5[tier]
    return cost(8_000, inp) + cost(2_000, cached) + cost(1_000, out)


async def test_flex_and_priority_calls_are_billed_at_their_tier_price(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    for requested, expected_tier in ((None, "standard"), ("flex", "flex"), ("priority", "priority")):
        r = await gw.client.post("/v1/chat/completions", json=chat("gpt-5", requested), headers=gw.auth())
        assert r.status_code == 200, r.text
        assert r.json()["service_tier"] == ("default" if requested is None else requested)
        assert Decimal(r.headers["x-tokenops-cost-usd"]) == gpt5_cost(expected_tier), requested
        ev = gw.event(r.headers["x-tokenops-request-id"])
        assert ev.error_code is None and ev.status == "ok"
        row = gw.gateway.catalog.get(ev.price_row_id or "")
        assert row is not None and row.variant == ("" if expected_tier == "standard" else expected_tier)
    # the ledger keeps each row used, its tier with it: every cost can be explained from the ledger alone
    gw.flush()
    variants = {v for (v,) in sql(gw.ledger, "SELECT variant FROM price_rows WHERE model = 'gpt-5'")}
    assert variants == {"", "flex", "priority"}


async def test_a_streamed_flex_call_is_billed_at_the_flex_price(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    body = {**chat("gpt-5", "flex"), "stream": True}
    async with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=gw.auth()) as r:
        assert r.status_code == 200
        text = "".join([chunk async for chunk in r.aiter_text()])
    assert '"service_tier":"flex"' in text.replace(" ", "")
    (ev,) = [e for e in gw.gateway.meter.recent.values() if e.model_used.startswith("gpt-5")]
    assert ev.cost_usd == gpt5_cost("flex") and ev.error_code is None


async def test_a_responses_call_reports_its_tier_and_an_unpriced_tier_is_standard_and_flagged(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    base = {"model": "gpt-5", "input": "hi", "fake": {"usage": {"input": 10_000, "cached": 2_000, "output": 1_000}}}
    r = await gw.client.post("/v1/responses", json={**base, "service_tier": "priority"}, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == gpt5_cost("priority")
    # "scale" (OpenAI's Scale Tier, bought in units) has no price row: billed at standard, and the event says so
    r = await gw.client.post("/v1/responses", json={**base, "service_tier": "scale"}, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert r.json()["service_tier"] == "scale"
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == gpt5_cost("standard")
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert (ev.status, ev.error_code, ev.usage_estimated) == ("ok", "service_tier_unpriced", False)
    assert gw.gateway.catalog.get(ev.price_row_id or "").variant == ""  # type: ignore[union-attr]


async def test_anthropic_priority_tier_is_billed_at_standard_and_flagged(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
            "fake": {"usage": {"input": 10_000, "output": 1_000}}}  # fmt: skip
    expected = cost(10_000, "3") + cost(1_000, "15")
    standard = await gw.client.post("/v1/messages", json={**body, "service_tier": "standard_only"},
                                    headers={"x-api-key": gw.key})  # fmt: skip
    assert standard.json()["usage"]["service_tier"] == "standard"
    assert Decimal(standard.headers["x-tokenops-cost-usd"]) == expected
    assert gw.event(standard.headers["x-tokenops-request-id"]).error_code is None
    priority = await gw.client.post("/v1/messages", json={**body, "service_tier": "auto"}, headers={"x-api-key": gw.key})
    assert priority.json()["usage"]["service_tier"] == "priority"
    assert Decimal(priority.headers["x-tokenops-cost-usd"]) == expected
    assert gw.event(priority.headers["x-tokenops-request-id"]).error_code == "service_tier_unpriced"
    # streamed: the tier comes in message_start's usage
    async with gw.client.stream("POST", "/v1/messages", json={**body, "service_tier": "auto", "stream": True},
                                headers={"x-api-key": gw.key}) as r:  # fmt: skip
        rid = r.headers["x-tokenops-request-id"]
        _ = [chunk async for chunk in r.aiter_bytes()]
    ev = gw.event(rid)
    assert ev.cost_usd == expected and ev.error_code == "service_tier_unpriced"


async def deepseek_gateway(tmp_path: Path, fake_app: Any, at: datetime) -> GatewayHarness:
    """A gateway whose clock says ``at``, with a provider named ``deepseek`` (priced by the catalog's DeepSeek rows)."""
    write_config(tmp_path)
    path = tmp_path / "tokenops.yaml"
    text = path.read_text().replace(
        "providers:\n", f'providers:\n  deepseek: {{base_url: "{FAKE_URL}/v1", kind: openai, api_key: {PROVIDER_KEY}}}\n', 1
    )
    path.write_text(text)
    gateway = create_app(parse_config(text, file=str(path)), transport=httpx.ASGITransport(app=fake_app),
                         clock=lambda: at)  # fmt: skip
    record, key = create_key(gateway.ledger)
    await gateway.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway.test")
    return GatewayHarness(gateway, client, key, record)


async def test_deepseek_is_priced_by_the_time_of_day(tmp_path: Path, fake_app: Any) -> None:
    usage = {"input": 100_000, "cached": 40_000, "output": 10_000}
    expected = {
        datetime(2025, 6, 2, 10, 0, tzinfo=UTC): cost(60_000, "0.27") + cost(40_000, "0.07") + cost(10_000, "1.10"),
        datetime(2025, 6, 2, 17, 0, tzinfo=UTC): cost(60_000, "0.135") + cost(40_000, "0.035") + cost(10_000, "0.55"),
        # the discount ended on 2025-09-05 16:00 UTC; V3.2-Exp's price from 2025-09-29 holds at any hour
        datetime(2025, 10, 15, 17, 0, tzinfo=UTC): cost(60_000, "0.28") + cost(40_000, "0.028") + cost(10_000, "0.42"),
    }
    for i, (at, price) in enumerate(expected.items()):
        where = tmp_path / str(i)
        where.mkdir()
        gw = await deepseek_gateway(where, fake_app, at)
        try:
            r = await gw.client.post("/v1/chat/completions", json=chat("deepseek/deepseek-chat", **usage),
                                     headers=gw.auth())  # fmt: skip
            assert r.status_code == 200, r.text
            assert Decimal(r.headers["x-tokenops-cost-usd"]) == price, at
            row = gw.gateway.catalog.get(gw.event(r.headers["x-tokenops-request-id"]).price_row_id or "")
            assert row is not None and row.provider == "deepseek"
            gw.flush()
            (hours,) = sql(gw.ledger, "SELECT hours FROM price_rows WHERE id = ?", [row.id])
            assert hours[0] == ({10: "00:30-16:30", 17: "16:30-00:30"}.get(at.hour) if at.year == 2025 and at.month == 6
                                else None)  # fmt: skip
        finally:
            await gw.client.aclose()
            await gw.gateway.close()
