"""The exact response cache: a deterministic call answered a second time without the provider, recorded at no
cost with the cost it avoided; sampling calls not cached unless asked; one key's (or team's) answers never
served to another unless the config shares the scope; streams replayed; a store that is down leaves calls
uncached; end to end through the official openai SDK on real sockets. On the PostgreSQL + Redis test stack the
store is Redis (``store: auto``), shared by the gateways.

Prices: gpt-4o-mini $0.15 / $0.60 per 1M input / output tokens (https://platform.openai.com/docs/pricing, read
2026-12-02).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import openai

from harness import FAKE_URL, PROVIDER_KEY, GatewayHarness, SocketStack, create_key, free_port

EXACT = "cache: {mode: exact, ttl: 600}\n"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 30, "temperature": 0}  # fmt: skip
M = Decimal(1_000_000)


def calls_to_provider(fake_app: Any) -> int:
    return sum(1 for r in fake_app.state.received if r["path"] == "/v1/chat/completions")


async def test_a_deterministic_call_is_answered_again_without_the_provider(make_gateway: Any, fake_app: Any) -> None:
    gw: GatewayHarness = await make_gateway(EXACT)
    first = await gw.client.post("/v1/chat/completions", json=BODY, headers=gw.auth())
    assert first.status_code == 200 and first.headers["x-tokenops-cache"] == "miss"
    before = calls_to_provider(fake_app)
    second = await gw.client.post("/v1/chat/completions", json={**BODY, "user": "someone-else"}, headers=gw.auth())
    assert second.status_code == 200 and second.headers["x-tokenops-cache"] == "hit"
    assert calls_to_provider(fake_app) == before  # the provider never saw it
    assert second.json() == first.json() and second.headers["x-tokenops-cost-usd"] == "0.00"
    paid, hit = gw.event(first.headers["x-tokenops-request-id"]), gw.event(second.headers["x-tokenops-request-id"])
    assert paid.cache == "miss" and paid.cost_usd > 0
    assert hit.cache == "hit" and hit.status == "ok" and hit.cost_usd == 0 and hit.usage.total_tokens == 0
    assert hit.cost_avoided_usd == paid.cost_usd == (
        Decimal(paid.usage.input_tokens) * Decimal("0.15") + Decimal(paid.usage.output_tokens) * Decimal("0.60")) / M
    assert hit.model_used == paid.model_used and hit.key_id == paid.key_id
    from tokenops.services.savings import savings_report

    (row,) = savings_report(gw.ledger, gw.gateway.config, gw.gateway.catalog, by=["kind"]).rows
    assert row.group == {"kind": "cache_hit"} and row.calls == 1 and row.paid == 0 and row.saved == paid.cost_usd
    # another question, or the same one with another parameter, is another entry
    other = await gw.client.post("/v1/chat/completions", json={**BODY, "max_tokens": 31}, headers=gw.auth())
    assert other.headers["x-tokenops-cache"] == "miss"


async def test_sampling_calls_are_not_cached_unless_asked(make_gateway: Any, fake_app: Any) -> None:
    gw: GatewayHarness = await make_gateway(EXACT)
    sampled = {k: v for k, v in BODY.items() if k != "temperature"}
    for _ in range(2):
        r = await gw.client.post("/v1/chat/completions", json=sampled, headers=gw.auth())
        assert r.headers["x-tokenops-cache"] == "off"  # the header says hit, miss or off (the contract)
        assert gw.event(r.headers["x-tokenops-request-id"]).cache == "bypass"  # the event says why
    hot = {**BODY, "temperature": 0.7}
    assert (await gw.client.post("/v1/chat/completions", json=hot, headers=gw.auth())).headers["x-tokenops-cache"] \
        == "off"  # fmt: skip
    # the client may skip the cache for one call
    r = await gw.client.post("/v1/chat/completions", json=BODY, headers=gw.auth(**{"x-tokenops-cache": "bypass"}))
    assert r.headers["x-tokenops-cache"] == "off" and gw.event(r.headers["x-tokenops-request-id"]).cache == "bypass"
    gw2: GatewayHarness = await make_gateway("cache: {mode: exact, nondeterministic: true}\n")
    for expected in ("miss", "hit"):
        r = await gw2.client.post("/v1/chat/completions", json=sampled, headers=gw2.auth())
        assert r.headers["x-tokenops-cache"] == expected


async def test_one_scope_never_sees_anothers_answers_unless_shared(make_gateway: Any) -> None:
    gw: GatewayHarness = await make_gateway(EXACT, key_tags={"team": "search"})
    _, other_key = create_key(gw.ledger, name="other", tags={"team": "search"})
    assert (await gw.client.post("/v1/chat/completions", json=BODY, headers=gw.auth())).headers["x-tokenops-cache"] \
        == "miss"  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {other_key}"})
    assert r.headers["x-tokenops-cache"] == "miss"  # scope: key (the default)
    shared: GatewayHarness = await make_gateway("cache: {mode: exact, scope: team}\n", key_tags={"team": "search"})
    _, teammate = create_key(shared.ledger, name="teammate", tags={"team": "search"})
    _, outsider = create_key(shared.ledger, name="outsider", tags={"team": "ads"})
    body = {**BODY, "max_tokens": 29}
    assert (await shared.client.post("/v1/chat/completions", json=body, headers=shared.auth())).headers[
        "x-tokenops-cache"] == "miss"  # fmt: skip
    r = await shared.client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {teammate}"})
    assert r.headers["x-tokenops-cache"] == "hit"  # the same team: shared, as configured
    r = await shared.client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {outsider}"})
    assert r.headers["x-tokenops-cache"] == "miss"


async def test_a_streamed_answer_is_replayed_as_a_stream(make_gateway: Any, fake_app: Any) -> None:
    gw: GatewayHarness = await make_gateway(EXACT)
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    first = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    before = calls_to_provider(fake_app)
    second = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    assert second.headers["x-tokenops-cache"] == "hit" and calls_to_provider(fake_app) == before
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.text == first.text and second.text.rstrip().endswith("data: [DONE]")
    # a non-streamed call of the same question is another entry (it gets JSON)
    r = await gw.client.post("/v1/chat/completions", json=BODY, headers=gw.auth())
    assert r.headers["x-tokenops-cache"] == "miss" and r.json()["object"] == "chat.completion"


async def test_a_store_that_is_down_leaves_calls_uncached(make_gateway: Any) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    gw: GatewayHarness = await make_gateway(EXACT)
    from tokenops.gateway.cache import RedisStore

    gw.gateway.cache.store = RedisStore(dead, timeout=0.2)
    for _ in range(2):
        r = await gw.client.post("/v1/chat/completions", json=BODY, headers=gw.auth())
        assert r.status_code == 200 and r.headers["x-tokenops-cache"] == "miss"
        ev = gw.event(r.headers["x-tokenops-request-id"])
        assert ev.cache == "error" and ev.cost_usd > 0


def test_cached_answers_through_the_openai_sdk(tmp_path: Path) -> None:
    stack = SocketStack(tmp_path, extra=EXACT)
    try:
        with openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0) as client:
            raw = [client.chat.completions.with_raw_response.create(**BODY) for _ in range(2)]  # type: ignore[call-overload]
            assert [r.headers["x-tokenops-cache"] for r in raw] == ["miss", "hit"]
            answers = [r.parse() for r in raw]
            assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
            stream = {**BODY, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 28}
            texts = []
            for _ in range(2):
                with client.chat.completions.create(**stream) as chunks:  # type: ignore[call-overload]
                    texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
            assert texts[0] == texts[1] and texts[0]
        hit = stack.event(raw[1].headers["x-tokenops-request-id"])
        assert hit.cache == "hit" and hit.cost_usd == 0 and hit.cost_avoided_usd == stack.event(
            raw[0].headers["x-tokenops-request-id"]).cost_usd  # fmt: skip
    finally:
        stack.close()


async def test_gateways_sharing_a_redis_state_share_the_cache(make_gateway: Any) -> None:
    """Two gateways of one deployment (same ledger, same state, same key): with a Redis state (the PostgreSQL +
    Redis test stack) the second answers from what the first kept; each in its own process memory otherwise."""
    one: GatewayHarness = await make_gateway(EXACT)
    two: GatewayHarness = await make_gateway(EXACT)
    body = {**BODY, "max_tokens": 27}
    assert (await one.client.post("/v1/chat/completions", json=body, headers=one.auth())).headers[
        "x-tokenops-cache"] == "miss"  # fmt: skip
    r = await two.client.post("/v1/chat/completions", json=body, headers=one.auth())
    shared = one.gateway.config.state != "memory"
    assert r.status_code == 200 and r.headers["x-tokenops-cache"] == ("hit" if shared else "miss")


async def test_semantic_mode_answers_a_paraphrase_but_not_another_question(make_gateway: Any, fake_app: Any) -> None:
    """The local MiniLM model (no download): "How can I reset my password?" is answered with the kept answer of
    "How do I reset my password?" (similarity 0.99); "How do I lose 50 kg?" is not answered with the one for
    5 kg (numbers differ: vetoed); another system prompt is another context."""
    gw: GatewayHarness = await make_gateway("cache: {mode: semantic}\n")

    def ask(text: str, system: str = "Be brief.") -> dict[str, Any]:
        return {**BODY, "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]}

    for text in ("How do I reset my password?", "How do I lose 5 kg?"):
        r = await gw.client.post("/v1/chat/completions", json=ask(text), headers=gw.auth())
        assert r.headers["x-tokenops-cache"] == "miss"
    kept = r.json()
    r = await gw.client.post("/v1/chat/completions", json=ask("How can I reset my password?"), headers=gw.auth())
    assert r.headers["x-tokenops-cache"] == "hit" and r.headers["x-tokenops-cost-usd"] == "0.00"
    r = await gw.client.post("/v1/chat/completions", json=ask("How do I lose 50 kg?"), headers=gw.auth())
    assert r.headers["x-tokenops-cache"] == "miss" and r.json() != kept
    r = await gw.client.post("/v1/chat/completions", json=ask("How can I reset my password?", "Be thorough."),
                             headers=gw.auth())  # fmt: skip
    assert r.headers["x-tokenops-cache"] == "miss"


async def test_gateways_sharing_a_redis_state_share_semantic_matches(make_gateway: Any) -> None:
    """With a Redis state the semantic index sits beside the answers in Redis: a paraphrase asked of the second
    gateway finds what the first kept. Each process keeps its own index otherwise."""
    one: GatewayHarness = await make_gateway("cache: {mode: semantic}\n")
    two: GatewayHarness = await make_gateway("cache: {mode: semantic}\n")

    def ask(text: str) -> dict[str, Any]:
        return {**BODY, "max_tokens": 26, "messages": [{"role": "user", "content": text}]}

    r = await one.client.post("/v1/chat/completions", json=ask("How do I reset my password?"), headers=one.auth())
    assert r.headers["x-tokenops-cache"] == "miss"
    r = await two.client.post("/v1/chat/completions", json=ask("How can I reset my password?"), headers=one.auth())
    shared = one.gateway.config.state != "memory"
    assert r.status_code == 200 and r.headers["x-tokenops-cache"] == ("hit" if shared else "miss")
    r = await two.client.post("/v1/chat/completions", json=ask("How do I lose 50 kg?"), headers=one.auth())
    assert r.headers["x-tokenops-cache"] == "miss"


async def test_gemini_embeddings_are_kept_at_the_estimate_they_were_billed_at(make_gateway: Any,
                                                                              fake_app: Any) -> None:  # fmt: skip
    """Google reports no usage for embedContent: the call is billed at the gateway's estimate, and that answer is
    kept like any other (before, every such call said miss and went to the provider again)."""
    gw: GatewayHarness = await make_gateway(EXACT, providers=f'  google: {{base_url: "{FAKE_URL}", kind: gemini, '
                                                             f'api_key: {PROVIDER_KEY}}}\n')  # fmt: skip
    path = "/v1beta/models/gemini-embedding-001:embedContent"
    body = {"content": {"parts": [{"text": "embed me"}]}}
    first = await gw.client.post(path, json=body, headers=gw.auth())
    assert first.status_code == 200 and first.headers["x-tokenops-cache"] == "miss", first.text
    sent = sum(1 for r in fake_app.state.received if r["path"].endswith(":embedContent"))
    second = await gw.client.post(path, json=body, headers=gw.auth())
    assert second.status_code == 200 and second.headers["x-tokenops-cache"] == "hit"
    assert second.json() == first.json()
    assert sum(1 for r in fake_app.state.received if r["path"].endswith(":embedContent")) == sent
    paid, hit = gw.event(first.headers["x-tokenops-request-id"]), gw.event(second.headers["x-tokenops-request-id"])
    assert paid.usage_estimated and paid.error_code == "usage_missing" and paid.cost_usd > 0
    assert hit.cache == "hit" and hit.cost_usd == 0 and hit.cost_avoided_usd == paid.cost_usd
    # (a chat answer whose usage had to be estimated is still not kept: tests/gateway/test_hostile_upstream.py)
