"""End to end through real sockets with the official ``openai`` and ``anthropic`` SDKs.

The fake provider and the gateway each run under uvicorn on loopback; every call's recorded cost is checked to
the last decimal against the usage the provider reported and the providers' published prices.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from harness import SocketStack
from tokenops.ledger.events import SpendEvent

M = Decimal(1_000_000)
LONG = "Every team's spend on model calls is reviewed each quarter by finance. " * 80


class Stack(SocketStack):
    def __init__(self, tmp: Path):
        super().__init__(tmp, tags={"team": "sdk"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("sdk"))
    yield s
    s.close()


def mini_cost(prompt: int, cached: int, completion: int) -> Decimal:
    """gpt-4o-mini at its published prices: $0.15 input, $0.075 cached input, $0.60 output per 1M tokens."""
    return (Decimal(prompt - cached) * Decimal("0.15") + Decimal(cached) * Decimal("0.075")
            + Decimal(completion) * Decimal("0.60")) / M  # fmt: skip


def haiku_cost(u: anthropic.types.Usage) -> Decimal:
    """claude-3-5-haiku published: $0.80 input, $0.08 cache read, $1.00 5-min write, $1.60 1-hour write, $4 out."""
    split = u.cache_creation
    w1h = split.ephemeral_1h_input_tokens if split else 0
    w5 = (u.cache_creation_input_tokens or 0) - w1h
    return (Decimal(u.input_tokens) * Decimal("0.80") + Decimal(u.cache_read_input_tokens or 0) * Decimal("0.08")
            + Decimal(w5) * Decimal("1.00") + Decimal(w1h) * Decimal("1.60")
            + Decimal(u.output_tokens) * Decimal("4")) / M  # fmt: skip


def test_openai_sdk_json_with_automatic_prompt_cache(oai: openai.OpenAI, stack: Stack) -> None:
    costs = []
    for question in ("first question?", "second question?"):
        raw = oai.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": LONG}, {"role": "user", "content": question}],
            extra_headers={"X-TokenOps-Tags": "feature=sdk-test"},
        )
        completion = raw.parse()
        u = completion.usage
        cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
        expected = mini_cost(u.prompt_tokens, cached, u.completion_tokens)
        assert Decimal(raw.headers["x-tokenops-cost-usd"]) == expected
        ev = stack.event(raw.headers["x-tokenops-request-id"])
        assert ev.cost_usd == expected and ev.usage.cache_read_tokens == cached
        assert ev.tags == {"team": "sdk", "feature": "sdk-test"}
        costs.append((cached, expected))
    assert costs[0][0] == 0 and costs[1][0] > 0, "the second call reads the cached prefix"
    assert costs[1][1] < costs[0][1]


class Invoice(BaseModel):
    vendor: str
    lines: list[str]
    total_usd: float


def test_openai_sdk_structured_output_json_and_stream(oai: openai.OpenAI, stack: Stack) -> None:
    """``parse`` (a JSON schema in ``response_format``) through the gateway, as LangChain's
    ``with_structured_output`` sends it: the answer validates, and is priced from the provider's usage."""
    messages: Any = [{"role": "user", "content": "Read this invoice."}]
    raw = oai.chat.completions.with_raw_response.parse(model="gpt-4o-mini", messages=messages, response_format=Invoice)
    done = raw.parse()
    assert isinstance(done.choices[0].message.parsed, Invoice) and done.usage is not None
    u = done.usage
    assert Decimal(raw.headers["x-tokenops-cost-usd"]) == mini_cost(u.prompt_tokens, 0, u.completion_tokens)
    with oai.chat.completions.stream(model="gpt-4o-mini", messages=messages, response_format=Invoice,
                                     stream_options={"include_usage": True}) as stream:  # fmt: skip
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == done.choices[0].message.parsed


def test_openai_sdk_stream(oai: openai.OpenAI, stack: Stack) -> None:
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}], stream=True
    ) as resp:
        rid = resp.headers["x-tokenops-request-id"]
        chunks = list(resp.parse())
    assert chunks and all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ev = stack.event(rid)
    assert ev.stream and ev.status == "ok" and ev.usage.output_tokens == len(text.split())
    assert ev.cost_usd == mini_cost(ev.usage.input_tokens, 0, ev.usage.output_tokens)


def test_openai_sdk_stream_with_usage(oai: openai.OpenAI, stack: Stack) -> None:
    stream = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "u"}],
                                         stream=True, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0


def test_openai_sdk_embeddings(oai: openai.OpenAI, stack: Stack) -> None:
    raw = oai.embeddings.with_raw_response.create(model="text-embedding-3-small", input="tokens cost money")
    tokens = raw.parse().usage.prompt_tokens
    assert Decimal(raw.headers["x-tokenops-cost-usd"]) == Decimal(tokens) * Decimal("0.02") / M


def test_openai_sdk_sees_typed_errors(oai: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                    extra_body={"fake": {"status": 429}})  # fmt: skip
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"X-TokenOps-Tags": "bad"})  # fmt: skip
    assert info.value.body["code"] == "invalid_tags"
    bad = openai.OpenAI(base_url=stack.url + "/v1", api_key="tok-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    bad.close()


def test_anthropic_sdk_cache_write_then_read(claude: anthropic.Anthropic, stack: Stack) -> None:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    seen = []
    for q in ("a?", "b?"):
        raw = claude.messages.with_raw_response.create(
            model="claude-3-5-haiku-20241022", max_tokens=100, system=system,
            messages=[{"role": "user", "content": q}],
        )  # fmt: skip
        msg = raw.parse()
        expected = haiku_cost(msg.usage)
        assert Decimal(raw.headers["x-tokenops-cost-usd"]) == expected
        ev = stack.event(raw.headers["x-tokenops-request-id"])
        assert ev.cost_usd == expected
        assert ev.usage.input_tokens == (msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)
                                         + (msg.usage.cache_creation_input_tokens or 0))  # fmt: skip
        seen.append(ev.usage)
    assert seen[0].cache_write_1h_tokens > 0 and seen[0].cache_read_tokens == 0
    assert seen[1].cache_read_tokens == seen[0].cache_write_1h_tokens


def test_anthropic_sdk_stream(claude: anthropic.Anthropic, stack: Stack) -> None:
    with claude.messages.with_streaming_response.create(
        model="claude-3-5-haiku-20241022", max_tokens=64, stream=True,
        messages=[{"role": "user", "content": "stream it"}],
    ) as resp:  # fmt: skip
        rid = resp.headers["x-tokenops-request-id"]
        events = list(resp.parse())
    final = [e for e in events if e.type == "message_delta"][-1]
    ev = stack.event(rid)
    assert ev.usage.output_tokens == final.usage.output_tokens and ev.status == "ok"
    start = [e for e in events if e.type == "message_start"][0]
    assert ev.cost_usd == haiku_cost(start.message.usage.model_copy(update={"output_tokens": final.usage.output_tokens}))


def test_anthropic_sdk_typed_errors(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="claude-3-5-haiku", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                               extra_body={"fake": {"status": 429}})  # fmt: skip


def test_anthropic_sdk_count_tokens_is_passed_through_and_never_charged(claude: anthropic.Anthropic,
                                                                         stack: Stack) -> None:  # fmt: skip
    """What Claude Code's /context asks: the count comes from the provider; no spend, no ledger row."""
    stack.gateway.ledger.drain(stack.gateway.spool_dir, timeout=10)  # earlier tests' calls, before counting
    before = stack.gateway.ledger.count_events()
    messages: Any = [{"role": "user", "content": "How many tokens is this question?"}]
    raw = claude.messages.with_raw_response.count_tokens(model="claude-3-5-haiku-20241022", system=LONG,
                                                         messages=messages)  # fmt: skip
    counted = raw.parse().input_tokens
    sent = claude.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, system=LONG, messages=messages)
    assert counted == sent.usage.input_tokens > 0, "the same count as the call itself reports"
    assert raw.headers["x-tokenops-cost-usd"] == "0.00" and "x-tokenops-request-id" not in raw.headers
    stack.gateway.ledger.drain(stack.gateway.spool_dir, timeout=10)
    assert stack.gateway.ledger.count_events() == before + 1, "only the message is in the ledger"
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'tokenops_requests_total{model="claude-3-5-haiku-20241022",provider="anthropic",' \
           'route="messages.count_tokens",status="ok"} 1.0' in metrics
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=stack.url, api_key="tk-wrong", max_retries=0).messages.count_tokens(
            model="claude-3-5-haiku-20241022", messages=messages)


def test_anthropic_sdk_beta_calls_reach_the_provider_unchanged(claude: anthropic.Anthropic, stack: Stack) -> None:
    """The anthropic-beta header (the SDK's beta namespace) and ?beta=true (which Claude Code adds to every call)."""
    msg = claude.beta.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, betas=["context-1m-2025-08-07"],
                                      messages=[{"role": "user", "content": "beta?"}],
                                      extra_query={"beta": "true"})  # fmt: skip
    assert msg.usage.input_tokens > 0
    seen = [r for r in stack.fake.app.state.received if r["path"] == "/v1/messages"][-1]
    assert seen["query"] == "beta=true" and seen["headers"]["anthropic-beta"] == "context-1m-2025-08-07"
    models = claude.models.list()
    assert 0 < len(models.data) <= 20 and all(m.type == "model" for m in models.data)  # Anthropic's page: 20
    listed = [m.id for m in claude.models.list(limit=5)]  # iterating follows has_more / last_id to the end
    assert len(listed) == len(set(listed)) > 20 and listed[:len(models.data)] == [m.id for m in models.data]
    assert any("haiku" in i for i in listed) and not any(i.startswith("gpt") for i in listed), "only /v1/messages models"


def test_head_over_a_real_socket(stack: Stack) -> None:
    """uvicorn serves the GET answer's headers and no body for HEAD; the connection stays usable."""
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        head = client.head("/healthz")
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
        assert client.get("/healthz").json() == {"status": "ok"}  # the same connection, next request


def abandon_stream(stack: Stack, body: dict[str, Any], reads: int) -> SpendEvent:
    """Read ``reads`` pieces of a stream, hang up, and return the call's event once the gateway recorded it."""
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        with client.stream("POST", "/v1/chat/completions", json=body,
                           headers={"authorization": f"Bearer {stack.key}"}) as r:  # fmt: skip
            rid = r.headers["x-tokenops-request-id"]
            it = r.iter_raw()
            for _ in range(reads):
                next(it)
    deadline = time.monotonic() + 10
    while stack.gateway.meter.lookup_recent(rid) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return stack.event(rid)


def test_client_disconnect_mid_stream_is_recorded_as_cancelled(stack: Stack) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long answer"}],
            "fake": {"chunk_delay_ms": 50, "chunks": 40}}  # fmt: skip
    ev = abandon_stream(stack, body, 2)
    assert ev.status == "cancelled" and ev.error_code == "client_disconnected" and ev.usage_estimated
    assert ev.usage.input_tokens > 0 and ev.cost_usd is not None and ev.cost_usd > 0


def test_upstream_stream_cut_short_is_recorded_as_error(stack: Stack) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hello there"}],
            "fake": {"disconnect_after": 3}}  # fmt: skip
    r = httpx.post(stack.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {stack.key}"})
    assert r.status_code == 200
    assert '"error"' in r.text.strip().splitlines()[-1]
    ev = stack.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "error" and ev.usage_estimated and ev.usage.input_tokens > 0


def test_a_cancelled_stream_counts_the_images_that_were_sent(stack: Stack) -> None:
    """The provider bills every image of a call the client abandons: the estimate counts them too."""
    parts = [{"type": "text", "text": "describe"}] + [
        {"type": "image_url", "image_url": {"url": f"https://img.example/{i}.png"}} for i in range(20)]
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": parts}],
            "fake": {"chunk_delay_ms": 50, "chunks": 40}}  # fmt: skip
    ev = abandon_stream(stack, body, 1)
    assert ev.status == "cancelled" and ev.usage_estimated
    assert ev.usage.input_tokens >= 20 * 1000, f"{ev.usage.input_tokens} input tokens for 20 images"


CLAUDE_CODE = Path(__file__).parent.parent / "fixtures" / "clients" / "anthropic" / "claude_code_2.1.197.jsonl"
# claude-haiku-4-5, published per 1M tokens (https://docs.anthropic.com/en/docs/about-claude/pricing, read
# 2026-12-03): $1 input, $0.10 cache read, $1.25 5-minute write, $2 1-hour write, $5 output
HAIKU_45 = (Decimal("1"), Decimal("0.10"), Decimal("1.25"), Decimal("2"), Decimal("5"))


def _claude_code() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CLAUDE_CODE.read_text().splitlines()]


@pytest.mark.parametrize("request_", _claude_code(), ids=lambda r: f"{r['body']['model']}-{len(r['body']['messages'])}")
def test_captured_claude_code_requests_work_and_are_priced(stack: Stack, request_: dict[str, Any]) -> None:
    """Requests Claude Code 2.1.197 sent in print mode (``claude -p``), replayed as sent, headers included: its
    beta headers and ``?beta=true``, extended thinking, context management, a ``system`` turn, 24 tools, a tool
    round trip. Their long texts were replaced by filler of the same length (the shapes are what is tested)."""
    headers = {**request_["headers"], "x-api-key": stack.key}
    with httpx.stream("POST", stack.url + request_["path"], headers=headers, json=request_["body"], timeout=30) as r:
        raw = r.read()
        assert r.status_code == 200, raw[:300]
        request_id = r.headers["x-tokenops-request-id"]
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    usage = {**events[0]["message"]["usage"], **next(e for e in events if e["type"] == "message_delta")["usage"]}
    ev = stack.event(request_id)
    assert ev.status == "ok" and not ev.usage_estimated and ev.cost_usd is not None and ev.cost_usd > 0
    assert ev.end_user == "device:" + "0" * 64  # the device, not the per-run session (docs/governance.md)
    assert ev.usage.input_tokens == usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) \
        + usage.get("cache_creation_input_tokens", 0) and ev.usage.output_tokens == usage["output_tokens"]  # fmt: skip
    if request_["body"]["model"] == "claude-haiku-4-5":
        inp, read, w5, w1h, out = HAIKU_45
        split = usage.get("cache_creation") or {}
        expected = (usage["input_tokens"] * inp + usage.get("cache_read_input_tokens", 0) * read
                    + split.get("ephemeral_5m_input_tokens", 0) * w5 + split.get("ephemeral_1h_input_tokens", 0) * w1h
                    + usage["output_tokens"] * out) / M  # fmt: skip
        assert ev.cost_usd == expected
