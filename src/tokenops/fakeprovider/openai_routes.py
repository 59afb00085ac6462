"""OpenAI routes of the fake: ``/v1/chat/completions`` (JSON and SSE), ``/v1/embeddings``, ``/v1/models``.

Field names and chunk order follow the official ``openai`` SDK's types (``ChatCompletion``,
``ChatCompletionChunk``, ``CompletionUsage``, ``CreateEmbeddingResponse``) and what the live API sends.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from .accounting import (
    Completion,
    Reported,
    account_openai,
    first_tool_call,
    forced_tool,
    make_completion,
    resolve_usage,
    structured,
    text_tokens,
)
from .exchange import Exchange, begin
from .wire import GARBAGE_JSON, JSON, OPENAI, EventStream, TruncatedResponse, error_response, json_response, sse

DEFAULT_EMBEDDING_DIMENSIONS = 8
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "gpt-5-mini", "o3", "o4-mini", "text-embedding-3-small")
_DONE = b"data: [DONE]\n\n"
_GARBAGE_SSE = [b'data: {"id": "chatcmpl-garbage", "choices": [{"delta": <html>\n\n', _DONE]


def served_tier(body: dict[str, Any]) -> str:
    """The tier OpenAI reports as having served a request: ``flex`` and ``priority`` as requested, else ``default``."""
    tier = body.get("service_tier")
    return tier if tier in ("flex", "priority") else "default"


def _usage(r: Reported) -> dict[str, Any]:
    return {
        "prompt_tokens": r.input,
        "completion_tokens": r.output,
        "total_tokens": r.input + r.output,
        "prompt_tokens_details": {"cached_tokens": r.cached, "audio_tokens": r.audio_in,
                                  **({"image_tokens": r.image_in} if r.image_in else {}),
                                  **({"cache_write_tokens": r.write_5m + r.write_1h} if r.write_5m + r.write_1h else {})},
        "completion_tokens_details": {
            "reasoning_tokens": r.reasoning,
            "audio_tokens": r.audio_out,
            **({"image_tokens": r.image_out} if r.image_out else {}),
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _cap(body: dict[str, Any]) -> int | None | str:
    """The completion-token cap, or the name of the parameter that is invalid."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return name
            return value
    return None


async def chat_completions(request: Request) -> ASGIApp:
    ex = await begin(request, OPENAI)
    if isinstance(ex, Response):
        return ex
    body = ex.body
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        return error_response(OPENAI, 400, "you must provide a model parameter", param="model")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return error_response(
            OPENAI, 400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    cap = _cap(body)
    if isinstance(cap, str):
        return error_response(OPENAI, 400, f"Invalid '{cap}': expected an integer >= 1.", param=cap)
    n = body.get("n", 1) if body.get("n") is not None else 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
        return error_response(OPENAI, 400, "Invalid 'n': expected an integer from 1 to 128.", param="n")
    controls = ex.controls
    override = controls.usage
    state = request.app.state
    prompt = account_openai(messages, model, None if override else state.openai_cache, state.clock())
    max_words = None
    if override is not None and override.output is not None:
        max_words = override.output - (override.reasoning or 0)
    completion = make_completion(prompt.seed, model, cap, max_words=max_words, think=controls.think,
                                 schema=structured(body.get("response_format")))  # fmt: skip
    usage = resolve_usage(prompt.tokens, prompt.cached, 0, 0, completion, override)
    if n > 1:  # every answer is billed; the prompt once
        usage = Reported(usage.input, usage.cached, usage.write_5m, usage.write_1h, usage.output * n,
                         usage.reasoning * n)  # fmt: skip
    finish = "length" if completion.truncated else "stop"
    tool = None
    forced, name = forced_tool(body.get("tool_choice"))
    if (controls.tool_call or forced) and not (messages and messages[-1].get("role") == "tool"):  # ran: answer
        call = first_tool_call(body.get("tools"), name)
        if call is not None:
            tool = {"id": "call_" + ex.headers[OPENAI.request_id_header][4:28], "type": "function",
                    "function": {"name": call[0], "arguments": call[1]}}  # fmt: skip
            finish = "tool_calls"
    head = {
        "id": "chatcmpl-" + ex.headers[OPENAI.request_id_header][4:33],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": controls.model or model,
        "service_tier": served_tier(body),
        "system_fingerprint": "fp_fake",
    }
    if body.get("stream") is True:
        return _stream(ex, body, head, completion, usage, finish, tool)
    if controls.garbage:
        return Response(GARBAGE_JSON, headers=ex.headers, media_type=JSON)
    message: dict[str, Any] = {"role": "assistant", "content": completion.text, "refusal": None, "annotations": []}
    if tool is not None:
        message = {"role": "assistant", "content": None, "refusal": None, "annotations": [], "tool_calls": [tool]}
    payload: dict[str, Any] = {
        **head,
        "choices": [{"index": i, "message": message, "logprobs": None, "finish_reason": finish} for i in range(n)],
        "usage": _usage(usage),
    }
    if controls.disconnect_after is not None:
        return TruncatedResponse(bytes(json_response(payload, ex.headers).body), ex.headers, controls.disconnect_after)
    return json_response(payload, ex.headers)


def _stream(
    ex: Exchange, body: dict[str, Any], head: dict[str, Any], completion: Completion, usage: Reported, finish: str,
    tool: dict[str, Any] | None = None,
) -> EventStream:
    controls = ex.controls
    delay_s = controls.chunk_delay_ms / 1000
    if controls.garbage:
        return EventStream(list(_GARBAGE_SSE), ex.headers, delay_s=delay_s, abort_after=controls.disconnect_after)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    base = {**head, "object": "chat.completion.chunk"}
    if include_usage:
        base["usage"] = None

    n = body.get("n") or 1  # n answers stream interleaved, one chunk per answer (choices[].index), as OpenAI does

    def chunks(delta: dict[str, Any], finish_reason: str | None = None) -> list[bytes]:
        return [sse({**base, "choices": [{"index": i, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]}) for i in range(n)]  # fmt: skip

    events = chunks({"role": "assistant", "content": "", "refusal": None})
    if tool is not None:  # the call's name first, then its arguments, as OpenAI streams them
        fn = tool["function"]
        events += chunks({"tool_calls": [{"index": 0, "id": tool["id"], "type": "function",
                                          "function": {"name": fn["name"], "arguments": ""}}]})  # fmt: skip
        events += chunks({"tool_calls": [{"index": 0, "function": {"arguments": fn["arguments"]}}]})
    else:
        for piece in completion.pieces(controls.chunks):
            events += chunks({"content": piece})
    events += chunks({}, finish)
    if include_usage:
        events.append(sse({**base, "choices": [], "usage": _usage(usage)}))
    events.append(_DONE)
    return EventStream(events, ex.headers, delay_s=delay_s, abort_after=controls.disconnect_after)


def _vector(seed: bytes, dimensions: int) -> list[float]:
    """A unit-length vector that depends only on the input, like a real embedding of the same text."""
    rng = random.Random(hashlib.blake2b(seed, digest_size=16).digest())
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


async def embeddings(request: Request) -> ASGIApp:
    ex = await begin(request, OPENAI)
    if isinstance(ex, Response):
        return ex
    body = ex.body
    model, given = body.get("model"), body.get("input")
    if not isinstance(model, str) or not model:
        return error_response(OPENAI, 400, "you must provide a model parameter", param="model")
    inputs: list[Any] = [given] if isinstance(given, str) else given if isinstance(given, list) else []
    if inputs and all(isinstance(i, int) for i in inputs):
        inputs = [inputs]  # one pre-tokenized input
    if not inputs or not all(isinstance(i, str) or isinstance(i, list) for i in inputs):
        return error_response(OPENAI, 400, "'input' must be a string or an array of strings.", param="input")
    dimensions = body.get("dimensions", DEFAULT_EMBEDDING_DIMENSIONS)
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= 8192:
        return error_response(OPENAI, 400, "'dimensions' must be an integer from 1 to 8192.", param="dimensions")
    as_base64 = body.get("encoding_format") == "base64"
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        seed = item.encode() if isinstance(item, str) else repr(item).encode()
        tokens += text_tokens(item) if isinstance(item, str) else len(item)
        vector: Any = _vector(seed, dimensions)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    if ex.controls.usage is not None and ex.controls.usage.input is not None:
        tokens = ex.controls.usage.input
    if ex.controls.garbage:
        return Response(GARBAGE_JSON, headers=ex.headers, media_type=JSON)
    payload: dict[str, Any] = {"object": "list", "data": data, "model": ex.controls.model or model}
    payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    if ex.controls.disconnect_after is not None:
        return TruncatedResponse(bytes(json_response(payload, ex.headers).body), ex.headers,
                                 ex.controls.disconnect_after)
    return json_response(payload, ex.headers)


def model_list(created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "system"} for m in MODELS],
    }


async def completions(request: Request) -> ASGIApp:
    """Legacy ``POST /v1/completions``: ``prompt`` (a string or strings) → ``choices[].text``; ``n`` and
    ``best_of`` answers are billed per prompt (``best_of`` generated, ``n`` returned)."""
    ex = await begin(request, OPENAI)
    if isinstance(ex, Response):
        return ex
    body = ex.body
    model, prompt = body.get("model"), body.get("prompt")
    if not isinstance(model, str) or not model:
        return error_response(OPENAI, 400, "you must provide a model parameter", param="model")
    prompts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) and prompt else None
    if prompts is None or not all(isinstance(p, str) for p in prompts):
        return error_response(OPENAI, 400, "'prompt' must be a string or an array of strings.", param="prompt")
    cap = _cap(body)
    if isinstance(cap, str):
        return error_response(OPENAI, 400, f"Invalid '{cap}': expected an integer >= 1.", param=cap)
    cap = 16 if cap is None else cap  # the legacy API's default max_tokens
    n = body.get("n") or 1
    best_of = body.get("best_of") or n
    controls = ex.controls
    state = request.app.state
    choices: list[dict[str, Any]] = []
    prompt_tokens, output = 0, 0
    finish = "stop"
    for p in prompts:
        account = account_openai([{"role": "user", "content": p}], model, None, state.clock())
        completion = make_completion(account.seed, model, cap, think=controls.think)
        prompt_tokens += account.tokens - 4  # no message framing in a bare prompt
        output += completion.output_tokens * best_of
        finish = "length" if completion.truncated else finish
        choices += [{"text": completion.text, "index": len(choices) + i, "logprobs": None,
                     "finish_reason": "length" if completion.truncated else "stop"} for i in range(n)]  # fmt: skip
    if controls.usage is not None:
        prompt_tokens = controls.usage.input if controls.usage.input is not None else prompt_tokens
        output = controls.usage.output if controls.usage.output is not None else output
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": output, "total_tokens": prompt_tokens + output}
    head = {"id": "cmpl-" + ex.headers[OPENAI.request_id_header][4:33], "object": "text_completion",
            "created": int(time.time()), "model": controls.model or model, "system_fingerprint": "fp_fake"}  # fmt: skip
    if body.get("stream") is not True:
        return json_response({**head, "choices": choices, "usage": usage}, ex.headers)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    text = str(choices[0]["text"])
    pieces = [text] if controls.chunks == 1 else [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
    events = [sse({**head, "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]})
              for piece in pieces]  # fmt: skip
    events.append(sse({**head, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]}))
    if include_usage:
        events.append(sse({**head, "choices": [], "usage": usage}))
    events.append(_DONE)
    return EventStream(events, ex.headers, delay_s=controls.chunk_delay_ms / 1000,
                       abort_after=controls.disconnect_after)  # fmt: skip
