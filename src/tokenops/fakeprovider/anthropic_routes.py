"""Anthropic routes of the fake: ``/v1/messages`` (JSON and SSE), ``/v1/messages/count_tokens`` and the Anthropic
shape of ``/v1/models``.

Field names and event order follow the official ``anthropic`` SDK's types (``Message``, ``Usage``,
``RawMessageStreamEvent``) and what the live API sends, including the cumulative usage in ``message_delta``.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from .accounting import (
    Completion,
    Reported,
    account_anthropic,
    first_tool_call,
    forced_tool,
    make_completion,
    resolve_usage,
)
from .exchange import Exchange, begin
from .wire import ANTHROPIC, GARBAGE_JSON, JSON, EventStream, TruncatedResponse, error_response, json_response, sse

MODELS = (
    ("claude-opus-4-7", "Claude Opus 4.7"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
)
_GARBAGE_SSE = [b'event: message_start\ndata: {"type": "message_start", <html>\n\n']


def _usage(r: Reported, output_tokens: int, tier: str = "standard") -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` excludes cache reads and writes, which are reported beside it.
    ``tier``: the service tier that served it (a request's ``service_tier: "auto"`` is served by Priority Tier
    here, ``"standard_only"`` or none by the standard tier)."""
    searches = {"server_tool_use": {"web_search_requests": r.web_searches}} if r.web_searches else {}
    return {
        "input_tokens": r.input - r.cached - r.write_5m - r.write_1h,
        "cache_creation_input_tokens": r.write_5m + r.write_1h,
        "cache_read_input_tokens": r.cached,
        "cache_creation": {"ephemeral_5m_input_tokens": r.write_5m, "ephemeral_1h_input_tokens": r.write_1h},
        "output_tokens": output_tokens,
        "service_tier": tier,
        **searches,
    }


def _invalid(message: str) -> Response:
    return error_response(ANTHROPIC, 400, message)


def _prompt(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], Any] | Response:
    """The model, messages and system prompt of a messages or count_tokens body, or the 400 that says which is
    wrong."""
    model, turns, system = body.get("model"), body.get("messages"), body.get("system")
    if not isinstance(model, str) or not model:
        return _invalid("model: Field required")
    if not isinstance(turns, list) or not turns or not all(isinstance(m, dict) for m in turns):
        return _invalid("messages: Field required")
    if system is not None and not isinstance(system, str | list):
        return _invalid("system: Input should be a valid string or a list of text blocks")
    return model, turns, system


async def messages(request: Request) -> ASGIApp:
    ex = await begin(request, ANTHROPIC)
    if isinstance(ex, Response):
        return ex
    body = ex.body
    prompt_fields = _prompt(body)
    if isinstance(prompt_fields, Response):
        return prompt_fields
    model, turns, system = prompt_fields
    cap = body.get("max_tokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        return _invalid("max_tokens: Input should be an integer greater than or equal to 1")
    controls = ex.controls
    override = controls.usage
    state = request.app.state
    prompt = account_anthropic(system, turns, model, None if override else state.anthropic_cache, state.clock())
    max_words = None
    if override is not None and override.output is not None:
        max_words = override.output - (override.reasoning or 0)
    completion = make_completion(prompt.seed, model, cap, max_words=max_words, think=controls.think)
    usage = resolve_usage(prompt.tokens, prompt.read, prompt.write_5m, prompt.write_1h, completion, override)
    message = {
        "id": "msg_01" + ex.headers[ANTHROPIC.request_id_header][8:30],
        "type": "message",
        "role": "assistant",
        "model": controls.model or model,
        "content": [{"type": "text", "text": completion.text}],
        "stop_reason": "max_tokens" if completion.truncated else "end_turn",
        "stop_sequence": None,
        "usage": _usage(usage, usage.output, "priority" if body.get("service_tier") == "auto" else "standard"),
    }
    tool = _tool_use(body, turns) if controls.tool_call or forced_tool(body.get("tool_choice"))[0] else None
    if tool is not None:
        message["content"], message["stop_reason"] = [tool], "tool_use"
    if body.get("stream") is True:
        return _stream(ex, message, completion, usage)
    if controls.garbage:
        return Response(GARBAGE_JSON, headers=ex.headers, media_type=JSON)
    if controls.disconnect_after is not None:
        return TruncatedResponse(bytes(json_response(message, ex.headers).body), ex.headers, controls.disconnect_after)
    return json_response(message, ex.headers)


async def count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: the prompt's tokens as ``/v1/messages`` would count them (cache
    breakpoints are not applied: counting never reads or writes the cache), free, answered in Anthropic's shape."""
    ex = await begin(request, ANTHROPIC)
    if isinstance(ex, Response):
        return ex
    prompt_fields = _prompt(ex.body)
    if isinstance(prompt_fields, Response):
        return prompt_fields
    model, turns, system = prompt_fields
    prompt = account_anthropic(system, turns, model, None, request.app.state.clock())
    return json_response({"input_tokens": prompt.tokens}, ex.headers)


def _stream(ex: Exchange, message: dict[str, Any], completion: Completion, usage: Reported) -> EventStream:
    controls = ex.controls
    delay_s = controls.chunk_delay_ms / 1000
    if controls.garbage:
        return EventStream(list(_GARBAGE_SSE), ex.headers, delay_s=delay_s, abort_after=controls.disconnect_after)
    start = {**message, "content": [], "stop_reason": None,
             "usage": _usage(usage, 1, message["usage"]["service_tier"])}  # fmt: skip
    final_usage = _usage(usage, usage.output)
    del final_usage["cache_creation"], final_usage["service_tier"]
    block = message["content"][0]
    opening = {**block, "input": {}} if block["type"] == "tool_use" else {"type": "text", "text": ""}
    events = [
        sse({"type": "message_start", "message": start}, "message_start"),
        sse({"type": "content_block_start", "index": 0, "content_block": opening}, "content_block_start"),
        sse({"type": "ping"}, "ping"),
    ]  # fmt: skip
    if block["type"] == "tool_use":  # the call's input streams as JSON text
        events.append(sse({"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}}, "content_block_delta"))
    else:
        events += [
            sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                "content_block_delta")
            for piece in completion.pieces(controls.chunks)
        ]  # fmt: skip
    events += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
             "usage": final_usage}, "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]  # fmt: skip
    return EventStream(events, ex.headers, delay_s=delay_s, abort_after=controls.disconnect_after)


def _tool_use(body: dict[str, Any], turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A ``tool_use`` block calling the first custom tool (``"Paris"`` for each required string input), unless the
    conversation already ends with a tool's result."""
    last = turns[-1].get("content") if turns else None
    if isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last):
        return None
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") in (None, "custom")]
    if not tools:
        return None
    call = first_tool_call([{"type": "function", "function": {"name": t.get("name"), "parameters": t.get("input_schema")}}
                            for t in tools], forced_tool(body.get("tool_choice"))[1])  # fmt: skip
    if call is None:
        return None
    return {"type": "tool_use", "id": "toolu_01" + uuid.uuid4().hex[:22], "name": call[0],
            "input": orjson.loads(call[1])}


def model_list(created_at: str) -> dict[str, Any]:
    data = [{"type": "model", "id": m, "display_name": name, "created_at": created_at} for m, name in MODELS]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
