"""Fuzz every provider adapter with malformed answers (hypothesis): JSON bodies of any shape, streams of random
events cut at random places. Whatever the provider sends: no exception escapes (no 500, no adapter error
logged), the client's response completes, and every call is recorded exactly once with usage the ledger can
hold."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import create_key, sql, sql_value, write_config
from hostile import HostileUpstream, anthropic_stream, openai_chunk, openai_json, sse
from tokenops.app import create_app
from tokenops.gateway.app import Gateway
from tokenops.usage import MAX_CALL_TOKENS

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
counts = st.one_of(st.integers(-5, 2**66), st.text(max_size=5), st.floats(allow_nan=False), st.none(), json_values)
usages = st.one_of(json_values, st.fixed_dictionaries({"prompt_tokens": counts, "completion_tokens": counts}),
                   st.fixed_dictionaries({"input_tokens": counts, "output_tokens": counts,
                                          "cache_read_input_tokens": counts}))  # fmt: skip
done = st.sampled_from(["data: [DONE]\n\n", "data: [DONE]", "data:[DONE]\r\n\r\n", "data: [DONE]\r"])


openai_events = st.one_of(
    st.builds(lambda c: sse(openai_chunk(c)), st.text(max_size=10)),
    st.builds(lambda c: sse({"id": "x", "choices": c}), json_values),
    st.builds(lambda u: sse(openai_chunk(choices=[], usage=u)), usages),
    st.builds(lambda v: "data: " + json.dumps(v) + "\n\n", json_values),
    st.sampled_from([": keep-alive\n\n", "data: {broken\n\n", "event: x\n\n", "\n\n", "data:\n\n"]),
    done,
)
anthropic_names = st.sampled_from(["message_start", "content_block_start", "content_block_delta", "message_delta",
                                   "message_stop", "ping", "error", "weird"])  # fmt: skip
anthropic_events = st.one_of(
    st.builds(lambda n, v: sse({"type": n, "message": v, "delta": v, "usage": v}, n), anthropic_names, json_values),
    st.builds(lambda u: sse({"type": "message_start", "message": {"id": "m", "model": "c", "usage": u}},
                            "message_start"), usages),  # fmt: skip
    st.builds(lambda u: sse({"type": "message_delta", "usage": u}, "message_delta"), usages),
    st.sampled_from(anthropic_stream()),
)

response_names = st.sampled_from(["response.created", "response.in_progress", "response.output_text.delta",
                                  "response.completed", "response.incomplete", "response.failed", "error", "weird"])
responses_events = st.one_of(
    st.builds(lambda n, v, d: sse({"type": n, "response": v, "delta": d}, n), response_names, json_values,
              json_values),  # fmt: skip
    st.builds(lambda n, u: sse({"type": n, "response": {"id": "r", "model": "gpt-4o-mini", "usage": u}}, n),
              response_names, usages),  # fmt: skip
    st.builds(lambda u: sse({"type": "response.completed", "response": {"id": "r", "usage": u}}), usages),
)

gemini_usages = st.one_of(json_values, st.fixed_dictionaries({
    "promptTokenCount": counts, "candidatesTokenCount": counts, "thoughtsTokenCount": counts,
    "cachedContentTokenCount": counts, "toolUsePromptTokenCount": counts}))  # fmt: skip
gemini_events = st.one_of(
    st.builds(lambda c, u: sse({"candidates": c, "usageMetadata": u}), json_values, gemini_usages),
    st.builds(lambda f, u: sse({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": f}],
                                "usageMetadata": u, "modelVersion": "gemini-2.5-flash"}), json_values, gemini_usages),
)


def _chunked(events: list[str], cuts: list[int]) -> list[str]:
    text = "".join(events)
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True) if text[a:b]] or [""]


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    flavor = draw(st.sampled_from(["openai", "anthropic", "responses", "gemini"]))
    stream = draw(st.booleans())
    if stream:
        kinds = {"openai": openai_events, "anthropic": anthropic_events, "responses": responses_events,
                 "gemini": gemini_events}
        events = draw(st.lists(kinds[flavor], max_size=8))
        hostile: dict[str, Any] = {"events": _chunked(events, draw(st.lists(st.integers(0, 5000), max_size=4)))}
        if draw(st.booleans()):
            hostile["break_after"] = draw(st.integers(0, len(hostile["events"])))
    else:
        body = draw(st.one_of(json_values, st.builds(openai_json, usages), st.builds(
            lambda u, m: {"id": "m", "model": m, "content": [], "usage": u}, usages, json_values), st.builds(
            lambda u, st_: {"id": "resp_x", "status": st_, "usage": u}, usages, json_values), st.builds(
            lambda c, u: {"candidates": c, "usageMetadata": u}, json_values, gemini_usages)))  # fmt: skip
        hostile = {"raw": json.dumps(body), "split": draw(st.integers(1, 3))}
        if draw(st.integers(0, 4)) == 0:
            hostile["break_after"] = draw(st.integers(0, 3))
    if flavor == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/gemini-2.5-flash:{method}", {"contents": [{"parts": [{"text": "hi"}]}],
                                                             "hostile": hostile}
    if flavor == "responses":
        return "/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "stream": stream, "hostile": hostile}
    if flavor == "openai":
        return "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                        "stream": stream, "hostile": hostile}  # fmt: skip
    return "/v1/messages", {"model": "claude-3-5-haiku-20241022", "max_tokens": 20, "stream": stream,
                            "messages": [{"role": "user", "content": "hi"}], "hostile": hostile}  # fmt: skip


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in ("tokenops.gateway", "tokenops.upstream"):
            self.messages.append(record.getMessage())


def test_no_answer_a_provider_can_give_escapes_or_goes_unrecorded(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    cfg = write_config(tmp_path, gemini=True)
    gw: Gateway = create_app(cfg, transport=httpx.ASGITransport(app=HostileUpstream()))
    _, key = create_key(gw.ledger)
    loop.run_until_complete(gw.start())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gateway.test")
    errors = _Errors()
    logging.getLogger("tokenops").addHandler(errors)
    answered: list[str] = []

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=cases())
    def one(case: tuple[str, dict[str, Any]]) -> None:
        path, body = case
        r = loop.run_until_complete(client.post(path, json=body, headers={"authorization": f"Bearer {key}"}))
        assert r.status_code in (200, 502, 504), (r.status_code, r.text, body)
        assert not errors.messages, (errors.messages, body)
        answered.append(r.headers["x-tokenops-request-id"])

    try:
        one()
    finally:
        logging.getLogger("tokenops").removeHandler(errors)
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(gw.close())
        loop.close()
    gw.ledger.drain(gw.spool_dir, gw.catalog.get)
    rows = dict(sql(gw.ledger, "SELECT request_id, count(*) FROM events GROUP BY 1"))
    biggest = sql_value(gw.ledger, "SELECT max(greatest(input_tokens, output_tokens)) FROM events")
    assert all(rows.get(rid) == 1 for rid in answered), "a call recorded twice, or not at all"
    assert biggest <= MAX_CALL_TOKENS
    assert not (gw.spool_dir / "rejected.log").exists()
    assert len(answered) >= 200
