"""Google's Gemini API through the gateway (provider ``kind: gemini``) with the official ``google-genai`` SDK,
through real sockets: generate_content, its stream, count_tokens (free), embed_content (one and batched),
each call's cost checked to the digit against the catalog's Google prices.

Published prices (https://ai.google.dev/gemini-api/docs/pricing, read 2026-12-02; genai-prices 0.2.3 holds the
same): gemini-2.5-flash $0.30 input, $0.03 cached input, $2.50 output (thinking included) per 1M tokens;
gemini-embedding-001 $0.15 input.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from harness import PROVIDER_KEY, SocketStack

M = Decimal(1_000_000)
FLASH = (Decimal("0.30"), Decimal("0.03"), Decimal("2.50"))


def flash_cost(prompt: int, cached: int, output: int) -> Decimal:
    inp, read, out = FLASH
    return ((prompt - cached) * inp + cached * read + output * out) / M


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SocketStack]:
    s = SocketStack(tmp_path_factory.mktemp("gemini"), tags={"team": "gemini"}, gemini=True)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(stack: SocketStack) -> Iterator[genai.Client]:
    with genai.Client(api_key=stack.key, http_options=types.HttpOptions(base_url=stack.url)) as c:
        yield c


def _request_id(response: Any) -> str:
    return str(response.sdk_http_response.headers["x-tokenops-request-id"])


def test_catalog_has_the_published_prices(stack: SocketStack) -> None:
    row = stack.gateway.catalog.lookup(stack.gateway.router.price_ids["google"], "gemini-2.5-flash",
                                       stack.gateway.clock())  # fmt: skip
    assert row is not None and (row.input_per_mtok, row.cache_read_per_mtok, row.output_per_mtok) == FLASH


def test_generate_content_is_priced_with_thinking_as_output(stack: SocketStack, client: genai.Client) -> None:
    r = client.models.generate_content(model="gemini-2.5-flash", contents="Summarise the quarter.",
                                       config=types.GenerateContentConfig(system_instruction="Be brief."))  # fmt: skip
    u = r.usage_metadata
    assert r.text and u is not None and u.thoughts_token_count  # a thinking model
    ev = stack.event(_request_id(r))
    assert ev.route == "gemini.generate" and ev.provider == "google" and ev.tags["team"] == "gemini"
    assert ev.usage.output_tokens == u.candidates_token_count + u.thoughts_token_count
    assert ev.usage.reasoning_tokens == u.thoughts_token_count
    assert ev.cost_usd == flash_cost(u.prompt_token_count or 0, 0, ev.usage.output_tokens)
    assert Decimal(r.sdk_http_response.headers["x-tokenops-cost-usd"]) == ev.cost_usd  # type: ignore[union-attr]


def test_stream_is_metered_from_its_last_event(stack: SocketStack, client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Stream a plan."))
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    u = last.usage_metadata
    assert u is not None
    ev = stack.event(_request_id(chunks[0]))
    assert ev.stream and not ev.usage_estimated
    assert ev.cost_usd == flash_cost(u.prompt_token_count or 0, 0, (u.candidates_token_count or 0)
                                     + (u.thoughts_token_count or 0))  # fmt: skip


def test_cached_content_and_search_tool_prompt_are_billed(stack: SocketStack) -> None:
    """cachedContentTokenCount at the cache rate; toolUsePromptTokenCount (search results fed back) as input."""
    body = {"contents": [{"role": "user", "parts": [{"text": "news?"}]}], "tools": [{"googleSearch": {}}],
            "fake": {"usage": {"input": 5_000, "cached": 4_000, "output": 100, "reasoning": 40}}}  # fmt: skip
    r = httpx.post(f"{stack.url}/v1beta/models/gemini-2.5-flash:generateContent", json=body,
                   headers={"x-goog-api-key": stack.key})  # fmt: skip
    assert r.status_code == 200, r.text
    u = r.json()["usageMetadata"]
    assert u["cachedContentTokenCount"] == 4_000 and u["toolUsePromptTokenCount"] == 50
    ev = stack.event(r.headers["x-tokenops-request-id"])
    assert (ev.usage.input_tokens, ev.usage.cache_read_tokens, ev.usage.output_tokens) == (5_050, 4_000, 100)
    assert ev.cost_usd == flash_cost(5_050, 4_000, 100)


def test_count_tokens_is_free(stack: SocketStack, client: genai.Client) -> None:
    stack.drain()
    before = stack.gateway.ledger.count_events()
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents="How many tokens is this?")
    assert counted.total_tokens and counted.total_tokens > 0
    stack.drain()
    assert stack.gateway.ledger.count_events() == before


def test_embeddings_one_and_batched_are_estimated_and_flagged(stack: SocketStack, client: genai.Client) -> None:
    one = client.models.embed_content(model="gemini-embedding-001", contents="embed me")
    many = client.models.embed_content(model="gemini-embedding-001", contents=["first text", "second text"])
    assert one.embeddings and len(one.embeddings) == 1 and many.embeddings and len(many.embeddings) == 2
    direct = httpx.post(f"{stack.url}/v1beta/models/gemini-embedding-001:embedContent",
                        json={"content": {"parts": [{"text": "one text"}]}}, headers={"x-goog-api-key": stack.key})
    assert direct.status_code == 200 and direct.json()["embedding"]["values"]
    ids = [_request_id(one), _request_id(many), direct.headers["x-tokenops-request-id"]]
    events = [stack.event(i) for i in ids]
    # google-genai 3.x sends every embed_content as batchEmbedContents
    assert [e.route for e in events] == ["gemini.batch_embed", "gemini.batch_embed", "gemini.embed"]
    assert events[1].usage.input_tokens > events[0].usage.input_tokens
    for ev in events:
        assert ev.usage.input_tokens > 0 and ev.usage.output_tokens == 0
        assert ev.usage_estimated and ev.error_code == "usage_missing"  # Gemini embeddings report no usage
        assert ev.cost_usd == ev.usage.input_tokens * Decimal("0.15") / M


def test_key_in_the_query_string_is_used_and_never_sent_on(stack: SocketStack) -> None:
    r = httpx.post(f"{stack.url}/v1beta/models/gemini-2.5-flash:generateContent?key={stack.key}",
                   json={"contents": [{"parts": [{"text": "hi"}]}]})  # fmt: skip
    assert r.status_code == 200
    fake = stack.fake.app.state.received[-1]  # type: ignore[attr-defined]
    assert stack.key not in fake["query"] and stack.key not in str(fake["headers"])
    assert fake["headers"]["x-goog-api-key"] == PROVIDER_KEY and fake["path"].startswith("/v1beta/")


def test_errors_are_in_googles_shape(stack: SocketStack, client: genai.Client) -> None:
    r = httpx.post(f"{stack.url}/v1beta/models/gemini-2.5-flash:generateContent", content=b"{broken",
                   headers={"x-goog-api-key": stack.key})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = httpx.post(f"{stack.url}/v1beta/models/gemini-2.5-flash:generateContent", json={"contents": []},
                   headers={"x-goog-api-key": stack.key})  # fmt: skip
    assert r.status_code == 400 and "contents" in r.json()["error"]["message"]
    r = httpx.post(f"{stack.url}/v1beta/models/gemini-2.5-flash:generateContent", json={"contents": [{"parts": []}]},
                   headers={"x-goog-api-key": "tok-wrong"})  # fmt: skip
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    r = httpx.post(f"{stack.url}/v1beta/models/gemini-2.5-flash:nonsense", json={}, headers={"x-goog-api-key": stack.key})
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    with genai.Client(api_key="tok-nope", http_options=types.HttpOptions(base_url=stack.url)) as bad, \
            pytest.raises(errors.ClientError) as caught:  # fmt: skip
        bad.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert caught.value.code == 401


def test_an_unknown_model_is_served_and_recorded_unpriced(stack: SocketStack) -> None:
    r = httpx.post(f"{stack.url}/v1beta/models/gemini-unheard-of:generateContent",
                   json={"contents": [{"parts": [{"text": "hi"}]}]}, headers={"x-goog-api-key": stack.key})  # fmt: skip
    assert r.status_code == 200 and r.headers["x-tokenops-cost-usd"] == "unpriced"
    ev = stack.event(r.headers["x-tokenops-request-id"])
    assert ev.cost_usd is None and ev.usage.input_tokens > 0


def test_a_stream_cut_before_its_last_event_is_estimated(stack: SocketStack) -> None:
    with httpx.stream("POST", f"{stack.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                      json={"contents": [{"parts": [{"text": "cut"}]}], "fake": {"disconnect_after": 2}},
                      headers={"x-goog-api-key": stack.key}, timeout=10) as r:  # fmt: skip
        text = r.read().decode()
        request_id = r.headers["x-tokenops-request-id"]
    assert '"error"' in text
    ev = stack.event(request_id)
    assert ev.status == "error" and ev.usage_estimated


def test_models_list_and_get_in_googles_shape(stack: SocketStack, client: genai.Client) -> None:
    names = [m.name for m in client.models.list()]
    assert "models/gemini-2.5-flash" in names and not any("gpt-4o" in (n or "") for n in names)
    paged = [m.name for m in client.models.list(config={"page_size": 2})]  # the SDK follows nextPageToken
    assert paged == names and len(names) > 2
    for size, expect in (("0", min(50, len(names))), ("5000", len(names))):  # 0: the default; more: the most
        r = httpx.get(f"{stack.url}/v1beta/models?pageSize={size}", headers={"x-goog-api-key": stack.key})
        assert len(r.json()["models"]) == expect
    r = httpx.get(f"{stack.url}/v1beta/models?pageToken=zzz", headers={"x-goog-api-key": stack.key})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    m = client.models.get(model="gemini-2.5-flash")
    assert m.name == "models/gemini-2.5-flash" and "generateContent" in (m.supported_actions or [])
    r = httpx.get(f"{stack.url}/v1beta/models/gpt-4o-mini", headers={"x-goog-api-key": stack.key})
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


class Plan(BaseModel):
    title: str
    steps: list[str]
    budget_usd: float


def test_structured_output_in_both_formats(stack: SocketStack, client: genai.Client) -> None:
    """A JSON schema asked for in Gemini's own format (``response_schema``) or through the OpenAI SDK's ``parse``
    (``response_format``, translated to ``generationConfig``): the answer validates against it, priced as text."""
    r = client.models.generate_content(model="gemini-2.5-flash", contents="Plan the quarter.",
                                       config=types.GenerateContentConfig(response_mime_type="application/json",
                                                                          response_schema=Plan))  # fmt: skip
    assert isinstance(r.parsed, Plan) and r.parsed.steps
    ev = stack.event(_request_id(r))
    assert ev.cost_usd == flash_cost(ev.usage.input_tokens, 0, ev.usage.output_tokens) and ev.usage.output_tokens > 0
    oai = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0)
    done = oai.chat.completions.parse(model="gemini-2.5-flash", response_format=Plan,
                                      messages=[{"role": "user", "content": "Plan the quarter."}])  # fmt: skip
    assert isinstance(done.choices[0].message.parsed, Plan)
