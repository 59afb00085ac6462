"""OpenAI's Responses API in the fake: ``POST /v1/responses`` (JSON, SSE, ``background``), ``GET``/``DELETE``
``/v1/responses/{id}``, ``POST /v1/responses/{id}/cancel`` and ``GET /v1/responses/{id}/input_items``.

Shapes follow the official ``openai`` SDK's ``Response`` and ``ResponseStreamEvent`` types: a stream is
``response.created``, ``response.in_progress``, the output item and text events, then ``response.completed``
carrying the whole response with its usage (``input_tokens`` with ``input_tokens_details.cached_tokens``,
``output_tokens`` with ``output_tokens_details.reasoning_tokens``). Responses are stored on the app instance
(``store`` defaults to true) so that ``previous_response_id`` works: the earlier turn's input and output are
billed again as input, as OpenAI does.

``background: true`` answers ``status: "queued"`` without usage; the response completes when it is next
retrieved, or after ``fake.pending`` more retrievals that still see ``in_progress``. Cancelling a response that
has not completed answers ``status: "cancelled"`` with no usage.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from .accounting import (
    Reported,
    account_openai,
    first_tool_call,
    forced_tool,
    make_completion,
    openai_text,
    resolve_usage,
    structured,
)
from .controls import Controls
from .exchange import Exchange, begin
from .wire import OPENAI, EventStream, error_response, json_response, sse

TERMINAL = ("completed", "failed", "cancelled", "incomplete")
SERVICE_TIERS = {"auto": "default", "default": "default", "flex": "flex", "priority": "priority", "scale": "scale"}


@dataclass(slots=True)
class Stored:
    payload: dict[str, Any]
    input_items: list[dict[str, Any]]
    pending: int = 0  # retrievals still to see in_progress (background)
    final: dict[str, Any] = field(default_factory=dict)  # what the response becomes when it completes


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _items(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The input as a list of items (a string is one user message), or None when it is malformed."""
    given = body.get("input")
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    if isinstance(given, list) and all(isinstance(i, dict) for i in given):
        return list(given)
    return None


def _item_text(item: dict[str, Any]) -> str:
    if "content" in item:
        return openai_text(item.get("content"))
    for name in ("output", "arguments"):  # function_call_output, function_call
        if isinstance(item.get(name), str):
            return str(item[name])
    return ""


def usage_object(r: Reported) -> dict[str, Any]:
    """The Responses usage (web searches are not in it: they are ``web_search_call`` output items)."""
    return {
        "input_tokens": r.input,
        "input_tokens_details": {"cached_tokens": r.cached, "cache_write_tokens": r.write_5m + r.write_1h,
                                 **({"image_tokens": r.image_in} if r.image_in else {})},
        "output_tokens": r.output,
        "output_tokens_details": {"reasoning_tokens": r.reasoning,
                                  **({"image_tokens": r.image_out} if r.image_out else {})},
        "total_tokens": r.input + r.output,
    }


def _store(request: Request) -> dict[str, Stored]:
    return request.app.state.responses


def _not_found(response_id: str) -> Response:
    return error_response(OPENAI, 404, f"Response with id '{response_id}' not found.", code=None)


async def create(request: Request) -> ASGIApp:
    ex = await begin(request, OPENAI)
    if isinstance(ex, Response):
        return ex
    body = ex.body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_response(OPENAI, 400, "Missing required parameter: 'model'.", param="model",
                              code="missing_required_parameter")  # fmt: skip
    items = _items(body)
    if items is None:
        return error_response(OPENAI, 400, "Invalid 'input': expected a string or an array of input items.",
                              param="input")  # fmt: skip
    cap = body.get("max_output_tokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 16):
        return error_response(OPENAI, 400, "Invalid 'max_output_tokens': integer below minimum value. Expected a "
                              "value >= 16.", param="max_output_tokens", code="integer_below_min_value")  # fmt: skip
    tier = body.get("service_tier") or "auto"
    if tier not in SERVICE_TIERS:
        return error_response(OPENAI, 400, f"Invalid 'service_tier': {tier!r}.", param="service_tier")
    store = _store(request)
    previous_id = body.get("previous_response_id")
    carried = 0  # the earlier turns' tokens, billed again as input
    history: list[dict[str, Any]] = []
    if previous_id is not None:
        prev = store.get(previous_id) if isinstance(previous_id, str) else None
        if prev is None:
            return _not_found(str(previous_id))
        usage = prev.payload.get("usage") or {}
        carried = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        history = prev.input_items
    messages = [{"role": "system", "content": body["instructions"]}] if isinstance(body.get("instructions"), str) else []
    messages += [{"role": str(i.get("role", i.get("type", "user"))), "content": _item_text(i)} for i in items]
    controls = ex.controls
    state = request.app.state
    prompt = account_openai(messages, model, None if controls.usage else state.openai_cache, state.clock())
    max_words = None
    if controls.usage is not None and controls.usage.output is not None:
        max_words = controls.usage.output - (controls.usage.reasoning or 0)
    text_options = body.get("text")
    schema = structured(text_options.get("format")) if isinstance(text_options, dict) else None
    completion = make_completion(prompt.seed, model, cap, max_words=max_words, think=controls.think, schema=schema)
    reported = resolve_usage(prompt.tokens + carried, prompt.cached, 0, 0, completion, controls.usage)
    response_id = _id("resp_")
    message_id = _id("msg_")
    text_part = {"type": "output_text", "text": completion.text, "annotations": [], "logprobs": []}
    message = {"type": "message", "id": message_id, "status": "completed", "role": "assistant",
               "content": [text_part]}  # fmt: skip
    output: list[dict[str, Any]] = []
    if reported.reasoning:
        output.append({"type": "reasoning", "id": _id("rs_"), "summary": []})
    output += [{"type": "web_search_call", "id": _id("ws_"), "status": "completed",
                "action": {"type": "search", "query": "fake"}} for _ in range(reported.web_searches)]  # fmt: skip
    output += [{"type": "file_search_call", "id": _id("fs_"), "status": "completed", "queries": ["fake"],
                "results": None} for _ in range(reported.file_searches)]  # fmt: skip
    for _ in range(reported.code_containers):  # two runs in each container: one container, billed once
        container = _id("cntr_")
        output += [{"type": "code_interpreter_call", "id": _id("ci_"), "status": "completed", "code": "print(1)",
                    "container_id": container, "outputs": None} for _ in range(2)]  # fmt: skip
    call = _tool_call(body, items) if controls.tool_call or forced_tool(body.get("tool_choice"))[0] else None
    output.append(call or message)
    incomplete = completion.truncated
    head = _head(body, response_id, controls.model or model, SERVICE_TIERS[tier])
    final = {**head, "status": "incomplete" if incomplete else "completed", "output": output,
             "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
             "usage": usage_object(reported)}  # fmt: skip
    if call is not None:  # a tool call is a complete answer, whatever the output cap
        final["status"], final["incomplete_details"] = "completed", None
    input_items = history + [{**i, "id": i.get("id") or _id("msg_")} for i in items]
    background = body.get("background") is True
    if background:
        queued = {**head, "status": "queued", "output": [], "incomplete_details": None, "usage": None}
        store[response_id] = Stored(queued, input_items, pending=controls.pending, final=final)
        return json_response(queued, ex.headers)
    if body.get("store", True) is not False:
        store[response_id] = Stored(final, input_items)
    if body.get("stream") is True:
        return _stream(ex, head, final, completion.pieces(controls.chunks), message_id, text_part)
    return json_response(final, ex.headers)


def _tool_call(body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A call of the first function tool; None once the input ends with a tool's output (the agent ran the tool:
    now the model answers)."""
    if items and items[-1].get("type") == "function_call_output":
        return None
    call = first_tool_call(body.get("tools"), forced_tool(body.get("tool_choice"))[1])
    if call is None:
        return None
    name, arguments = call
    return {"type": "function_call", "id": _id("fc_"), "call_id": _id("call_"), "name": name, "arguments": arguments,
            "status": "completed"}


def _head(body: dict[str, Any], response_id: str, model: str, tier: str) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "background": body.get("background") is True,
        "error": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": tier,
        "store": body.get("store", True) is not False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _stream(ex: Exchange, head: dict[str, Any], final: dict[str, Any], pieces: list[str], message_id: str,
            text_part: dict[str, Any]) -> EventStream:  # fmt: skip
    controls: Controls = ex.controls
    seq = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    started = {**head, "status": "in_progress", "output": [], "incomplete_details": None, "usage": None}
    out_index = len(final["output"]) - 1  # the message (or tool call) is the last output item
    last = final["output"][out_index]
    if last["type"] == "function_call":
        events = [event("response.created", response=started), event("response.in_progress", response=started)]
        events.append(event("response.output_item.added", output_index=out_index, item={**last, "arguments": "",
                                                                                       "status": "in_progress"}))
        events.append(event("response.function_call_arguments.delta", item_id=last["id"], output_index=out_index,
                            delta=last["arguments"]))  # fmt: skip
        events.append(event("response.function_call_arguments.done", item_id=last["id"], output_index=out_index,
                            arguments=last["arguments"]))  # fmt: skip
        events.append(event("response.output_item.done", output_index=out_index, item=last))
        events.append(event("response.completed", response={**final, "status": "completed"}))
        return EventStream(events, ex.headers, delay_s=controls.chunk_delay_ms / 1000,
                           abort_after=controls.disconnect_after)  # fmt: skip
    loc = {"item_id": message_id, "output_index": out_index, "content_index": 0}
    events = [event("response.created", response=started), event("response.in_progress", response=started)]
    if out_index:
        events.append(event("response.output_item.added", output_index=0, item=final["output"][0]))
        events.append(event("response.output_item.done", output_index=0, item=final["output"][0]))
    events.append(event("response.output_item.added", output_index=out_index,
                        item={"type": "message", "id": message_id, "status": "in_progress", "role": "assistant",
                              "content": []}))  # fmt: skip
    events.append(event("response.content_part.added", **loc,
                        part={"type": "output_text", "text": "", "annotations": [], "logprobs": []}))  # fmt: skip
    events += [event("response.output_text.delta", **loc, delta=p, logprobs=[]) for p in pieces]
    events.append(event("response.output_text.done", **loc, text=text_part["text"], logprobs=[]))
    events.append(event("response.content_part.done", **loc, part=text_part))
    events.append(event("response.output_item.done", output_index=out_index, item=final["output"][out_index]))
    events.append(event(f"response.{final['status']}", response=final))
    return EventStream(events, ex.headers, delay_s=controls.chunk_delay_ms / 1000,
                       abort_after=controls.disconnect_after)  # fmt: skip


async def _find(request: Request) -> tuple[Exchange, str, Stored] | Response:
    """The preamble of the routes on one stored response: the exchange, the id and what is stored, or the answer."""
    ex = await begin(request, OPENAI, needs_body=False)
    if isinstance(ex, Response):
        return ex
    response_id = request.path_params["response_id"]
    stored = _store(request).get(response_id)
    return _not_found(response_id) if stored is None else (ex, response_id, stored)


async def retrieve(request: Request) -> ASGIApp:
    found = await _find(request)
    if isinstance(found, Response):
        return found
    ex, _, stored = found
    if stored.payload["status"] in ("queued", "in_progress"):
        if stored.pending > 0:
            stored.pending -= 1
            stored.payload = {**stored.payload, "status": "in_progress"}
        else:
            stored.payload = stored.final
    return json_response(stored.payload, ex.headers)


async def delete(request: Request) -> ASGIApp:
    found = await _find(request)
    if isinstance(found, Response):
        return found
    ex, response_id, _ = found
    _store(request).pop(response_id, None)
    return json_response({"id": response_id, "object": "response", "deleted": True}, ex.headers)


async def cancel(request: Request) -> ASGIApp:
    found = await _find(request)
    if isinstance(found, Response):
        return found
    ex, _, stored = found
    if not stored.payload.get("background"):
        return error_response(OPENAI, 400, "Only responses created with background=true can be cancelled.")
    if stored.payload["status"] not in TERMINAL:
        stored.payload = {**stored.payload, "status": "cancelled"}
    return json_response(stored.payload, ex.headers)


async def input_items(request: Request) -> ASGIApp:
    found = await _find(request)
    if isinstance(found, Response):
        return found
    ex, _, stored = found
    data = list(reversed(stored.input_items)) if request.query_params.get("order", "desc") == "desc" \
        else list(stored.input_items)  # fmt: skip
    return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None, "has_more": False}, ex.headers)  # fmt: skip
