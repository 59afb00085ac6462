"""Non-streaming calls through the in-process gateway: headers, exact cost, attribution, ledger."""

from __future__ import annotations

from decimal import Decimal

import pytest

from harness import GatewayHarness, sql

M = Decimal(1_000_000)


def cost(tokens: int, per_mtok: str) -> Decimal:
    return Decimal(tokens) * Decimal(per_mtok) / M


async def test_openai_chat_is_priced_exactly_with_cached_input(gw: GatewayHarness) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "fake": {"usage": {"input": 12_345, "cached": 4_096, "output": 789}}}  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    assert r.status_code == 200, r.text
    # gpt-4o-mini, published: $0.15 input, $0.075 cached input, $0.60 output per 1M tokens
    expected = cost(12_345 - 4_096, "0.15") + cost(4_096, "0.075") + cost(789, "0.60")
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == expected
    assert r.headers["x-tokenops-model"] == "gpt-4o-mini"
    assert r.headers["x-tokenops-cache"] == "off"
    rid = r.headers["x-tokenops-request-id"]
    ev = gw.event(rid)
    assert ev.cost_usd == expected
    assert ev.usage.input_tokens == 12_345 and ev.usage.cache_read_tokens == 4_096 and ev.usage.output_tokens == 789
    assert ev.price_row_id and ev.status == "ok" and ev.key_id == gw.key_record.id
    assert ev.tags == {"team": "search", "env": "prod"}
    (src,) = sql(gw.ledger, "SELECT source, model FROM price_rows WHERE id = ?", [ev.price_row_id])
    assert src is not None and src[0].startswith("genai-prices") and src[1] == "gpt-4o-mini"


async def test_anthropic_cache_writes_5m_1h_and_reads_are_priced_apart(gw: GatewayHarness) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
            "fake": {"usage": {"input": 50_000, "cached": 20_000, "cache_write_5m": 10_000,
                               "cache_write_1h": 5_000, "output": 1_000}}}  # fmt: skip
    r = await gw.client.post("/v1/messages", json=body, headers={"x-api-key": gw.key})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["input_tokens"] == 15_000  # Anthropic's input excludes cache reads and writes
    # claude-sonnet-4-5, published: $3 input, $0.30 cache read, $3.75 5-min write, $6 1-hour write, $15 output
    expected = (cost(15_000, "3") + cost(20_000, "0.30") + cost(10_000, "3.75") + cost(5_000, "6")
                + cost(1_000, "15"))  # fmt: skip
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == expected
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert (ev.usage.input_tokens, ev.usage.cache_read_tokens) == (50_000, 20_000)
    assert (ev.usage.cache_write_5m_tokens, ev.usage.cache_write_1h_tokens) == (10_000, 5_000)
    assert ev.cost_usd == expected


async def test_reasoning_tokens_are_recorded_and_billed_as_output(gw: GatewayHarness) -> None:
    body = {"model": "o3", "messages": [{"role": "user", "content": "think"}],
            "fake": {"usage": {"input": 1000, "output": 3000, "reasoning": 2000}}}  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage.reasoning_tokens == 2000
    row = gw.gateway.catalog.get(ev.price_row_id)
    assert ev.cost_usd == cost(1000, str(row.input_per_mtok)) + cost(3000, str(row.output_per_mtok))


async def test_embeddings_are_metered(gw: GatewayHarness) -> None:
    r = await gw.client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["a" * 400, "b"]},
                             headers=gw.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    tokens = r.json()["usage"]["prompt_tokens"]
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == cost(tokens, "0.02")  # published: $0.02 per 1M


async def test_unknown_model_is_served_but_unpriced_never_zero(gw: GatewayHarness) -> None:
    r = await gw.client.post("/v1/chat/completions", json={"model": "local/brand-new-model",
                             "messages": [{"role": "user", "content": "hi"}]}, headers=gw.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["x-tokenops-cost-usd"] == "unpriced"
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.cost_usd is None and ev.price_row_id is None and ev.provider == "local"
    assert ev.usage.output_tokens > 0


async def test_config_price_row_prices_a_local_model(make_gateway) -> None:  # noqa: ANN001
    extra = """
models:
  - {name: llama, provider: local, model: llama-3.1-8b}
prices:
  - {provider: local, model: llama-3.1-8b, input_per_mtok: "0.05", output_per_mtok: "0.08", effective_from: 2025-01-01}
"""
    h = await make_gateway(extra)
    body = {"model": "llama", "messages": [{"role": "user", "content": "x"}],
            "fake": {"usage": {"input": 333, "output": 77}}}  # fmt: skip
    r = await h.client.post("/v1/chat/completions", json=body, headers=h.auth())
    assert r.headers["x-tokenops-model"] == "llama-3.1-8b"
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == cost(333, "0.05") + cost(77, "0.08")
    ev = h.event(r.headers["x-tokenops-request-id"])
    assert ev.model_requested == "llama" and ev.model_used == "llama-3.1-8b" and ev.provider == "local"


async def test_dated_model_name_in_the_answer_is_priced(gw: GatewayHarness) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}],
            "fake": {"model": "gpt-4o-2024-08-06", "usage": {"input": 1000, "output": 100}}}  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    assert r.headers["x-tokenops-model"] == "gpt-4o-2024-08-06"
    assert Decimal(r.headers["x-tokenops-cost-usd"]) == cost(1000, "2.50") + cost(100, "10")


async def test_tags_merge_key_metadata_and_header_with_locked_key_tags(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway(key_tags={"team": "search", "env": "prod"}, locked=("team",))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "user": "u-42",
            "metadata": {"feature": "summary", "customer": "acme", "team": "sneaky"}}  # fmt: skip
    r = await h.client.post("/v1/chat/completions", json=body,
                            headers=h.auth(**{"x-tokenops-tags": "env=staging,project=p1"}))  # fmt: skip
    ev = h.event(r.headers["x-tokenops-request-id"])
    assert ev.tags == {"team": "search", "env": "staging", "feature": "summary", "customer": "acme", "project": "p1"}
    assert ev.end_user == "u-42"


async def test_end_user_from_header(gw: GatewayHarness) -> None:
    r = await gw.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x"}]}, headers=gw.auth(**{"x-tokenops-user": "alice"}))  # fmt: skip
    assert gw.event(r.headers["x-tokenops-request-id"]).end_user == "alice"


async def test_tagging_policy_warn_records_missing_tags(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway("tagging: {required: [team, feature], allowed: {env: [dev, prod]}, mode: warn}",
                           key_tags={"team": "a", "env": "qa"})  # fmt: skip
    r = await h.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x"}]}, headers=h.auth())  # fmt: skip
    assert r.status_code == 200
    assert set(h.event(r.headers["x-tokenops-request-id"]).missing_tags) == {"feature", "env"}


async def test_tagging_policy_enforce_names_the_tag(make_gateway) -> None:  # noqa: ANN001
    h = await make_gateway("tagging: {required: [team, feature], mode: enforce}", key_tags={"team": "a"})
    r = await h.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x"}]}, headers=h.auth())  # fmt: skip
    assert r.status_code == 400
    assert "feature" in r.json()["error"]["message"]
    assert r.json()["error"]["code"] == "tag_policy_violation"
    r = await h.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x"}]}, headers=h.auth(**{"x-tokenops-tags": "feature=f"}))  # fmt: skip
    assert r.status_code == 200


async def test_unknown_fields_pass_through_untouched(gw: GatewayHarness, fake_app) -> None:  # noqa: ANN001
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "temperature": 0.3,
            "x_vendor_field": {"nested": [1, 2, 3]}, "logit_bias": {"50256": -100}}  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    assert r.status_code == 200
    sent = fake_app.state.received[-1]
    assert sent["body"]["x_vendor_field"] == {"nested": [1, 2, 3]}
    assert sent["body"]["temperature"] == 0.3 and sent["body"]["logit_bias"] == {"50256": -100}
    assert sent["headers"]["authorization"] == "Bearer sk-fake-provider-key-123"
    assert gw.key not in str(sent["headers"])


async def test_models_list(gw: GatewayHarness) -> None:
    r = await gw.client.get("/v1/models", headers=gw.auth())
    assert r.status_code == 200
    ids = {m["id"] for m in r.json()["data"]}
    assert {"gpt-4o-mini", "claude-sonnet-4-5"} <= ids


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health(gw: GatewayHarness, path: str) -> None:
    r = await gw.client.get(path)
    assert r.status_code == 200


async def test_metrics_count_calls(gw: GatewayHarness) -> None:
    await gw.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x"}]}, headers=gw.auth())  # fmt: skip
    text = (await gw.client.get("/metrics")).text
    assert 'tokenops_requests_total{model="gpt-4o-mini",provider="openai",route="chat.completions",status="ok"} 1.0' in text


async def test_request_lookup_needs_a_key_and_finds_drained_calls(gw: GatewayHarness) -> None:
    r = await gw.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x"}]}, headers=gw.auth())  # fmt: skip
    rid = r.headers["x-tokenops-request-id"]
    assert (await gw.client.get(f"/v1/tokenops/requests/{rid}")).status_code == 401
    got = await gw.client.get(f"/v1/tokenops/requests/{rid}", headers=gw.auth())
    assert got.json()["cost_usd"] == r.headers["x-tokenops-cost-usd"]
    gw.flush()
    gw.gateway.meter.recent.clear()  # force the ledger path
    got = await gw.client.get(f"/v1/tokenops/requests/{rid}", headers=gw.auth())
    assert got.status_code == 200 and got.json()["request_id"] == rid
    assert (await gw.client.get("/v1/tokenops/requests/req_nope", headers=gw.auth())).status_code == 404


async def test_request_lookup_is_limited_to_the_calling_key(gw: GatewayHarness) -> None:
    from harness import create_key

    r = await gw.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x"}]}, headers=gw.auth())  # fmt: skip
    rid = r.headers["x-tokenops-request-id"]
    _, other = create_key(gw.ledger, name="other-team", tags={"team": "other"})
    got = await gw.client.get(f"/v1/tokenops/requests/{rid}", headers={"authorization": f"Bearer {other}"})
    assert got.status_code == 404, "another team's key cannot read this call"


async def test_a_key_created_a_moment_after_a_reload_works_at_once(gw: GatewayHarness) -> None:
    from harness import create_key

    gw.gateway.keys.reload()
    _, fresh = create_key(gw.ledger, name="fresh")
    r = await gw.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x"}]}, headers={"authorization": f"Bearer {fresh}"})  # fmt: skip
    assert r.status_code == 200


async def test_anthropic_metadata_user_id_is_the_end_user_not_a_tag(gw: GatewayHarness) -> None:
    body = {"model": "claude-3-5-haiku", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "metadata": {"user_id": "u-7"}}  # fmt: skip
    r = await gw.client.post("/v1/messages", json=body, headers={"x-api-key": gw.key})
    ev = gw.event(r.headers["x-tokenops-request-id"])
    assert ev.end_user == "u-7" and "user_id" not in ev.tags


async def test_model_listings_page_as_each_api_does(gw: GatewayHarness) -> None:
    """Anthropic's limit / after_id / before_id and Gemini's pageSize / pageToken, so that an SDK's paging reads
    every model once; OpenAI's listing has no pages."""
    anth = {"x-api-key": gw.key, "anthropic-version": "2023-06-01"}
    whole = (await gw.client.get("/v1/models?limit=1000", headers=anth)).json()
    ids = [m["id"] for m in whole["data"]]
    assert len(ids) > 5 and not whole["has_more"] and whole["last_id"] == ids[-1]
    first = (await gw.client.get("/v1/models", headers=anth)).json()  # Anthropic's default: 20
    assert [m["id"] for m in first["data"]] == ids[:20] and first["has_more"] is (len(ids) > 20)
    seen, after = [], None
    while True:
        page = (await gw.client.get("/v1/models", params={"limit": 3, **({"after_id": after} if after else {})},
                                    headers=anth)).json()  # fmt: skip
        seen += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids
    back = (await gw.client.get("/v1/models", params={"limit": 2, "before_id": ids[3]}, headers=anth)).json()
    assert [m["id"] for m in back["data"]] == ids[1:3] and back["has_more"] is True
    for bad in ({"limit": "0"}, {"limit": "x"}, {"after_id": "no-such-model"}, {"after_id": ids[0], "before_id": ids[1]}):
        r = await gw.client.get("/v1/models", params=bad, headers=anth)
        assert r.status_code == 400 and r.json()["type"] == "error", bad
    g = {"x-goog-api-key": gw.key}
    for size, expect in (("0", 50), ("5000", 1000)):  # Google's reading: 0 is the default, more is the most
        r = await gw.client.get("/v1beta/models", params={"pageSize": size}, headers=g)
        assert r.status_code == 200 and len(r.json()["models"]) <= expect  # (no Gemini provider here: empty)
    r = await gw.client.get("/v1beta/models", params={"pageSize": "²"}, headers=g)
    assert r.status_code == 400 and "pageSize" in r.json()["error"]["message"]
    r = await gw.client.get("/v1/models?after_id=%ff%fe", headers=anth)  # not UTF-8: an unknown id, not a 500
    assert r.status_code == 400
    assert len((await gw.client.get("/v1/models", headers=gw.auth())).json()["data"]) >= len(ids)  # OpenAI: all


async def test_head_answers_as_get_without_a_body(gw: GatewayHarness) -> None:
    """RFC 9110: HEAD wherever GET works (load balancers' and uptime monitors' health checks send it)."""
    for path, headers in (("/healthz", {}), ("/readyz", {}), ("/v1/models", gw.auth())):
        get, head = await gw.client.get(path, headers=headers), await gw.client.head(path, headers=headers)
        assert head.status_code == get.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == get.headers["content-length"] != "0"
    assert (await gw.client.head("/v1/models")).status_code == 401  # still needs the key
    r = await gw.client.head("/v1/chat/completions", headers=gw.auth())
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.content == b""
