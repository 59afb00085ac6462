"""Server-side tool fees (web searches) and audio tokens, priced from the usage the provider reports.

Published prices, each read on 2026-12-02 (the rates used are genai-prices' data; each test asserts they are the
published ones):

* Anthropic web search, https://docs.anthropic.com/en/docs/build-with-claude/tool-use/web-search-tool:
  $10 per 1,000 searches, plus the tokens at the model's rates; claude-sonnet-4-5 $3 input / $15 output per 1M
  tokens (https://docs.anthropic.com/en/docs/about-claude/pricing).
* OpenAI web search tool calls, https://platform.openai.com/docs/pricing (Built-in tools): $10.00 per 1,000
  calls (gpt-5 and the other current models), tokens at the model's rates; gpt-5 $1.25 input / $10 output.
* Google Gemini 3 grounding with Google Search, https://ai.google.dev/gemini-api/docs/pricing: $14 per 1,000
  search queries.
* OpenAI gpt-audio, https://platform.openai.com/docs/pricing (Audio tokens): text $2.50 input / $10 output,
  audio $32 input / $64 output per 1M tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from harness import GatewayHarness
from tokenops.gateway.providers.gemini import GeminiAdapter, GeminiStreamMeter
from tokenops.gateway.sse import SSEEvent
from tokenops.pricing.genai import genai_price_rows
from tokenops.pricing.model import price_usage

M = Decimal(1_000_000)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def cost(tokens: int, per_mtok: str) -> Decimal:
    return Decimal(tokens) * Decimal(per_mtok) / M


def rates(gw: GatewayHarness, provider: str, model: str) -> Any:
    row = gw.gateway.catalog.lookup((provider,), model, NOW)
    assert row is not None
    return row


async def test_anthropic_web_searches_are_billed_per_search(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    row = rates(gw, "anthropic", "claude-sonnet-4-5")
    assert (row.input_per_mtok, row.output_per_mtok, row.web_search_per_k) == (3, 15, 10)  # as published
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "news?"}],
            "fake": {"usage": {"input": 2_000, "output": 300, "web_searches": 3}}}  # fmt: skip
    expected = cost(2_000, "3") + cost(300, "15") + 3 * Decimal(10) / 1000
    r = await gw.client.post("/v1/messages", json=body, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["server_tool_use"] == {"web_search_requests": 3}
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == expected
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage.web_searches == 3 and ev.cost_usd == expected and ev.error_code is None
    # streamed: the searches come in message_delta's usage
    async with gw.client.stream("POST", "/v1/messages", json={**body, "stream": True}, headers=gw.auth()) as s:
        assert s.status_code == 200
        text = "".join([chunk async for chunk in s.aiter_text()])
        rid = s.headers["x-tokenops-request-id"]
    assert "web_search_requests" in text
    ev = gw.event(rid)
    assert ev.usage.web_searches == 3 and ev.cost_usd == expected


async def test_responses_web_search_calls_are_billed_at_openais_per_call_fee(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    row = rates(gw, "openai", "gpt-5")
    assert (row.input_per_mtok, row.output_per_mtok, row.web_search_per_k) == (Decimal("1.25"), 10, 10)
    body = {"model": "gpt-5", "input": "news?", "tools": [{"type": "web_search"}],
            "fake": {"usage": {"input": 1_000, "output": 200, "web_searches": 2}}}  # fmt: skip
    expected = cost(1_000, "1.25") + cost(200, "10") + 2 * Decimal(10) / 1000
    r = await gw.client.post("/v1/responses", json=body, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert [i["type"] for i in r.json()["output"]].count("web_search_call") == 2
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage.web_searches == 2 and ev.cost_usd == expected and ev.error_code is None
    async with gw.client.stream("POST", "/v1/responses", json={**body, "stream": True}, headers=gw.auth()) as s:
        assert s.status_code == 200
        _ = [chunk async for chunk in s.aiter_text()]
        rid = s.headers["x-tokenops-request-id"]
    ev = gw.event(rid)
    assert ev.usage.web_searches == 2 and ev.cost_usd == expected


async def test_audio_tokens_are_billed_at_the_audio_rates(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    row = rates(gw, "openai", "gpt-audio")
    assert (row.input_per_mtok, row.output_per_mtok) == (Decimal("2.5"), 10)  # as published
    assert (row.input_audio_per_mtok, row.output_audio_per_mtok) == (32, 64)
    body = {"model": "gpt-audio", "messages": [{"role": "user", "content": "say hi"}],
            "fake": {"usage": {"input": 1_000, "audio_in": 600, "output": 500, "audio_out": 400}}}  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    assert r.status_code == 200, r.text
    expected = cost(400, "2.5") + cost(600, "32") + cost(100, "10") + cost(400, "64")
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == expected
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert (ev.usage.input_audio_tokens, ev.usage.output_audio_tokens) == (600, 400) and ev.cost_usd == expected


async def test_searches_on_a_row_without_a_search_price_are_flagged_not_silently_free(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway("""
models:
  - {name: llama, provider: local, model: llama-3.1-8b}
prices:
  - {provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08", effective_from: 2025-01-01}
""", clock=lambda: NOW)  # fmt: skip
    body = {"model": "llama", "input": "news?", "fake": {"usage": {"input": 1_000, "output": 100, "web_searches": 1}}}
    r = await gw.client.post("/v1/responses", json=body, headers=gw.auth())
    assert r.status_code == 200, r.text
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "ok" and ev.usage.web_searches == 1
    assert ev.cost_usd == cost(1_000, "0.05") + cost(100, "0.08")  # the tokens are priced
    assert ev.error_code == "tool_fee_unpriced"  # the search is not, and the event says so


def test_gemini_grounding_queries_are_web_searches() -> None:
    """Google, https://ai.google.dev/gemini-api/docs/pricing (Grounding with Google Search), read 2026-12-02:
    Gemini 3 models $14 per 1,000 search queries; genai-prices has the same for gemini-3-pro-preview."""
    (row,) = [r for r in genai_price_rows() if r.provider == "google" and r.model == "gemini-3-pro-preview"
              and not r.variant and r.in_force(NOW)]  # fmt: skip
    assert row.web_search_per_k == 14
    grounded = {"webSearchQueries": ["weather paris", "weather paris tomorrow"]}
    payload = {"candidates": [{"content": {"parts": [{"text": "sunny"}]}, "finishReason": "STOP",
                               "groundingMetadata": grounded}],
               "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 10}}  # fmt: skip
    usage = GeminiAdapter("https://example.test", None, {}).usage("gemini.generate", payload)
    assert usage.web_searches == 2 and usage.input_tokens == 100
    assert price_usage(usage, row).tools == 2 * Decimal(14) / 1000
    meter = GeminiStreamMeter()
    meter.relay(SSEEvent(event=None, data=orjson.dumps(payload), raw=b""))
    assert meter.final_usage(0) == (usage, False)
