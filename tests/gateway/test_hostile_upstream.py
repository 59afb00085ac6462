"""A provider that answers garbage: every call that reached it is recorded once, correctly or flagged as
estimated, the client's stream is never cut by a malformed event, and nothing reaches a 500."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from harness import GatewayHarness, sql_value
from hostile import HostileUpstream, anthropic_stream, openai_chunk, openai_json, openai_usage, sse
from tokenops.servers import BackgroundServer
from tokenops.services.reports import spend_report

CHAT = "/v1/chat/completions"
MSG = "/v1/messages"
HUGE = 10**19


def chat(hostile: dict[str, Any], *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "stream": stream,
            "hostile": hostile, **extra}  # fmt: skip


def msg(hostile: dict[str, Any], *, stream: bool = True) -> dict[str, Any]:
    return {"model": "claude-3-5-haiku-20241022", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": "hello"}], "hostile": hostile}  # fmt: skip


@pytest.fixture
async def hgw(make_gateway: Any) -> GatewayHarness:
    return await make_gateway(transport=httpx.ASGITransport(app=HostileUpstream()), key_tags={"team": "t"})


def times_recorded(h: GatewayHarness, request_id: str) -> int:
    h.flush()
    return int(sql_value(h.ledger, "SELECT count(*) FROM events WHERE request_id = ?", [request_id]))


async def post(h: GatewayHarness, body: dict[str, Any], path: str = CHAT) -> httpx.Response:
    headers = h.auth() if path == CHAT else {"x-api-key": h.key}
    return await h.client.post(path, json=body, headers=headers)


# --- absurd usage -------------------------------------------------------------------------------------
@pytest.mark.parametrize("usage", [openai_usage(HUGE, 5), openai_usage(10, HUGE), openai_usage(10**12, 5),
                                   {"prompt_tokens": 10, "completion_tokens": 5,
                                    "prompt_tokens_details": {"cached_tokens": HUGE}}])  # fmt: skip
async def test_absurd_usage_is_estimated_and_flagged_and_the_ledger_keeps_draining(hgw: GatewayHarness,
                                                                                  usage: dict[str, Any]) -> None:  # fmt: skip
    r = await post(hgw, chat({"json": openai_json(usage)}))
    assert r.status_code == 200
    assert Decimal(r.headers["x-tokenops-cost-usd"]) < Decimal("0.01"), "an absurd count priced as if it were real"
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage_estimated and ev.error_code == "usage_implausible" and ev.status == "ok"
    assert ev.usage.input_tokens < 1000
    after = await post(hgw, chat({"json": openai_json()}))
    later = hgw.event(after.headers["x-tokenops-request-id"])  # the drain after it still works
    assert later.usage.input_tokens == 10 and not later.usage_estimated
    report = spend_report(hgw.ledger, by=["team"])
    assert report.total_cost_usd < Decimal("0.01")


async def test_absurd_usage_in_streams_is_estimated(hgw: GatewayHarness) -> None:
    events = [sse(openai_chunk()), sse(openai_chunk(choices=[], usage=openai_usage(HUGE, 3))), "data: [DONE]\n\n"]
    r = await post(hgw, chat({"events": events}, stream=True))
    assert r.status_code == 200 and "[DONE]" in r.text
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage_estimated and ev.error_code == "usage_implausible" and ev.usage.input_tokens < 1000
    start = {"id": "m", "model": "claude-3-5-haiku-20241022", "usage": {"input_tokens": HUGE, "output_tokens": 1}}
    r = await post(hgw, msg({"events": anthropic_stream(start=start)}), MSG)
    assert r.status_code == 200 and "message_stop" in r.text
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage_estimated and ev.error_code == "usage_implausible"


async def test_usage_given_as_strings_is_read_exactly(hgw: GatewayHarness) -> None:
    r = await post(hgw, chat({"json": openai_json({"prompt_tokens": "12", "completion_tokens": "5"})}))
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert (ev.usage.input_tokens, ev.usage.output_tokens, ev.usage_estimated) == (12, 5, False)
    events = [sse(openai_chunk()), sse(openai_chunk(choices=[], usage={"prompt_tokens": "12",
                                                                       "completion_tokens": 5.0})), "data: [DONE]\n\n"]
    r = await post(hgw, chat({"events": events}, stream=True))
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert (ev.usage.input_tokens, ev.usage.output_tokens, ev.usage_estimated) == (12, 5, False)


@pytest.mark.parametrize("usage", [{"prompt_tokens": "lots", "completion_tokens": 5},
                                   {"prompt_tokens": -3, "completion_tokens": 5},
                                   {"prompt_tokens": 1.5, "completion_tokens": 5},
                                   {"prompt_tokens": True, "completion_tokens": 5}, "usage", [1, 2]])  # fmt: skip
async def test_usage_that_cannot_be_trusted_is_estimated(hgw: GatewayHarness, usage: Any) -> None:
    r = await post(hgw, chat({"json": openai_json(usage)}))
    assert r.status_code == 200
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage_estimated and ev.error_code in ("usage_malformed", "usage_missing") and ev.usage.input_tokens > 0


# --- malformed stream events --------------------------------------------------------------------------
async def test_choices_of_the_wrong_type_do_not_cut_the_stream(hgw: GatewayHarness) -> None:
    events = [sse(openai_chunk()), sse({"id": "x", "model": "gpt-4o-mini", "choices": 1}),
              sse({"id": "x", "choices": [1, "a", {"delta": 5}, {"delta": {"content": 7}}]}),
              sse(openai_chunk(choices=[], usage=openai_usage(11, 4))), "data: [DONE]\n\n"]  # fmt: skip
    r = await post(hgw, chat({"events": events}, stream=True))
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    rid = r.headers["x-tokenops-request-id"]
    ev = hgw.event(rid)
    assert (ev.usage.input_tokens, ev.usage.output_tokens, ev.usage_estimated, ev.status) == (11, 4, False, "ok")
    assert times_recorded(hgw, rid) == 1


@pytest.mark.parametrize("start", ["a string", ["a", "list"], 7, None])
async def test_anthropic_message_start_of_the_wrong_shape(hgw: GatewayHarness, start: Any) -> None:
    r = await post(hgw, msg({"events": anthropic_stream(start=start if start is not None else {"usage": "x"})}), MSG)
    assert r.status_code == 200 and "message_stop" in r.text
    rid = r.headers["x-tokenops-request-id"]
    ev = hgw.event(rid)
    assert ev.status == "ok" and ev.usage.output_tokens == 7 and times_recorded(hgw, rid) == 1


@pytest.mark.parametrize("delta", [["not", "an", "object"], "text", {"usage": [1]}, {"usage": {"output_tokens": "x"}}])
async def test_anthropic_message_delta_of_the_wrong_shape(hgw: GatewayHarness, delta: Any) -> None:
    r = await post(hgw, msg({"events": anthropic_stream(delta=delta)}), MSG)
    assert r.status_code == 200 and "message_stop" in r.text
    rid = r.headers["x-tokenops-request-id"]
    ev = hgw.event(rid)
    assert ev.status == "ok" and ev.usage.input_tokens == 12 and times_recorded(hgw, rid) == 1
    if delta == {"usage": {"output_tokens": "x"}}:
        assert ev.usage_estimated and ev.error_code == "usage_malformed"


async def test_a_second_done_is_neither_relayed_nor_recorded(hgw: GatewayHarness) -> None:
    events = [sse(openai_chunk()), sse(openai_chunk(choices=[], usage=openai_usage(9, 2))), "data: [DONE]\n\n",
              "data: [DONE]\n\n", sse(openai_chunk("late")), "data: [DONE]\n\n"]  # fmt: skip
    r = await post(hgw, chat({"events": events}, stream=True))
    assert r.text.count("[DONE]") == 1 and "late" not in r.text
    rid = r.headers["x-tokenops-request-id"]
    assert times_recorded(hgw, rid) == 1 and hgw.event(rid).usage.input_tokens == 9


@pytest.mark.parametrize("done", ["data: [DONE]", "data: [DONE]\n", "data:[DONE]\r\n\r\n", "data: [DONE] \n\n"])
async def test_done_without_blank_line_or_with_odd_spacing_still_ends_the_call(hgw: GatewayHarness, done: str) -> None:
    events = [sse(openai_chunk()), sse(openai_chunk(choices=[], usage=openai_usage(9, 2))), done]
    r = await post(hgw, chat({"events": events}, stream=True))
    assert r.status_code == 200 and "[DONE]" in r.text
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "ok" and not ev.usage_estimated and ev.usage.input_tokens == 9


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
async def test_cr_line_ends_are_events_too(hgw: GatewayHarness, newline: str) -> None:
    events = [e.replace("\n", newline) for e in
              [sse(openai_chunk()), sse(openai_chunk(choices=[], usage=openai_usage(9, 2))), "data: [DONE]\n\n"]]
    # split a CR LF pair between two pieces, as a network can
    pieces = ["".join(events)[:30], "".join(events)[30:]]
    r = await post(hgw, chat({"events": pieces}, stream=True))
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "ok" and not ev.usage_estimated and ev.usage.input_tokens == 9
    cr = await post(hgw, msg({"events": [e.replace("\n", newline) for e in anthropic_stream()]}), MSG)
    ev = hgw.event(cr.headers["x-tokenops-request-id"])
    assert ev.status == "ok" and (ev.usage.input_tokens, ev.usage.output_tokens) == (12, 7)


async def test_usage_after_done_is_waited_for_and_used(hgw: GatewayHarness) -> None:
    events = [sse(openai_chunk()), "data: [DONE]\n\n", sse(openai_chunk(choices=[], usage=openai_usage(9, 2)))]
    r = await post(hgw, chat({"events": events}, stream=True, stream_options={"include_usage": True}))
    assert r.text.rstrip().endswith("[DONE]")
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert ev.status == "ok" and not ev.usage_estimated and (ev.usage.input_tokens, ev.usage.output_tokens) == (9, 2)


async def test_a_stream_without_usage_is_estimated_from_what_was_sent_and_relayed(hgw: GatewayHarness) -> None:
    events = [sse(openai_chunk("word " * 40)), "data: [DONE]\n\n"]
    r = await post(hgw, chat({"events": events}, stream=True))
    ev = hgw.event(r.headers["x-tokenops-request-id"])
    assert ev.usage_estimated and ev.error_code == "usage_missing"
    assert ev.usage.output_tokens == 50 and ev.usage.input_tokens > 0


# --- text that becomes a header --------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["模型-x", "gpt\r\nx-evil: 1", "nul\x00model", "a" * 5000, "caf\u00e9%41"])
async def test_a_model_name_echoed_by_the_provider_never_breaks_the_response(hgw: GatewayHarness, model: str) -> None:
    r = await post(hgw, chat({"json": openai_json(model=model)}))
    assert r.status_code == 200 and "x-evil" not in r.headers
    assert r.headers["x-tokenops-model"].isascii() and "\r" not in r.headers["x-tokenops-model"]
    rid = r.headers["x-tokenops-request-id"]
    ev = hgw.event(rid)
    assert times_recorded(hgw, rid) == 1 and ev.status == "ok"
    assert ev.model_used in (model, "gpt-4o-mini") and ev.model_used.isprintable() and len(ev.model_used) <= 256


async def test_non_latin1_header_values_from_the_provider_are_relayed_safely(hgw: GatewayHarness) -> None:
    r = await post(hgw, chat({"json": openai_json(), "headers": [["x-request-id", "r\u00e9q"]]}))
    assert r.status_code == 200 and r.headers["x-request-id"].isascii()


# --- calls that break after the provider saw them -------------------------------------------------------
@pytest.mark.parametrize(("script", "status", "code"), [
    ({"json": openai_json(), "split": 3, "break_after": 1}, 502, "upstream_unreachable"),
    ({"json": openai_json(), "split": 3, "timeout_after": 2}, 504, "upstream_timeout"),
    ({"raw": "<html>502 Bad Gateway</html>"}, 502, "upstream_invalid_response"),
    ({"json": [1, 2, 3]}, 502, "upstream_invalid_response"),
])  # fmt: skip
async def test_json_calls_that_break_are_recorded_estimated_not_at_zero(hgw: GatewayHarness, script: dict[str, Any],
                                                                         status: int, code: str) -> None:  # fmt: skip
    body = chat(script)
    body["messages"] = [{"role": "user", "content": "x" * 4000}]
    r = await post(hgw, body)
    assert r.status_code == status and r.json()["error"]["code"] == code
    rid = r.headers["x-tokenops-request-id"]
    ev = hgw.event(rid)
    assert ev.status == "error" and ev.usage_estimated and ev.usage.input_tokens >= 1000
    assert ev.cost_usd is not None and ev.cost_usd > 0
    assert r.headers["x-tokenops-cost-usd"] == str(ev.cost_usd.normalize()) or Decimal(r.headers["x-tokenops-cost-usd"]) == ev.cost_usd
    assert times_recorded(hgw, rid) == 1


async def test_a_stream_that_breaks_is_recorded_once_estimated_and_told_in_band(make_gateway: Any) -> None:
    with BackgroundServer(HostileUpstream()) as server:  # a real socket: the break comes mid-stream
        hgw = await make_gateway(transport=httpx.AsyncHTTPTransport(), upstream=server.url)
        events = [sse(openai_chunk("partial answer")), sse(openai_chunk("more")), "data: [DONE]\n\n"]
        r = await post(hgw, chat({"events": events, "break_after": 2}, stream=True))
    assert r.status_code == 200 and "upstream_stream_broken" in r.text and "partial answer" in r.text
    rid = r.headers["x-tokenops-request-id"]
    ev = hgw.event(rid)
    assert ev.status == "error" and ev.usage_estimated and times_recorded(hgw, rid) == 1
    assert ev.usage.output_tokens > 0 and ev.usage.input_tokens > 0


async def test_a_connection_never_made_costs_nothing(make_gateway: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    h = await make_gateway(transport=httpx.MockTransport(refuse))
    r = await h.client.post(CHAT, json=chat({}), headers=h.auth())
    assert r.status_code == 502
    ev = h.event(r.headers["x-tokenops-request-id"])
    assert ev.cost_usd == 0 and not ev.usage_estimated


async def test_an_answer_whose_usage_was_estimated_is_not_cached(make_gateway: Any) -> None:
    """It may not be whole (a stream cut before its usage): asked again, the provider answers again."""
    h = await make_gateway("cache: {mode: exact, ttl: 600}\n", transport=httpx.ASGITransport(app=HostileUpstream()))
    events = [sse(openai_chunk("word " * 40)), "data: [DONE]\n\n"]
    for _ in range(2):
        r = await post(h, chat({"events": events}, stream=True, temperature=0))
        assert r.status_code == 200 and r.headers["x-tokenops-cache"] == "miss"
        assert h.event(r.headers["x-tokenops-request-id"]).usage_estimated


@pytest.mark.parametrize("says", ["true", "false"])
async def test_the_providers_retry_advice_reaches_the_client(hgw: GatewayHarness, says: str) -> None:
    error = {"error": {"type": "server_error", "code": None, "message": "boom"}}
    r = await post(hgw, chat({"status": 500, "json": error, "headers": [["x-should-retry", says]]}))
    assert r.status_code == 500 and r.headers["x-should-retry"] == says


@pytest.mark.parametrize(("path", "body", "answer"), [
    (":embedContent", {"content": {"parts": [{"text": "x"}]}}, {}),
    (":embedContent", {"content": {"parts": [{"text": "x"}]}}, {"embedding": {"values": []}}),
    (":batchEmbedContents", {"requests": [{"content": {"parts": [{"text": "a"}]}},
                                          {"content": {"parts": [{"text": "b"}]}}]},
     {"embeddings": [{"values": [0.1, 0.2]}]}),  # one vector for two texts
])  # fmt: skip
async def test_a_gemini_embedding_answer_that_is_not_whole_is_not_cached(make_gateway: Any, path: str,
                                                                         body: dict[str, Any],
                                                                         answer: dict[str, Any]) -> None:  # fmt: skip
    """Google reports no usage for embeddings, so whether the vectors are there is what tells a whole answer."""
    from harness import FAKE_URL, PROVIDER_KEY

    h = await make_gateway("cache: {mode: exact, ttl: 600}\n", transport=httpx.ASGITransport(app=HostileUpstream()),
                           providers=f'  google: {{base_url: "{FAKE_URL}", kind: gemini, api_key: {PROVIDER_KEY}}}\n')  # fmt: skip
    for _ in range(2):
        r = await h.client.post(f"/v1beta/models/gemini-embedding-001{path}", headers=h.auth(),
                                json={**body, "hostile": {"json": answer}})  # fmt: skip
        assert r.status_code == 200 and r.headers["x-tokenops-cache"] == "miss", r.text
