"""The fake provider, driven through a real socket by the official ``openai`` and ``anthropic`` SDKs.

Each test uses prompts of its own (the server and its prompt caches are shared by the module, to keep the file
fast), and predicts usage from the accounting rules in ``tokenops.fakeprovider``'s docstring.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from pydantic import BaseModel, Field, HttpUrl

from tokenops.fakeprovider import create_fake_provider
from tokenops.fakeprovider.accounting import PrefixMemory, account_anthropic, account_openai, json_instance
from tokenops.servers import BackgroundServer

CLAUDE = "claude-haiku-4-5"
LONG = "The quarterly budget review covers every team's spend on model calls. " * 70  # 4970 chars


def tok(text: str) -> int:
    """One message or system prompt, per the documented rule."""
    return math.ceil(len(text) / 4) + 4


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_fake_provider()) as running:
        yield running


@pytest.fixture(scope="module")
def oai(server: BackgroundServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(server: BackgroundServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def http(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as client:
        yield client


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


# --- OpenAI chat completions ------------------------------------------------------------------------------------


def test_openai_json_shape_and_usage(oai: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Explain our cloud bill."}]
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    reply = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.model == "gpt-4o" and reply.choices[0].finish_reason == "stop"
    words = reply.choices[0].message.content.split()
    assert 8 <= len(words) <= 40
    usage = reply.usage
    assert usage.prompt_tokens == tok("Be brief.") + tok("Explain our cloud bill.")
    assert usage.completion_tokens == len(words)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0
    again = oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert again.choices[0].message.content == reply.choices[0].message.content  # deterministic


def test_openai_content_parts_count_as_concatenated_text(oai: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "first part, "}, {"type": "text", "text": "second part"}]
    reply = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": parts}])
    assert reply.usage.prompt_tokens == tok("first part, second part")


def test_openai_max_tokens_caps_the_answer(oai: openai.OpenAI) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        kwargs = {field: 3}
        reply = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "cap"}], **kwargs)
        assert reply.usage.completion_tokens == 3 == len(reply.choices[0].message.content.split())
        assert reply.choices[0].finish_reason == "length"


def test_openai_stream_with_include_usage(oai: openai.OpenAI, http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "Stream me the spend report."}]
    full = oai.chat.completions.create(model="gpt-4o", messages=messages)
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    body = {"model": "gpt-4o", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    response = http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    parsed = [orjson.loads(d) for d in data[:-1]]
    assert all("usage" in p and p["usage"] is None for p in parsed[:-1])  # null on every non-usage chunk
    assert parsed[-1]["usage"]["prompt_tokens"] == tok("Stream me the spend report.")


def test_openai_stream_without_include_usage(http: httpx.Client) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "no usage please"}], "stream": True}
    data = sse_data(http.post("/v1/chat/completions", json=body).text)
    assert data[-1] == "[DONE]"
    parsed = [orjson.loads(d) for d in data[:-1]]
    assert all("usage" not in p for p in parsed)
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_chunks_and_chunk_delay(oai: openai.OpenAI) -> None:
    started = time.perf_counter()
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "three chunks"}],
        stream=True,
        extra_body={"fake": {"chunks": 3, "chunk_delay_ms": 20}},
    )
    contents = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content is not None]
    assert len(contents) == 4  # the role chunk's empty content, then exactly three pieces
    assert time.perf_counter() - started >= 0.08  # five gaps between six events


def test_openai_automatic_prompt_cache(oai: openai.OpenAI) -> None:
    system = {"role": "system", "content": "openai-cache " + LONG}
    first = oai.chat.completions.create(model="gpt-4o", messages=[system, {"role": "user", "content": "Q1?"}])
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second = oai.chat.completions.create(model="gpt-4o", messages=[system, {"role": "user", "content": "Q2?"}])
    shared = tok(system["content"])
    assert second.usage.prompt_tokens == shared + tok("Q2?")  # cached tokens stay included
    assert second.usage.prompt_tokens_details.cached_tokens == shared // 128 * 128
    other_model = oai.chat.completions.create(model="gpt-4.1", messages=[system, {"role": "user", "content": "Q3?"}])
    assert other_model.usage.prompt_tokens_details.cached_tokens == 0


def test_openai_short_prompts_are_not_cached(oai: openai.OpenAI) -> None:
    system = {"role": "system", "content": "short shared prefix"}
    for question in ("a?", "b?"):
        reply = oai.chat.completions.create(model="gpt-4o", messages=[system, {"role": "user", "content": question}])
        assert reply.usage.prompt_tokens_details.cached_tokens == 0


@pytest.mark.parametrize("model", ["o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5-nano"])
def test_reasoning_models_report_reasoning_tokens(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "think"}])
    words = len(reply.choices[0].message.content.split())
    assert reply.usage.completion_tokens_details.reasoning_tokens == 2 * words
    assert reply.usage.completion_tokens == 3 * words
    capped = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "think"}], max_completion_tokens=9
    )
    assert capped.usage.completion_tokens == 9 and capped.usage.completion_tokens_details.reasoning_tokens == 6
    assert capped.choices[0].finish_reason == "length"


def test_openai_usage_override(oai: openai.OpenAI) -> None:
    usage = {"input": 5000, "cached": 4096, "cache_write_5m": 100, "output": 700, "reasoning": 500}
    reply = oai.chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": "override"}], extra_body={"fake": {"usage": usage}}
    )
    assert reply.usage.prompt_tokens == 5000 and reply.usage.completion_tokens == 700
    assert reply.usage.prompt_tokens_details.cached_tokens == 4096
    assert reply.usage.completion_tokens_details.reasoning_tokens == 500
    assert reply.usage.total_tokens == 5700


def test_model_control_reports_another_model(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_body={"fake": {"model": "gpt-4o-2024-08-06"}}
    )
    assert reply.model == "gpt-4o-2024-08-06"


# --- Anthropic messages -----------------------------------------------------------------------------------------


def test_anthropic_json_shape_and_usage(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Hello there"}]
    )
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn" and message.model == CLAUDE
    words = message.content[0].text.split()
    assert message.usage.input_tokens == tok("Be brief.") + tok("Hello there")
    assert message.usage.output_tokens == len(words)
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0


def test_anthropic_system_blocks_and_max_tokens(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=CLAUDE,
        max_tokens=4,
        system=[{"type": "text", "text": "one "}, {"type": "text", "text": "two"}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "blocks"}]}],
    )
    assert message.usage.input_tokens == tok("one two") + tok("blocks")
    assert message.usage.output_tokens == 4 and message.stop_reason == "max_tokens"


def test_anthropic_stream_events(claude: anthropic.Anthropic) -> None:
    kwargs = {"model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "stream it"}]}
    full = claude.messages.create(**kwargs)
    events = list(claude.messages.create(stream=True, **kwargs))
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}  # the SDK consumes the ping
    start, delta = events[0], events[-2]
    assert start.message.usage.input_tokens == tok("stream it") and start.message.usage.output_tokens == 1
    assert delta.usage.output_tokens == full.usage.output_tokens and delta.delta.stop_reason == "end_turn"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == full.content[0].text
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == full.usage.output_tokens and final.content[0].text == text


def test_anthropic_stream_wire_has_ping(http: httpx.Client) -> None:
    body = {"model": CLAUDE, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "wire"}]}
    response = http.post("/v1/messages", json=body)
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-1] == "message_stop"


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_anthropic_cache_write_then_read(claude: anthropic.Anthropic, ttl: str) -> None:
    system_text = f"anthropic-cache-{ttl} " + LONG
    system = [{"type": "text", "text": system_text, "cache_control": {"type": "ephemeral", "ttl": ttl}}]
    first = claude.messages.create(
        model=CLAUDE, max_tokens=50, system=system, messages=[{"role": "user", "content": "first?"}]
    )
    written = tok(system_text)
    assert first.usage.cache_creation_input_tokens == written and first.usage.cache_read_input_tokens == 0
    assert getattr(first.usage.cache_creation, f"ephemeral_{ttl}_input_tokens") == written
    assert first.usage.input_tokens == tok("first?")  # excludes the cache write
    second = claude.messages.create(
        model=CLAUDE, max_tokens=50, system=system, messages=[{"role": "user", "content": "second?"}]
    )
    assert second.usage.cache_read_input_tokens == written and second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == tok("second?")


def test_anthropic_two_breakpoints_read_one_write_the_next(claude: anthropic.Anthropic) -> None:
    system_text = "two-breakpoints " + LONG
    system = [{"type": "text", "text": system_text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    claude.messages.create(model=CLAUDE, max_tokens=5, system=system, messages=[{"role": "user", "content": "warm"}])
    doc = "A long attached document. " * 20
    turn = [{"type": "text", "text": doc, "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Q?"}]
    message = claude.messages.create(
        model=CLAUDE, max_tokens=5, system=system, messages=[{"role": "user", "content": turn}]
    )
    assert message.usage.cache_read_input_tokens == tok(system_text)
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == tok(doc)
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert message.usage.input_tokens == tok(doc + "Q?") - tok(doc)


def test_anthropic_usage_override(claude: anthropic.Anthropic) -> None:
    usage = {"input": 3000, "cached": 1000, "cache_write_5m": 500, "cache_write_1h": 200, "output": 42}
    message = claude.messages.create(
        model=CLAUDE,
        max_tokens=100,
        messages=[{"role": "user", "content": "override"}],
        extra_body={"fake": {"usage": usage}},
    )
    assert message.usage.input_tokens == 1300
    assert message.usage.cache_read_input_tokens == 1000
    assert message.usage.cache_creation_input_tokens == 700
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 500
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 200
    assert message.usage.output_tokens == 42


def test_cache_entries_expire_by_ttl() -> None:
    memory = PrefixMemory()
    system = [{"type": "text", "text": "x" * 400, "cache_control": {"type": "ephemeral"}}]
    turns = [{"role": "user", "content": "q"}]
    assert account_anthropic(system, turns, CLAUDE, memory, now=0.0).write_5m == tok("x" * 400)
    assert account_anthropic(system, turns, CLAUDE, memory, now=299.0).read == tok("x" * 400)
    assert account_anthropic(system, turns, CLAUDE, memory, now=598.0).read > 0  # the hit refreshed it
    assert account_anthropic(system, turns, CLAUDE, memory, now=1000.0).read == 0
    long = [{"role": "system", "content": LONG}, {"role": "user", "content": "q"}]
    assert account_openai(long, "gpt-4o", memory, now=0.0).cached == 0
    assert account_openai(long, "gpt-4o", memory, now=10.0).cached > 0
    assert account_openai(long, "gpt-4o", memory, now=10_000.0).cached == 0


# --- Embeddings and models --------------------------------------------------------------------------------------


def test_embeddings_default_base64_and_float(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])  # SDK asks base64
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in result.data)
    assert abs(sum(v * v for v in result.data[0].embedding) - 1.0) < 1e-5
    assert result.usage.prompt_tokens == math.ceil(5 / 4) + math.ceil(10 / 4) == result.usage.total_tokens
    floats = oai.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)
    wide = oai.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=32)
    assert len(wide.data[0].embedding) == 32


def test_embeddings_base64_is_little_endian_float32(http: httpx.Client) -> None:
    body = {"model": "text-embedding-3-small", "input": "x", "encoding_format": "base64", "dimensions": 4}
    encoded = http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
    assert len(struct.unpack("<4f", base64.b64decode(encoded))) == 4


def test_models_list_in_each_provider_shape(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o" in ids and "gpt-5" in ids
    claude_ids = [m.id for m in claude.models.list()]
    assert CLAUDE in claude_ids


# --- Errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, openai.BadRequestError, None),
        (401, openai.AuthenticationError, "invalid_api_key"),
        (403, openai.PermissionDeniedError, "permission_denied"),
        (404, openai.NotFoundError, "model_not_found"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (500, openai.InternalServerError, None),
        (503, openai.InternalServerError, "service_unavailable"),
    ],
)
def test_openai_error_statuses(oai: openai.OpenAI, status: int, error: type[Exception], code: str | None) -> None:
    for stream in (False, True):
        with pytest.raises(error) as caught:
            oai.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "fail"}],
                stream=stream,
                extra_body={"fake": {"status": status, "retry_after": 7}},
            )
        assert caught.value.status_code == status and caught.value.code == code
        assert set(caught.value.body) == {"message", "type", "param", "code"}
        assert caught.value.response.headers["retry-after"] == "7"


def test_openai_429_has_default_retry_after(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_body={
            "fake": {"status": 429}
        })  # fmt: skip
    assert caught.value.response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_anthropic_error_statuses(claude: anthropic.Anthropic, status: int, error: type[Exception], kind: str) -> None:
    with pytest.raises(error) as caught:
        claude.messages.create(
            model=CLAUDE,
            max_tokens=10,
            messages=[{"role": "user", "content": "fail"}],
            extra_body={"fake": {"status": status}},
        )
    body = caught.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert caught.value.response.headers["request-id"] == body["request_id"]
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "1"


def test_header_controls_for_curl(http: httpx.Client) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "curl"}]}
    assert http.post("/v1/chat/completions", json=body, headers={"x-fake-status": "503"}).status_code == 503
    started = time.perf_counter()
    response = http.post("/v1/messages", json={**body, "max_tokens": 5}, headers={"x-fake-delay-ms": "60"})
    assert response.status_code == 200 and time.perf_counter() - started >= 0.06
    with_body = {**body, "fake": {"status": 200}}
    assert http.post("/v1/chat/completions", json=with_body, headers={"x-fake-status": "500"}).status_code == 200


def test_garbage_is_not_json(oai: openai.OpenAI, claude: anthropic.Anthropic, http: httpx.Client) -> None:
    garbage = {"fake": {"garbage": True}}
    with pytest.raises(ValueError):
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "g"}], extra_body=garbage)
    with pytest.raises(ValueError):
        list(
            oai.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "g"}], stream=True, extra_body=garbage
            )
        )
    with pytest.raises(ValueError):
        list(
            claude.messages.create(
                model=CLAUDE, max_tokens=5, messages=[{"role": "user", "content": "g"}], stream=True, extra_body=garbage
            )
        )
    response = http.post(
        "/v1/messages", json={"model": CLAUDE, "messages": [{"role": "user", "content": "g"}], **garbage}
    )
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_disconnect_after_breaks_the_stream(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    chunks: list[object] = []
    with pytest.raises(openai.APIConnectionError):
        stream = oai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "drop"}],
            stream=True,
            extra_body={"fake": {"disconnect_after": 3}},
        )
        chunks.extend(stream)
    assert len(chunks) <= 3
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "drop"}],
            extra_body={"fake": {"disconnect_after": 10}},
        )
    events: list[object] = []
    # the anthropic SDK lets its transport's error escape mid-stream; its transport is httpx2, not httpx
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        stream = claude.messages.create(
            model=CLAUDE,
            max_tokens=50,
            messages=[{"role": "user", "content": "drop"}],
            stream=True,
            extra_body={"fake": {"disconnect_after": 4}},
        )
        events.extend(stream)
    assert len(events) <= 3  # message_start, content_block_start, (the ping is swallowed), one delta


def test_malformed_and_incomplete_requests_are_400(http: httpx.Client, oai: openai.OpenAI) -> None:
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/embeddings"):
        response = http.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 400
    assert http.post("/v1/chat/completions", content=b"{nope").json()["error"]["type"] == "invalid_request_error"
    assert http.post("/v1/messages", content=b"{nope").json()["error"]["type"] == "invalid_request_error"
    missing_model = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert missing_model.status_code == 400 and missing_model.json()["error"]["param"] == "model"
    missing_messages = http.post("/v1/messages", json={"model": CLAUDE, "max_tokens": 5})
    assert missing_messages.status_code == 400 and missing_messages.json()["type"] == "error"
    with pytest.raises(openai.BadRequestError, match="fake"):
        oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_body={"fake": {"sttaus": 500}}
        )
    unknown = http.post("/v1/unknown", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"


def test_api_key_is_enforced_in_each_provider_shape() -> None:
    with BackgroundServer(create_fake_provider(api_key="sk-upstream")) as locked:
        with (
            openai.OpenAI(base_url=locked.url + "/v1", api_key="wrong", max_retries=0) as bad_oai,
            anthropic.Anthropic(base_url=locked.url, api_key="wrong", max_retries=0) as bad_claude,
            openai.OpenAI(base_url=locked.url + "/v1", api_key="sk-upstream", max_retries=0) as good_oai,
            anthropic.Anthropic(base_url=locked.url, api_key="sk-upstream", max_retries=0) as good_claude,
        ):
            messages = [{"role": "user", "content": "auth"}]
            with pytest.raises(openai.AuthenticationError) as caught:
                bad_oai.chat.completions.create(model="gpt-4o", messages=messages)
            assert caught.value.code == "invalid_api_key"
            with pytest.raises(anthropic.AuthenticationError) as caught_claude:
                bad_claude.messages.create(model=CLAUDE, max_tokens=5, messages=messages)
            assert caught_claude.value.response.json()["error"]["type"] == "authentication_error"
            with pytest.raises(openai.AuthenticationError):
                bad_oai.models.list()
            assert good_oai.chat.completions.create(model="gpt-4o", messages=messages).usage.prompt_tokens > 0
            assert good_claude.messages.create(model=CLAUDE, max_tokens=5, messages=messages).usage.output_tokens
            assert httpx.post(locked.url + "/v1/messages", json={}).status_code == 401


def test_received_records_what_was_sent(server: BackgroundServer, oai: openai.OpenAI, http: httpx.Client) -> None:
    received = server.app.state.received
    oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "record me"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"custom_field": {"kept": True}},
        extra_headers={"X-TokenOps-Tags": "team=search"},
    ).close()
    last = received[-1]
    assert last["method"] == "POST" and last["path"] == "/v1/chat/completions"
    assert last["body"]["custom_field"] == {"kept": True}
    assert last["body"]["stream_options"] == {"include_usage": True}
    assert last["headers"]["x-tokenops-tags"] == "team=search"
    assert last["headers"]["authorization"] == "Bearer sk-test"
    http.post("/v1/messages", content=b"{broken")
    assert received[-1]["body"] is None and received[-1]["path"] == "/v1/messages"
    assert received.maxlen == 1000


# --- BackgroundServer -------------------------------------------------------------------------------------------


def test_background_server_picks_free_ports_and_stops() -> None:
    app = create_fake_provider()
    first, second = BackgroundServer(app), BackgroundServer(app)
    with pytest.raises(RuntimeError):
        _ = first.url
    with first, second:
        url = first.url
        assert url != second.url and url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/v1/models").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v1/models")


class District(BaseModel):
    name: str
    area_km2: float


class City(BaseModel):
    name: str
    population: int
    coastal: bool
    founded: datetime.date | None
    districts: list[District]
    kind: Literal["capital", "port"]


def test_structured_output_follows_the_schema_in_json_and_streams(oai: openai.OpenAI) -> None:
    """What the SDKs' ``parse`` helpers and LangChain's ``with_structured_output`` ask for: a JSON answer that
    their own validation accepts, one output token per 4 characters, the same for the same prompt."""
    messages: Any = [{"role": "user", "content": "Describe Paris."}]
    done = oai.chat.completions.parse(model="gpt-4o-mini", messages=messages, response_format=City)
    city = done.choices[0].message.parsed
    assert isinstance(city, City) and city.kind == "capital" and len(city.districts) == 1
    text = done.choices[0].message.content or ""
    assert done.usage is not None and done.usage.completion_tokens == -(-len(text) // 4)
    again = oai.chat.completions.parse(model="gpt-4o-mini", messages=messages, response_format=City)
    assert again.choices[0].message.content == text
    with oai.chat.completions.stream(model="gpt-4o-mini", messages=messages, response_format=City) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == city
    plain = oai.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                        response_format={"type": "json_object"})  # fmt: skip
    assert set(json.loads(plain.choices[0].message.content or "")) == {"answer"}
    cut = oai.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=3,
                                      response_format={"type": "json_object"})  # fmt: skip
    assert cut.choices[0].finish_reason == "length" and len(cut.choices[0].message.content or "") == 12
    resp = oai.responses.parse(model="gpt-4o-mini", input="Describe Paris.", text_format=City)
    assert isinstance(resp.output_parsed, City)


TOOLS: Any = [
    {"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "book", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "nights": {"type": "integer"},
                                         "kind": {"enum": ["hotel", "flat"]}},
        "required": ["city", "nights", "kind"]}}},
]  # fmt: skip


def test_a_forced_tool_choice_is_obeyed_in_every_format(oai: openai.OpenAI, claude: anthropic.Anthropic,
                                                        http: httpx.Client) -> None:  # fmt: skip
    """As the real APIs do (and LangChain's function-calling structured output relies on): ``tool_choice`` naming
    a function, ``required`` / ``any`` or Gemini's mode ``ANY`` makes the model call it, with arguments that fit."""
    msgs: Any = [{"role": "user", "content": "Book Paris."}]
    named = oai.chat.completions.create(model="gpt-4o-mini", messages=msgs, tools=TOOLS,
                                        tool_choice={"type": "function", "function": {"name": "book"}})  # fmt: skip
    (call,) = named.choices[0].message.tool_calls or []
    assert named.choices[0].finish_reason == "tool_calls" and call.function.name == "book"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris", "nights": 1, "kind": "hotel"}  # type: ignore[union-attr]
    auto = oai.chat.completions.create(model="gpt-4o-mini", messages=msgs, tools=TOOLS)
    assert auto.choices[0].message.tool_calls is None  # not forced, not asked for: a text answer
    flat = [{"type": "function", **t["function"]} for t in TOOLS]
    resp = oai.responses.create(model="gpt-4o-mini", input="Book Paris.", tools=flat, tool_choice="required")
    assert resp.output[0].type == "function_call" and resp.output[0].name == "weather"
    anth_tools: Any = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in TOOLS]
    msg = claude.messages.create(model=CLAUDE, max_tokens=50, messages=msgs, tools=anth_tools,
                                 tool_choice={"type": "tool", "name": "book"})  # fmt: skip
    assert msg.stop_reason == "tool_use" and msg.content[0].type == "tool_use" and msg.content[0].name == "book"
    decls = [{"name": t["function"]["name"], "parametersJsonSchema": t["function"]["parameters"]} for t in TOOLS]
    r = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json={
        "contents": [{"role": "user", "parts": [{"text": "Book Paris."}]}], "tools": [{"functionDeclarations": decls}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["book"]}}})  # fmt: skip
    part = r.json()["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"] == {"name": "book", "args": {"city": "Paris", "nights": 1, "kind": "hotel"}}


class Node(BaseModel):
    label: str
    children: list[Node]
    parent: Node | None = None


class Shapes(BaseModel):
    confidence: float = Field(ge=0, le=1)
    above: float = Field(gt=1.5)
    below: int = Field(lt=0)
    tight: int = Field(gt=3, lt=5)
    code: str = Field(min_length=20, max_length=24)
    short: str = Field(max_length=2)
    link: HttpUrl
    ident: uuid.UUID
    at: datetime.time
    mail: str = Field(json_schema_extra={"format": "email"})
    pair: tuple[int, str]
    kinds: set[Literal["a", "b", "c"]] = Field(min_length=2)
    none: list[int] = Field(max_length=0)
    counts: dict[str, int]
    tree: Node


def test_json_instances_validate_against_the_models_they_come_from() -> None:
    """Schemas as pydantic writes them (the openai SDK's ``parse``, LangChain): bounds, lengths, formats, tuples,
    sets, recursion."""
    for model in (Shapes, Node, City):
        value = json_instance(model.model_json_schema(), bytes(range(64)))
        model.model_validate(value)  # raises if the instance does not fit
