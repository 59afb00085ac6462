"""Streamed calls: relayed event by event, metered even without include_usage, recorded before the end."""

from __future__ import annotations

from decimal import Decimal

import orjson

from harness import GatewayHarness

M = Decimal(1_000_000)


def data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def test_openai_stream_without_include_usage_is_metered_and_client_gets_what_it_asked(
    gw: GatewayHarness, fake_app  # noqa: ANN001
) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}],
            "fake": {"usage": {"input": 2000, "cached": 1024, "output": 50}}}  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-tokenops-cost-usd"] == "pending"  # a stream's cost is known only at its end
    lines = data_lines(r.text)
    assert lines[-1] == "[DONE]"
    chunks = [orjson.loads(x) for x in lines[:-1]]
    assert all("usage" not in c for c in chunks), "client did not ask for usage"
    assert all(c["choices"] for c in chunks)
    upstream_body = fake_app.state.received[-1]["body"]
    assert upstream_body["stream_options"] == {"include_usage": True}
    ev = gw.event(r.headers["x-tokenops-request-id"])
    expected = (Decimal(976) * Decimal("0.15") + Decimal(1024) * Decimal("0.075") + Decimal(50) * Decimal("0.60")) / M
    assert ev.cost_usd == expected and ev.stream and ev.status == "ok"
    assert ev.ttft_ms is not None and ev.ttft_ms <= ev.latency_ms


async def test_openai_stream_with_include_usage_keeps_the_usage_chunk(gw: GatewayHarness) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}], "fake": {"usage": {"input": 10, "output": 5}}}  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    chunks = [orjson.loads(x) for x in data_lines(r.text)[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 10
    assert all("usage" in c for c in chunks)


async def test_anthropic_stream_is_relayed_unchanged_and_priced(gw: GatewayHarness) -> None:
    body = {"model": "claude-3-5-haiku-20241022", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "fake": {"usage": {"input": 3000, "cached": 1000, "cache_write_5m": 500, "output": 40}}}  # fmt: skip
    r = await gw.client.post("/v1/messages", json=body, headers={"x-api-key": gw.key})
    assert r.status_code == 200
    events = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    ev = gw.event(r.headers["x-tokenops-request-id"])
    # claude-3-5-haiku, published: $0.80 input, $0.08 cache read, $1.00 5-min write, $4 output
    expected = (Decimal(1500) * Decimal("0.80") + Decimal(1000) * Decimal("0.08") + Decimal(500) * Decimal("1.00")
                + Decimal(40) * Decimal("4")) / M  # fmt: skip
    assert ev.cost_usd == expected
    assert ev.usage.input_tokens == 3000 and ev.usage.output_tokens == 40


async def test_stream_lookup_by_request_id_has_the_cost(gw: GatewayHarness) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}],
            "fake": {"usage": {"input": 100, "output": 10}}}  # fmt: skip
    r = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth())
    got = (await gw.client.get(f"/v1/tokenops/requests/{r.headers['x-tokenops-request-id']}",
                               headers=gw.auth())).json()  # fmt: skip
    assert Decimal(got["cost_usd"]) == (Decimal(100) * Decimal("0.15") + Decimal(10) * Decimal("0.60")) / M
