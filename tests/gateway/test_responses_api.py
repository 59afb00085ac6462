"""OpenAI's Responses API (and legacy completions, GET /v1/models/{id}) through real sockets with the official
``openai`` SDK: JSON, streams, background responses metered once when they end, the resource routes scoped to
the key that created the response, and each call's cost checked to the last digit.

Prices: https://platform.openai.com/docs/pricing (read 2026-12-02): gpt-4o-mini $0.15 input, $0.075 cached
input, $0.60 output per 1M tokens; o4-mini $1.10 input, $0.275 cached input, $4.40 output (reasoning billed
as output).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from harness import SocketStack, create_key

M = Decimal(1_000_000)


def mini_cost(inp: int, cached: int, out: int) -> Decimal:
    return (Decimal(inp - cached) * Decimal("0.15") + Decimal(cached) * Decimal("0.075") + Decimal(out) * Decimal("0.60")) / M


def o4_mini_cost(inp: int, cached: int, out: int) -> Decimal:
    return (Decimal(inp - cached) * Decimal("1.10") + Decimal(cached) * Decimal("0.275") + Decimal(out) * Decimal("4.40")) / M


class Stack(SocketStack):
    def __init__(self, tmp: Path):
        super().__init__(tmp, tags={"team": "agents"}, gateway="background_poll: 0.2")
        self.other_record, self.other_key = create_key(self.gateway.ledger, name="other", tags={"team": "other"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("responses"))
    yield s
    s.close()


def test_responses_json_priced_exactly_and_tagged(stack: Stack, oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="gpt-4o-mini", input="Summarise the quarter.",
                                                 instructions="Be brief.", metadata={"feature": "summary"})
    r = raw.parse()
    assert r.status == "completed" and r.output_text
    ev = stack.event(raw.headers["x-tokenops-request-id"])
    assert ev.route == "responses" and ev.upstream_request_id == r.id and ev.key_id == stack.record.id
    assert ev.usage.input_tokens == r.usage.input_tokens and ev.usage.output_tokens == r.usage.output_tokens
    assert ev.cost_usd == mini_cost(r.usage.input_tokens, 0, r.usage.output_tokens)
    assert raw.headers["x-tokenops-cost-usd"] != "pending"
    assert ev.tags.get("team") == "agents"


def test_responses_stream_reasoning_and_previous_response(stack: Stack, oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="o4-mini", input="Plan the migration.")
    with oai.responses.with_streaming_response.create(model="o4-mini", input="And then?", stream=True,
                                                      previous_response_id=first.id) as raw:  # fmt: skip
        request_id = raw.headers["x-tokenops-request-id"]
        kinds = []
        final = None
        for event in raw.parse():
            kinds.append(event.type)
            if event.type == "response.completed":
                final = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final is not None and final.usage is not None
    u = final.usage
    assert u.output_tokens_details.reasoning_tokens > 0
    assert u.input_tokens > first.usage.input_tokens + first.usage.output_tokens  # earlier turn billed again
    ev = stack.event(request_id)
    assert ev.stream and not ev.usage_estimated
    assert ev.usage.reasoning_tokens == u.output_tokens_details.reasoning_tokens
    assert ev.cost_usd == o4_mini_cost(u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens)


def test_responses_cached_input_priced_at_cache_rate(stack: Stack, oai: openai.OpenAI) -> None:
    long = [{"role": "system", "content": "Company handbook. " * 600}]
    oai.responses.create(model="gpt-4o-mini", input=[*long, {"role": "user", "content": "Q1"}])
    raw = oai.responses.with_raw_response.create(model="gpt-4o-mini", input=[*long, {"role": "user", "content": "Q2"}])
    r = raw.parse()
    cached = r.usage.input_tokens_details.cached_tokens
    assert cached > 0
    ev = stack.event(raw.headers["x-tokenops-request-id"])
    assert ev.usage.cache_read_tokens == cached
    assert ev.cost_usd == mini_cost(r.usage.input_tokens, cached, r.usage.output_tokens)


def test_background_response_metered_once_by_the_poll(stack: Stack, oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="gpt-4o-mini", input="Long report please", background=True,
                                                 extra_body={"fake": {"pending": 2}})  # fmt: skip
    queued = raw.parse()
    assert queued.status == "queued" and queued.usage is None
    assert raw.headers["x-tokenops-cost-usd"] == "pending"
    request_id = raw.headers["x-tokenops-request-id"]
    files = list((stack.gateway.spool_dir / "background").glob("*.json"))
    assert [f.stem for f in files] == [request_id]  # durable before the client got its answer
    deadline = time.monotonic() + 10
    while stack.gateway.background is not None and stack.gateway.background.owner(queued.id) is not None:
        assert time.monotonic() < deadline, "the poll never metered the background response"
        time.sleep(0.05)
    stack.drain()
    before = stack.gateway.ledger.count_events()
    done = oai.responses.retrieve(queued.id)  # fetched finished after the poll metered it: not metered again
    assert done.status == "completed" and done.usage is not None
    ev = stack.event(request_id)
    assert ev.status == "ok" and ev.upstream_request_id == queued.id and not ev.usage_estimated
    assert ev.cost_usd == mini_cost(done.usage.input_tokens, 0, done.usage.output_tokens)
    assert not list((stack.gateway.spool_dir / "background").glob("*.json"))
    assert stack.gateway.ledger.count_events() == before


def test_background_response_metered_when_fetched_finished(stack: Stack) -> None:
    slow = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0)
    bg = stack.gateway.background
    assert bg is not None
    bg.interval = 3600.0  # only the client's fetch can meter it now
    try:
        raw = slow.responses.with_raw_response.create(model="gpt-4o-mini", input="Fetch me later", background=True)
        queued = raw.parse()
        done = slow.responses.retrieve(queued.id)
        assert done.status == "completed"
        assert bg.owner(queued.id) is None
        ev = stack.event(raw.headers["x-tokenops-request-id"])
        assert ev.cost_usd == mini_cost(done.usage.input_tokens, 0, done.usage.output_tokens)
        again = slow.responses.with_raw_response.retrieve(queued.id)
        assert again.headers["x-tokenops-cost-usd"] == "0.00"
        assert again.headers["x-tokenops-request-id"] == raw.headers["x-tokenops-request-id"]
    finally:
        bg.interval = 0.2
        slow.close()


def test_background_cancel_is_recorded_cancelled(stack: Stack, oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="gpt-4o-mini", input="Cancel me", background=True,
                                                 extra_body={"fake": {"pending": 100}})  # fmt: skip
    queued = raw.parse()
    cancelled = oai.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    ev = stack.event(raw.headers["x-tokenops-request-id"])
    assert ev.status == "cancelled"
    assert ev.usage_estimated and ev.usage.input_tokens > 0  # may have been billed: estimated, flagged, never $0


def test_resource_routes_belong_to_the_key_that_created_the_response(stack: Stack, oai: openai.OpenAI) -> None:
    r = oai.responses.create(model="gpt-4o-mini", input=[{"role": "user", "content": "keep me"}])
    items = oai.responses.input_items.list(r.id)
    assert [i.content for i in items.data] == ["keep me"]  # type: ignore[union-attr]
    assert oai.responses.retrieve(r.id).id == r.id
    other = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.other_key, max_retries=0)
    try:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(r.id)
    finally:
        other.close()
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve("resp_never_made_here")
    oai.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(r.id)  # gone at the provider: its 404 relayed
    bad = httpx.put(f"{stack.url}/v1/responses/{r.id}", headers={"authorization": f"Bearer {stack.key}"})
    assert bad.status_code == 405 and bad.headers["allow"] == "GET, DELETE"


def test_legacy_completions_json_and_stream(stack: Stack, oai: openai.OpenAI) -> None:
    raw = oai.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=20)
    c = raw.parse()
    assert c.choices[0].text and c.usage is not None
    ev = stack.event(raw.headers["x-tokenops-request-id"])
    assert ev.route == "completions" and ev.usage.input_tokens == c.usage.prompt_tokens
    # gpt-3.5-turbo-instruct: $1.50 input, $2.00 output per 1M tokens (OpenAI pricing, legacy models)
    assert ev.cost_usd == (Decimal(c.usage.prompt_tokens) * Decimal("1.5") + Decimal(c.usage.completion_tokens) * 2) / M
    with oai.completions.with_streaming_response.create(model="gpt-3.5-turbo-instruct", prompt="Stream", stream=True,
                                                        max_tokens=20) as sraw:  # fmt: skip
        text = "".join(chunk.choices[0].text for chunk in sraw.parse() if chunk.choices)
        request_id = sraw.headers["x-tokenops-request-id"]
    assert text
    sev = stack.event(request_id)
    assert sev.stream and not sev.usage_estimated and sev.usage.output_tokens > 0


def test_models_by_id_in_both_shapes(stack: Stack, oai: openai.OpenAI) -> None:
    m = oai.models.retrieve("gpt-4o-mini")
    assert m.id == "gpt-4o-mini" and m.object == "model"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model-anywhere")
    r = httpx.get(f"{stack.url}/v1/models/claude-3-5-haiku-latest",
                  headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"})  # fmt: skip
    assert r.status_code == 200 and r.json()["type"] == "model"
    r = httpx.get(f"{stack.url}/v1/models/gpt-4o-mini", headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"})
    assert r.status_code == 404 and r.json()["type"] == "error"  # not callable on /v1/messages


def test_responses_stream_cut_before_its_usage_is_estimated_and_flagged(stack: Stack) -> None:
    with httpx.stream("POST", f"{stack.url}/v1/responses", headers={"authorization": f"Bearer {stack.key}"},
                      json={"model": "gpt-4o-mini", "input": "cut me off", "stream": True,
                            "fake": {"disconnect_after": 4}}, timeout=10) as r:  # fmt: skip
        body = r.read().decode()
        request_id = r.headers["x-tokenops-request-id"]
    assert "event: error" in body and '"type":"error"' in body and "response.completed" not in body
    ev = stack.event(request_id)
    assert ev.usage_estimated and ev.status == "error" and ev.usage.input_tokens > 0
    assert ev.error_code in ("upstream_stream_incomplete", "upstream_stream_broken")


def test_responses_bad_input_is_a_400_naming_the_field(stack: Stack) -> None:
    h = {"authorization": f"Bearer {stack.key}"}
    r = httpx.post(f"{stack.url}/v1/responses", headers=h, json={"model": "gpt-4o-mini", "input": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    r = httpx.post(f"{stack.url}/v1/responses", headers=h, json={"model": "gpt-4o-mini", "input": ["x"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0]"
    r = httpx.post(f"{stack.url}/v1/completions", headers=h, json={"model": "gpt-3.5-turbo-instruct", "prompt": "x",
                                                                     "n": 3, "best_of": 2})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "best_of"


FIXTURES = Path(__file__).parent.parent / "fixtures" / "clients"
# Published per-1M-token prices (https://platform.openai.com/docs/pricing, read 2026-12-02):
# (input, cached input, output)
PUBLISHED = {"gpt-5-codex": ("1.25", "0.125", "10"), "gpt-4.1-mini": ("0.40", "0.10", "1.60")}


def _fixtures() -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for i, line in enumerate(path.read_text().splitlines()):
            rows.append((f"{path.stem}#{i}", json.loads(line)))
    return rows


@pytest.mark.parametrize("name,request_", _fixtures(), ids=[n for n, _ in _fixtures()])
def test_captured_client_requests_work_and_are_priced(stack: Stack, name: str, request_: dict[str, Any]) -> None:
    """Requests captured once from Codex CLI 0.171.0 (``codex exec``, wire_api = "responses") and the OpenAI
    Agents SDK 0.24.0 (default Responses mode: a function tool, its call and output sent back, JSON and stream),
    replayed as they were sent, headers included."""
    headers = {**request_["headers"], "authorization": f"Bearer {stack.key}"}
    body = request_["body"]
    with httpx.stream("POST", stack.url + request_["path"], headers=headers, json=body, timeout=30) as r:
        raw = r.read()
        assert r.status_code == 200, raw[:300]
        request_id = r.headers["x-tokenops-request-id"]
    if body.get("stream"):
        finals = [json.loads(line[6:]) for line in raw.decode().splitlines()
                  if line.startswith("data: ") and '"response.completed"' in line]  # fmt: skip
        assert len(finals) == 1
        usage = finals[0]["response"]["usage"]
    else:
        usage = json.loads(raw)["usage"]
    ev = stack.event(request_id)
    assert ev.status == "ok" and not ev.usage_estimated and ev.model_requested == body["model"]
    inp, cached, out = (Decimal(p) for p in PUBLISHED[body["model"]])
    c = usage["input_tokens_details"]["cached_tokens"]
    assert ev.cost_usd == ((usage["input_tokens"] - c) * inp + c * cached + usage["output_tokens"] * out) / M


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
def test_chat_tool_call_round_trip_is_metered_each_turn(stack: Stack, oai: openai.OpenAI, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    fake = {"fake": {"tool_call": True}}
    if stream:
        with oai.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=messages, tools=TOOLS,
                                                                 stream=True, extra_body=fake) as raw:  # fmt: skip
            chunks = list(raw.parse())
            first_id = raw.headers["x-tokenops-request-id"]
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        call_id, name, args = calls[0].id, calls[0].function.name, "".join(tc.function.arguments or "" for tc in calls)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    else:
        raw1 = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, tools=TOOLS,
                                                             extra_body=fake)  # fmt: skip
        first = raw1.parse()
        first_id = raw1.headers["x-tokenops-request-id"]
        assert first.choices[0].finish_reason == "tool_calls"
        tc = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments  # type: ignore[union-attr]
    assert name == "get_weather" and json.loads(args) == {"city": "Paris"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]  # fmt: skip
    raw2 = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, tools=TOOLS,
                                                         extra_body=fake)  # fmt: skip
    answer = raw2.parse()
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    for request_id in (first_id, raw2.headers["x-tokenops-request-id"]):
        ev = stack.event(request_id)
        assert ev.status == "ok" and not ev.usage_estimated and ev.cost_usd is not None and ev.cost_usd > 0
        assert ev.cost_usd == mini_cost(ev.usage.input_tokens, ev.usage.cache_read_tokens, ev.usage.output_tokens)


@pytest.mark.parametrize("route", ["chat", "responses"])
def test_openai_cache_writes_are_priced_at_the_write_rate(stack: Stack, oai: openai.OpenAI, route: str) -> None:
    """gpt-6-sol in genai-prices 0.2.3 (from OpenAI's pricing page): $2 input, $0.20 cached, $2.50 cache write
    (1.25x input), $12 output per 1M tokens. Before, writes were billed as plain input (19 % under here)."""
    fake = {"fake": {"usage": {"input": 10_000, "cached": 1_000, "cache_write_5m": 8_000, "output": 100}}}
    if route == "chat":
        raw: Any = oai.chat.completions.with_raw_response.create(
            model="gpt-6-sol", messages=[{"role": "user", "content": "hi"}], extra_body=fake)
    else:
        raw = oai.responses.with_raw_response.create(model="gpt-6-sol", input="hi", extra_body=fake)
    ev = stack.event(raw.headers["x-tokenops-request-id"])
    assert (ev.usage.input_tokens, ev.usage.cache_read_tokens, ev.usage.cache_write_5m_tokens) == (10_000, 1_000, 8_000)
    row = stack.gateway.catalog.get(ev.price_row_id or "")
    assert row is not None and row.cache_write_5m_per_mtok == Decimal("2.5") and row.input_per_mtok == 2
    expected = (1_000 * row.input_per_mtok + 1_000 * row.cache_read_per_mtok + 8_000 * Decimal("2.5")
                + 100 * row.output_per_mtok) / M
    assert ev.cost_usd == expected


def test_n_answers_stream_interleaved_and_are_all_billed(stack: Stack, oai: openai.OpenAI) -> None:
    with oai.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Two answers"}], n=2, stream=True,
            stream_options={"include_usage": True}) as raw:  # fmt: skip
        chunks = list(raw.parse())
        request_id = raw.headers["x-tokenops-request-id"]
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in (0, 1)}  # fmt: skip
    assert texts[0] and texts[0] == texts[1]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 2 * len(texts[0].split())
    ev = stack.event(request_id)
    assert ev.usage.output_tokens == usage.completion_tokens
    assert ev.cost_usd == mini_cost(ev.usage.input_tokens, ev.usage.cache_read_tokens, ev.usage.output_tokens)


async def test_a_response_being_metered_is_still_found_by_a_retrieve(make_gateway: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """While its event is being written (the spool's fsync), a finished background response is still the key's:
    a retrieve at that moment used to get 404 "no response … was created through this gateway"."""
    h = await make_gateway("gateway: {writer: thread, writer_interval: 0.2, background_poll: 3600}\n")
    created = await h.client.post("/v1/responses", headers=h.auth(),
                                  json={"model": "gpt-4o-mini", "input": "later", "background": True})  # fmt: skip
    response_id = created.json()["id"]
    bg, meter = h.gateway.background, h.gateway.meter
    assert bg is not None and meter is not None
    release, entered = asyncio.Event(), asyncio.Event()
    real = meter.record

    async def slow_record(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(meter, "record", slow_record)
    metering = asyncio.create_task(bg.check(response_id))
    await asyncio.wait_for(entered.wait(), 5)
    assert bg.owner(response_id) is not None
    got = await h.client.get(f"/v1/responses/{response_id}", headers=h.auth())
    assert got.status_code == 200, got.text
    release.set()
    await metering
    assert bg.owner(response_id) is None
    ev = h.event(created.headers["x-tokenops-request-id"])
    assert ev.status == "ok" and ev.cost_usd
