"""Any model from any of the three formats, through real sockets with the official SDKs: a Claude model answers an
OpenAI-format call, a GPT model an Anthropic-format call, a Gemini model both, and GPT and Claude models a
google-genai call: text, system prompts, tools and tool calls, streaming, stop reasons and usage translated, each
call priced from the provider's own usage at the provider's published prices (gemini-2.5-flash: $0.30 input,
$2.50 output, https://ai.google.dev/gemini-api/docs/pricing).

Prices (read 2026-12-02): claude-haiku-4-5 $1 input, $0.10 cache read, $1.25 5-minute cache write, $5 output per
1M tokens (https://docs.anthropic.com/en/docs/about-claude/pricing); gpt-4o-mini $0.15 input, $0.075 cached
input, $0.60 output (https://platform.openai.com/docs/pricing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types

from harness import SocketStack

M = Decimal(1_000_000)
HAIKU = "claude-haiku-4-5"
WEATHER_OPENAI: Any = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"]}}}]  # fmt: skip
WEATHER_ANTHROPIC: Any = [{"name": "get_weather", "description": "Weather for a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]  # fmt: skip


def haiku_cost(u: dict[str, int]) -> Decimal:
    return (u["input_tokens"] * Decimal(1) + u["cache_read_input_tokens"] * Decimal("0.10")
            + u["cache_creation_input_tokens"] * Decimal("1.25") + u["output_tokens"] * Decimal(5)) / M  # fmt: skip


def mini_cost(prompt: int, cached: int, completion: int) -> Decimal:
    return ((prompt - cached) * Decimal("0.15") + cached * Decimal("0.075") + completion * Decimal("0.60")) / M


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SocketStack]:
    s = SocketStack(tmp_path_factory.mktemp("translate"), tags={"team": "tools"}, gemini=True)
    yield s
    s.close()


def _sent(stack: SocketStack) -> dict[str, Any]:
    return stack.fake.app.state.received[-1]  # type: ignore[attr-defined, no-any-return]


def test_claude_answers_an_openai_chat_call(stack: SocketStack, oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model=HAIKU, max_tokens=200, temperature=0.2, stop=["END"], user="alice",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise Q3."}])
    c = raw.parse()
    sent = _sent(stack)
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Summarise Q3."}]}]
    assert (sent["body"]["max_tokens"], sent["body"]["stop_sequences"], sent["body"]["metadata"]) == \
        (200, ["END"], {"user_id": "alice"})  # fmt: skip
    assert c.object == "chat.completion" and c.choices[0].message.content and c.choices[0].finish_reason == "stop"
    ev = stack.event(raw.headers["x-tokenops-request-id"])
    assert ev.provider == "anthropic" and ev.route == "chat.completions" and ev.end_user == "alice"
    assert c.usage is not None and c.usage.prompt_tokens == ev.usage.input_tokens
    assert c.usage.completion_tokens == ev.usage.output_tokens
    assert ev.cost_usd == haiku_cost({"input_tokens": ev.usage.uncached_input_tokens,
                                      "cache_read_input_tokens": ev.usage.cache_read_tokens,
                                      "cache_creation_input_tokens": ev.usage.cache_write_tokens,
                                      "output_tokens": ev.usage.output_tokens})  # fmt: skip


def test_claude_streams_in_openai_chunks_with_usage(stack: SocketStack, oai: openai.OpenAI) -> None:
    with oai.chat.completions.with_streaming_response.create(
            model=HAIKU, messages=[{"role": "user", "content": "Stream it"}], stream=True,
            stream_options={"include_usage": True}) as raw:  # fmt: skip
        chunks = list(raw.parse())
        request_id = raw.headers["x-tokenops-request-id"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    ev = stack.event(request_id)
    assert ev.provider == "anthropic" and ev.stream and not ev.usage_estimated
    assert (usage.prompt_tokens, usage.completion_tokens) == (ev.usage.input_tokens, ev.usage.output_tokens)


@pytest.mark.parametrize("stream", [False, True])
def test_claude_tool_calls_round_trip_in_openai_format(stack: SocketStack, oai: openai.OpenAI, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    fake = {"fake": {"tool_call": True}}
    if stream:
        with oai.chat.completions.with_streaming_response.create(model=HAIKU, messages=messages, stream=True,
                                                                 tools=WEATHER_OPENAI, extra_body=fake) as raw:
            chunks = list(raw.parse())
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        call_id, name = calls[0].id, calls[0].function.name  # type: ignore[union-attr]
        args = "".join(tc.function.arguments or "" for tc in calls)  # type: ignore[union-attr]
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    else:
        first = oai.chat.completions.create(model=HAIKU, messages=messages, tools=WEATHER_OPENAI,
                                            tool_choice="required", extra_body=fake)  # fmt: skip
        assert first.choices[0].finish_reason == "tool_calls"
        assert _sent(stack)["body"]["tool_choice"] == {"type": "any"}
        assert _sent(stack)["body"]["tools"][0]["input_schema"]["required"] == ["city"]
        tc = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments  # type: ignore[union-attr]
    assert name == "get_weather" and json.loads(args) == {"city": "Paris"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]  # fmt: skip
    answer = oai.chat.completions.create(model=HAIKU, messages=messages, tools=WEATHER_OPENAI, extra_body=fake)
    sent = _sent(stack)["body"]["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use" and sent[1]["content"][0]["input"] == {"city": "Paris"}
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": call_id, "content": "sunny"}]
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content


def test_gpt_answers_an_anthropic_messages_call(stack: SocketStack, claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=150, system="Be brief.", stop_sequences=["END"],
        messages=[{"role": "user", "content": "Summarise Q3."}])
    m = raw.parse()
    sent = _sent(stack)
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Summarise Q3."}]  # fmt: skip
    assert sent["body"]["stop"] == ["END"] and sent["body"]["max_tokens"] == 150
    assert m.type == "message" and m.content[0].type == "text" and m.stop_reason == "end_turn"
    ev = stack.event(raw.headers["x-tokenops-request-id"])
    assert ev.provider == "openai" and ev.route == "messages"
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == ev.usage.input_tokens
    assert ev.cost_usd == mini_cost(ev.usage.input_tokens, ev.usage.cache_read_tokens, ev.usage.output_tokens)


def test_gpt_streams_in_anthropic_events(stack: SocketStack, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=100,
                                messages=[{"role": "user", "content": "Stream it"}]) as s:  # fmt: skip
        text = "".join(s.text_stream)
        final = s.get_final_message()
        request_id = s.response.headers["x-tokenops-request-id"]
    assert text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    ev = stack.event(request_id)
    assert ev.provider == "openai" and ev.stream and not ev.usage_estimated
    assert final.usage.output_tokens == ev.usage.output_tokens


def test_gpt_tool_calls_in_anthropic_format(stack: SocketStack, claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model="gpt-4o-mini", max_tokens=100, tools=WEATHER_ANTHROPIC,
                               messages=[{"role": "user", "content": "Weather in Paris?"}],
                               extra_body={"fake": {"tool_call": True}})  # fmt: skip
    assert m.stop_reason == "tool_use"
    use = m.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    answer = claude.messages.create(model="gpt-4o-mini", max_tokens=100, tools=WEATHER_ANTHROPIC, messages=[
        {"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": [use.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}],
        extra_body={"fake": {"tool_call": True}})  # fmt: skip
    sent = _sent(stack)["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id and sent[2] == {"role": "tool", "tool_call_id": use.id,
                                                                     "content": "sunny"}  # fmt: skip
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"


def test_a_field_that_cannot_be_translated_is_a_400_naming_it(stack: SocketStack) -> None:
    h = {"authorization": f"Bearer {stack.key}"}
    for field, value in (("n", 2), ("logprobs", True), ("response_format", {"type": "json_object"}), ("seed", 7)):
        r = httpx.post(f"{stack.url}/v1/chat/completions", headers=h, json={
            "model": HAIKU, "messages": [{"role": "user", "content": "x"}], field: value})  # fmt: skip
        assert r.status_code == 400, (field, r.text)
        assert r.json()["error"]["param"] == field and r.json()["error"]["code"] == "untranslatable_field"
    r = httpx.post(f"{stack.url}/v1/messages", headers={"x-api-key": stack.key}, json={
        "model": "gpt-4o-mini", "max_tokens": 10, "top_k": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["type"] == "error" and "top_k" in r.json()["error"]["message"]


def test_a_provider_error_reaches_the_client_in_its_own_shape(stack: SocketStack) -> None:
    r = httpx.post(f"{stack.url}/v1/chat/completions", headers={"authorization": f"Bearer {stack.key}"}, json={
        "model": HAIKU, "messages": [{"role": "user", "content": "x"}], "fake": {"status": 429}})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_error"  # OpenAI's shape
    r = httpx.post(f"{stack.url}/v1/messages", headers={"x-api-key": stack.key}, json={
        "model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
        "fake": {"status": 500}})  # fmt: skip
    assert r.status_code == 500 and r.json()["type"] == "error"  # Anthropic's shape


def flash_cost(prompt: int, cached: int, output: int) -> Decimal:
    return ((prompt - cached) * Decimal("0.30") + cached * Decimal("0.03") + output * Decimal("2.50")) / M


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_answers_an_openai_chat_call(stack: SocketStack, oai: openai.OpenAI, stream: bool) -> None:
    msgs: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise Q3."}]
    if stream:
        with oai.chat.completions.with_streaming_response.create(model="gemini-2.5-flash", messages=msgs, stream=True,
                                                                 stream_options={"include_usage": True}) as raw:
            chunks = list(raw.parse())
            request_id = raw.headers["x-tokenops-request-id"]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert _sent(stack)["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        assert _sent(stack)["query"] == "alt=sse"
    else:
        raw = oai.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msgs, max_tokens=300)
        c = raw.parse()
        request_id = raw.headers["x-tokenops-request-id"]
        usage = c.usage
        sent = _sent(stack)["body"]
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["generationConfig"]["maxOutputTokens"] == 300 and c.choices[0].finish_reason == "stop"
    ev = stack.event(request_id)
    assert ev.provider == "google" and ev.route == "chat.completions" and not ev.usage_estimated
    assert usage is not None and usage.completion_tokens == ev.usage.output_tokens
    assert ev.cost_usd == flash_cost(ev.usage.input_tokens, ev.usage.cache_read_tokens, ev.usage.output_tokens)


def test_gemini_tool_calls_in_openai_format(stack: SocketStack, oai: openai.OpenAI) -> None:
    fake = {"fake": {"tool_call": True}}
    msgs: Any = [{"role": "user", "content": "Weather in Paris?"}]
    first = oai.chat.completions.create(model="gemini-2.5-flash", messages=msgs, tools=WEATHER_OPENAI, extra_body=fake)
    assert _sent(stack)["body"]["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    tc = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(tc.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": tc.id, "content": "sunny"}]  # fmt: skip
    answer = oai.chat.completions.create(model="gemini-2.5-flash", messages=msgs, tools=WEATHER_OPENAI, extra_body=fake)
    sent = _sent(stack)["body"]["contents"]
    assert sent[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert sent[2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"content": "sunny"}}
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content


def test_gemini_answers_an_anthropic_call_through_the_openai_format(stack: SocketStack,
                                                                  claude: anthropic.Anthropic) -> None:  # fmt: skip
    m = claude.messages.create(model="gemini-2.5-flash", max_tokens=200, system="Be brief.",
                               messages=[{"role": "user", "content": "Summarise Q3."}])  # fmt: skip
    assert m.type == "message" and m.content[0].type == "text" and m.stop_reason == "end_turn"
    with claude.messages.stream(model="gemini-2.5-flash", max_tokens=200,
                                messages=[{"role": "user", "content": "Stream it"}]) as s:  # fmt: skip
        text = "".join(s.text_stream)
        final = s.get_final_message()
        request_id = s.response.headers["x-tokenops-request-id"]
    assert text and final.usage.output_tokens > 0
    ev = stack.event(request_id)
    assert ev.provider == "google" and ev.route == "messages" and final.usage.output_tokens == ev.usage.output_tokens


# genai-prices lists Claude under Google too (Vertex AI), so a plain Claude name on a Gemini route finds the Gemini
# provider first; the anthropic/ prefix names the provider
@pytest.mark.parametrize("model,provider", [("gpt-4o-mini", "openai"), (f"anthropic/{HAIKU}", "anthropic")])
def test_google_genai_calls_gpt_and_claude(stack: SocketStack, model: str, provider: str) -> None:
    with genai.Client(api_key=stack.key, http_options=types.HttpOptions(base_url=stack.url)) as client:
        r = client.models.generate_content(model=model, contents="Summarise Q3.",
                                           config=types.GenerateContentConfig(system_instruction="Be brief.",
                                                                              max_output_tokens=120))  # fmt: skip
        assert r.text and r.usage_metadata is not None and r.candidates
        assert r.candidates[0].finish_reason == types.FinishReason.STOP
        ev = stack.event(str(r.sdk_http_response.headers["x-tokenops-request-id"]))  # type: ignore[union-attr]
        assert ev.provider == provider and ev.route == "gemini.generate"
        assert r.usage_metadata.candidates_token_count == ev.usage.output_tokens
        chunks = list(client.models.generate_content_stream(model=model, contents="Stream it"))
        assert "".join(c.text or "" for c in chunks) and chunks[-1].usage_metadata is not None
        sev = stack.event(str(chunks[0].sdk_http_response.headers["x-tokenops-request-id"]))  # type: ignore[union-attr]
        assert sev.provider == provider and sev.stream and not sev.usage_estimated
        assert chunks[-1].usage_metadata.candidates_token_count == sev.usage.output_tokens


def test_a_gemini_stream_without_alt_sse_gets_the_json_array(stack: SocketStack) -> None:
    r = httpx.post(f"{stack.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                   json={"contents": [{"parts": [{"text": "array please"}]}]}, headers={"x-goog-api-key": stack.key})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    events = r.json()
    assert isinstance(events, list) and events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert _sent(stack)["query"] == "alt=sse"  # metered as SSE upstream
    ev = stack.event(r.headers["x-tokenops-request-id"])
    assert ev.usage.output_tokens == events[-1]["usageMetadata"]["candidatesTokenCount"] + \
        events[-1]["usageMetadata"].get("thoughtsTokenCount", 0)  # fmt: skip


def test_gemini_fields_with_no_openai_counterpart_are_a_400(stack: SocketStack) -> None:
    r = httpx.post(f"{stack.url}/v1beta/models/gpt-4o-mini:generateContent", headers={"x-goog-api-key": stack.key},
                   json={"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"topK": 3}})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "topK" in r.json()["error"]["message"]
