"""Server-side tool fees (web searches), audio and image tokens, priced from the usage the provider reports.

Published prices, each read on 2026-12-02 (the rates used are genai-prices' data; each test asserts they are the
published ones):

* Anthropic web search, https://docs.anthropic.com/en/docs/build-with-claude/tool-use/web-search-tool:
  $10 per 1,000 searches, plus the tokens at the model's rates; claude-sonnet-4-5 $3 input / $15 output per 1M
  tokens (https://docs.anthropic.com/en/docs/about-claude/pricing).
* OpenAI web search tool calls, https://platform.openai.com/docs/pricing (Built-in tools): $10.00 per 1,000
  calls (gpt-5 and the other current models), tokens at the model's rates; gpt-5 $1.25 input / $10 output.
* OpenAI file search tool calls, same page (Built-in tools): $2.50 per 1,000 calls, Responses API only (a
  reviewed tool fee shipped with TokenOps: genai-prices has none). Code Interpreter: billed per container
  session by memory and minutes, which no response reports: counted, flagged, not priced.
* Google Gemini 3 grounding with Google Search, https://ai.google.dev/gemini-api/docs/pricing: $14 per 1,000
  search queries; Gemini 2.5 (Flash, Pro): $35 per 1,000 grounded prompts.
* OpenAI gpt-image-1.5, https://platform.openai.com/docs/pricing (Image tokens): text $5 input / $10 output,
  image $8 input / $32 output per 1M tokens.
* Google gemini-2.5-flash-image, https://ai.google.dev/gemini-api/docs/pricing: $0.30 input, $2.50 text output,
  $30 per 1M image output tokens ($0.039 an image of 1,290 tokens).
* OpenAI gpt-audio, https://platform.openai.com/docs/pricing (Audio tokens): text $2.50 input / $10 output,
  audio $32 input / $64 output per 1M tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from harness import GatewayHarness
from tokenops.gateway.providers.gemini import GeminiAdapter, GeminiStreamMeter, usage_from_gemini
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


async def test_responses_file_searches_are_billed_and_code_containers_flagged(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    row = rates(gw, "openai", "gpt-5")
    assert row.file_search_per_k == Decimal("2.50") and "platform.openai.com/docs/pricing" in row.source
    body = {"model": "gpt-5", "input": "what do my files say?", "tools": [{"type": "file_search"}],
            "fake": {"usage": {"input": 1_000, "output": 200, "file_searches": 3}}}  # fmt: skip
    expected = cost(1_000, "1.25") + cost(200, "10") + 3 * Decimal("2.50") / 1000
    r = await gw.client.post("/v1/responses", json=body, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert [i["type"] for i in r.json()["output"]].count("file_search_call") == 3
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == expected
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage.file_searches == 3 and ev.cost_usd == expected and ev.error_code is None
    async with gw.client.stream("POST", "/v1/responses", json={**body, "stream": True}, headers=gw.auth()) as s:
        assert s.status_code == 200
        _ = [chunk async for chunk in s.aiter_text()]
        rid = s.headers["x-tokenops-request-id"]
    ev = gw.event(rid)
    assert ev.usage.file_searches == 3 and ev.cost_usd == expected
    # code interpreter: two runs in each of two containers = two containers; tokens priced, the call flagged
    code = {**body, "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
            "fake": {"usage": {"input": 1_000, "output": 200, "code_containers": 2}}}  # fmt: skip
    r = await gw.client.post("/v1/responses", json=code, headers=gw.auth())
    assert [i["type"] for i in r.json()["output"]].count("code_interpreter_call") == 4
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage.code_containers == 2 and ev.error_code == "tool_fee_unpriced"
    assert ev.cost_usd == cost(1_000, "1.25") + cost(200, "10")


def test_a_row_with_its_own_file_search_rate_keeps_it() -> None:
    from tokenops.pricing.corrections import apply_tool_fees, load_tool_fees
    from tokenops.pricing.model import PriceRow

    (fee,) = load_tool_fees()
    own = PriceRow("openai", "m", NOW, "config", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1),
                   file_search_per_k=Decimal(3))  # fmt: skip
    bare = PriceRow("openai", "m2", NOW, "config", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))
    other = PriceRow("anthropic", "m3", NOW, "config", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))
    kept, given, untouched = apply_tool_fees([own, bare, other], [fee])
    assert kept == own and given.file_search_per_k == Decimal("2.50") and given.id != bare.id
    assert untouched == other and untouched.file_search_per_k is None


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


def test_gemini_2_grounding_is_billed_per_grounded_prompt() -> None:
    """Google, https://ai.google.dev/gemini-api/docs/pricing (Grounding with Google Search), read 2026-12-02:
    Gemini 2.5 Flash and Pro $35 per 1,000 grounded prompts, however many queries each ran; genai-prices the
    same."""
    (row,) = [r for r in genai_price_rows() if r.provider == "google" and r.model == "gemini-2.5-flash"
              and not r.variant and r.in_force(NOW)]  # fmt: skip
    assert row.web_search_per_k == 35
    grounded = {"webSearchQueries": ["weather paris", "weather paris tomorrow", "paris forecast"]}
    payload = {"candidates": [{"content": {"parts": [{"text": "sunny"}]}, "finishReason": "STOP",
                               "groundingMetadata": grounded}],
               "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 10},
               "modelVersion": "gemini-2.5-flash"}  # fmt: skip
    adapter = GeminiAdapter("https://example.test", None, {})
    usage = adapter.usage("gemini.generate", payload)
    assert usage.web_searches == 1  # one grounded prompt, not three queries
    assert price_usage(usage, row).tools == Decimal(35) / 1000
    chunks_only = {**payload, "candidates": [{"finishReason": "STOP",
                                              "groundingMetadata": {"groundingChunks": [{"web": {"uri": "u"}}]}}]}
    assert adapter.usage("gemini.generate", chunks_only).web_searches == 1
    ungrounded = {**payload, "candidates": [{"finishReason": "STOP", "groundingMetadata": {"webSearchQueries": []}}]}
    assert adapter.usage("gemini.generate", ungrounded).web_searches == 0
    # a stream counts once per call, however many events carry the grounding
    meter = GeminiStreamMeter()
    first = {**payload, "candidates": [{"content": {"parts": [{"text": "sun"}]}, "groundingMetadata": grounded}]}
    for event in (first, first, payload):
        meter.relay(SSEEvent(event=None, data=orjson.dumps(event), raw=b""))
    assert meter.final_usage(0) == (usage, False)
    # the same answer from a Gemini 3 model: each query counts
    assert adapter.usage("gemini.generate", {**payload, "modelVersion": "gemini-3-pro-preview"}).web_searches == 3
    # an answer that does not name its model is billed by the rule of the model the call was sent as
    unnamed = {k: v for k, v in payload.items() if k != "modelVersion"}
    assert adapter.usage("gemini.generate", unnamed, "gemini-2.5-flash").web_searches == 1
    assert adapter.usage("gemini.generate", unnamed, "gemini-3-pro-preview").web_searches == 3
    meter = GeminiStreamMeter("gemini-2.5-flash")
    for event in (first, unnamed):
        meter.relay(SSEEvent(event=None, data=orjson.dumps({k: v for k, v in event.items() if k != "modelVersion"}),
                             raw=b""))  # fmt: skip
    assert meter.final_usage(0)[0].web_searches == 1


async def test_image_tokens_are_billed_at_the_image_rates(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(clock=lambda: NOW)
    row = rates(gw, "openai", "gpt-image-1.5")
    assert (row.input_per_mtok, row.output_per_mtok) == (5, 10)  # as published
    assert (row.input_image_per_mtok, row.output_image_per_mtok) == (8, 32)
    usage = {"input": 1_000, "image_in": 700, "output": 5_000, "image_out": 4_160}
    expected = cost(300, "5") + cost(700, "8") + cost(840, "10") + cost(4_160, "32")
    body = {"model": "gpt-image-1.5", "input": "draw a cat", "fake": {"usage": usage}}
    r = await gw.client.post("/v1/responses", json=body, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["input_tokens_details"]["image_tokens"] == 700
    assert r.json()["usage"]["output_tokens_details"]["image_tokens"] == 4_160
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == expected
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert (ev.usage.input_image_tokens, ev.usage.output_image_tokens) == (700, 4_160) and ev.cost_usd == expected
    chat = {"model": "gpt-image-1.5", "messages": [{"role": "user", "content": "draw a cat"}], "fake": {"usage": usage}}
    r = await gw.client.post("/v1/chat/completions", json=chat, headers=gw.auth())
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens_details"]["image_tokens"] == 700
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == expected
    # no image tokens: the field is not in the answer
    plain = {**body, "fake": {"usage": {"input": 1_000, "output": 100}}}
    r = await gw.client.post("/v1/responses", json=plain, headers=gw.auth())
    assert "image_tokens" not in r.json()["usage"]["input_tokens_details"]
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == cost(1_000, "5") + cost(100, "10")


def test_gemini_image_and_audio_modalities_are_priced_at_their_rates() -> None:
    (row,) = [r for r in genai_price_rows() if r.provider == "google" and r.model == "gemini-2.5-flash-image"
              and not r.variant and r.in_force(NOW)]  # fmt: skip
    assert (row.input_per_mtok, row.output_per_mtok, row.output_image_per_mtok) == (Decimal("0.3"), Decimal("2.5"), 30)
    assert row.input_image_per_mtok is None  # image input at the text input rate, as published
    usage = usage_from_gemini({
        "promptTokenCount": 1_400, "candidatesTokenCount": 1_300,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 142}, {"modality": "IMAGE", "tokenCount": 1_258}],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 10}, {"modality": "IMAGE", "tokenCount": 1_290}],
    })  # fmt: skip
    assert usage is not None and (usage.input_image_tokens, usage.output_image_tokens) == (1_258, 1_290)
    assert price_usage(usage, row).total == cost(1_400, "0.3") + cost(10, "2.5") + cost(1_290, "30")
    audio = usage_from_gemini({"promptTokenCount": 500, "candidatesTokenCount": 20,
                               "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 480}]})  # fmt: skip
    assert audio is not None and (audio.input_audio_tokens, audio.input_image_tokens) == (480, 0)


async def test_a_config_row_with_a_search_price_bills_searches(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway("""
models:
  - {name: llama, provider: local, model: llama-3.1-8b}
prices:
  - {provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08", web_search_per_k: "10",
     input_image_per_mtok: "1", effective_from: 2025-01-01}
""", clock=lambda: NOW)  # fmt: skip
    body = {"model": "llama", "input": "news?", "fake": {"usage": {"input": 1_000, "output": 100, "web_searches": 2}}}
    r = await gw.client.post("/v1/responses", json=body, headers=gw.auth())
    assert r.status_code == 200, r.text
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "ok" and ev.usage.web_searches == 2 and ev.error_code is None  # not tool_fee_unpriced
    assert ev.cost_usd == cost(1_000, "0.05") + cost(100, "0.08") + 2 * Decimal(10) / 1000
