"""Google's Gemini API in the fake: ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent``
(``?alt=sse``: SSE events of GenerateContentResponse; without it, one JSON array), ``:countTokens``,
``:embedContent`` and ``:batchEmbedContents``. The key comes as ``x-goog-api-key`` or ``?key=``.

Shapes follow the ``google-genai`` SDK's types: ``candidates[].content.parts[].text``, ``finishReason``
(``STOP`` or ``MAX_TOKENS``), ``usageMetadata`` with ``promptTokenCount`` (the whole prompt, cached content
included), ``candidatesTokenCount``, ``thoughtsTokenCount`` (models whose name starts with ``gemini-2.5`` or
``gemini-3`` think, as the OpenAI reasoning models do in this fake), ``cachedContentTokenCount`` (from
``fake.usage.cached``), ``toolUsePromptTokenCount`` (a ``googleSearch`` tool adds 50 tokens of results) and
``totalTokenCount``, plus ``modelVersion`` and ``responseId``. A stream carries the usage so far in every event;
the last event has the ``finishReason``. Embeddings carry no usage, as Gemini's do.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from .accounting import Reported, account_openai, first_tool_call, forced_tool, make_completion, resolve_usage
from .exchange import begin
from .openai_routes import _vector
from .wire import GEMINI, EventStream, error_response, json_response, sse

SEARCH_RESULT_TOKENS = 50  # what a googleSearch tool feeds back to the model, billed as toolUsePromptTokenCount
DEFAULT_DIMENSIONS = 8


def _text(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    return "".join(p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str))


def _usage(r: Reported, tool_prompt: int) -> dict[str, Any]:
    u: dict[str, Any] = {"promptTokenCount": r.input, "candidatesTokenCount": r.output - r.reasoning,
                         "totalTokenCount": r.input + r.output + tool_prompt,
                         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": r.input - r.image_in}]}  # fmt: skip
    if r.image_in:
        u["promptTokensDetails"].append({"modality": "IMAGE", "tokenCount": r.image_in})
    if r.image_out:
        u["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": r.output - r.reasoning - r.image_out},
                                        {"modality": "IMAGE", "tokenCount": r.image_out}]  # fmt: skip
    if r.reasoning:
        u["thoughtsTokenCount"] = r.reasoning
    if r.cached:
        u["cachedContentTokenCount"] = r.cached
    if tool_prompt:
        u["toolUsePromptTokenCount"] = tool_prompt
    return u


async def call(request: Request) -> ASGIApp:
    """Dispatch on the method after the colon in ``/v1beta/models/{model}:{method}``."""
    model, _, method = request.path_params["target"].partition(":")
    handler = {"generateContent": generate, "streamGenerateContent": generate, "countTokens": count_tokens,
               "embedContent": embed, "batchEmbedContents": batch_embed}.get(method)  # fmt: skip
    if handler is None or not model:
        return error_response(GEMINI, 404, f"Method {method!r} not found for model {model!r}.")
    return await handler(request, model, method)


async def generate(request: Request, model: str, method: str) -> ASGIApp:
    ex = await begin(request, GEMINI)
    if isinstance(ex, Response):
        return ex
    body = ex.body
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents or not all(isinstance(c, dict) for c in contents):
        return error_response(GEMINI, 400, "* GenerateContentRequest.contents: contents is not specified")
    config: dict[str, Any] = body["generationConfig"] if isinstance(body.get("generationConfig"), dict) else {}
    cap = config.get("maxOutputTokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        return error_response(GEMINI, 400, "* GenerateContentRequest.generation_config.max_output_tokens: must be "
                              "a positive integer")  # fmt: skip
    messages = [{"role": "system", "content": _text(body["systemInstruction"])}] \
        if isinstance(body.get("systemInstruction"), dict) else []  # fmt: skip
    messages += [{"role": str(c.get("role", "user")), "content": _text(c)} for c in contents]
    state, controls = request.app.state, ex.controls
    prompt = account_openai(messages, model, None, state.clock())
    max_words = None
    if controls.usage is not None and controls.usage.output is not None:
        max_words = controls.usage.output - (controls.usage.reasoning or 0)
    schema = None
    if config.get("responseMimeType") == "application/json":
        given = config.get("responseJsonSchema", config.get("responseSchema"))
        schema = given if isinstance(given, dict) else True
    completion = make_completion(prompt.seed, model, cap, max_words=max_words, think=controls.think, schema=schema)
    reported = resolve_usage(prompt.tokens, 0, 0, 0, completion, controls.usage)
    if controls.usage is not None:
        reported = Reported(reported.input, controls.usage.cached, 0, 0, reported.output, reported.reasoning,
                            image_in=reported.image_in, image_out=reported.image_out)  # fmt: skip
    tools = body.get("tools")
    searched = isinstance(tools, list) and any(isinstance(t, dict) and "googleSearch" in t for t in tools)
    tool_prompt = SEARCH_RESULT_TOKENS if searched else 0
    finish = "MAX_TOKENS" if completion.truncated else "STOP"
    call = _function_call(body, contents) if controls.tool_call or forced_tool(body.get("toolConfig"))[0] else None
    if call is not None:
        finish = "STOP"
    response_id = uuid.uuid4().hex[:22]
    version = controls.model or model
    if method == "streamGenerateContent":
        pieces: list[Any] = [call] if call is not None else completion.pieces(controls.chunks) or [""]
        events = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            part = {"functionCall": piece} if call is not None else {"text": piece}
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
            if last:
                candidate["finishReason"] = finish
            so_far = Reported(reported.input, reported.cached, 0, 0,
                              reported.output if last else reported.reasoning + i + 1, reported.reasoning,
                              image_in=reported.image_in, image_out=reported.image_out if last else 0)  # fmt: skip
            events.append({"candidates": [candidate], "usageMetadata": _usage(so_far, tool_prompt),
                           "modelVersion": version, "responseId": response_id})  # fmt: skip
        if request.query_params.get("alt") != "sse":  # the REST default: one JSON array, streamed
            return json_response(events, ex.headers)
        return EventStream([sse(e) for e in events], ex.headers, delay_s=controls.chunk_delay_ms / 1000,
                           abort_after=controls.disconnect_after)  # fmt: skip
    payload = {
        "candidates": [{"content": {"role": "model", "parts": [{"functionCall": call} if call else
                                                                {"text": completion.text}]},
                        "finishReason": finish, "index": 0}],
        "usageMetadata": _usage(reported, tool_prompt),
        "modelVersion": version,
        "responseId": response_id,
    }  # fmt: skip
    return json_response(payload, ex.headers)


def _function_call(body: dict[str, Any], contents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A call of the first declared function (``"Paris"`` for each required string argument), unless the
    conversation already ends with a function's response."""
    last = contents[-1].get("parts") or []
    if any(isinstance(p, dict) and "functionResponse" in p for p in last):
        return None
    decls = [d for t in body.get("tools") or [] if isinstance(t, dict)
             for d in t.get("functionDeclarations") or [] if isinstance(d, dict)]  # fmt: skip
    if not decls:
        return None
    found = first_tool_call([{"type": "function", "function": {
        "name": d.get("name"), "parameters": d.get("parametersJsonSchema") or d.get("parameters")}} for d in decls],
        forced_tool(body.get("toolConfig"))[1])  # fmt: skip
    return None if found is None else {"name": found[0], "args": orjson.loads(found[1])}


async def count_tokens(request: Request, model: str, method: str) -> ASGIApp:
    ex = await begin(request, GEMINI)
    if isinstance(ex, Response):
        return ex
    body = ex.body
    inner: dict[str, Any] = body["generateContentRequest"] if isinstance(body.get("generateContentRequest"), dict) \
        else body  # fmt: skip
    contents = inner.get("contents")
    if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
        return error_response(GEMINI, 400, "* CountTokensRequest.contents: contents is not specified")
    messages = [{"role": str(c.get("role", "user")), "content": _text(c)} for c in contents]
    if isinstance(inner.get("systemInstruction"), dict):
        messages.insert(0, {"role": "system", "content": _text(inner["systemInstruction"])})
    tokens = account_openai(messages, model, None, 0.0).tokens
    return json_response({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]},
                         ex.headers)  # fmt: skip


def _embedding(content: Any, dimensions: int) -> dict[str, Any] | None:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        return None
    return {"values": _vector(_text(content).encode(), dimensions)}


async def embed(request: Request, model: str, method: str) -> ASGIApp:
    ex = await begin(request, GEMINI)
    if isinstance(ex, Response):
        return ex
    dims = ex.body.get("outputDimensionality") or DEFAULT_DIMENSIONS
    embedding = _embedding(ex.body.get("content"), dims)
    if embedding is None:
        return error_response(GEMINI, 400, "* EmbedContentRequest.content: content is not specified")
    return json_response({"embedding": embedding}, ex.headers)


async def batch_embed(request: Request, model: str, method: str) -> ASGIApp:
    ex = await begin(request, GEMINI)
    if isinstance(ex, Response):
        return ex
    requests = ex.body.get("requests")
    if not isinstance(requests, list) or not requests:
        return error_response(GEMINI, 400, "* BatchEmbedContentsRequest.requests: requests is not specified")
    out = []
    for r in requests:
        r = r if isinstance(r, dict) else {}
        embedding = _embedding(r.get("content"), r.get("outputDimensionality") or DEFAULT_DIMENSIONS)
        if embedding is None:
            return error_response(GEMINI, 400, "* EmbedContentRequest.content: content is not specified")
        out.append(embedding)
    return json_response({"embeddings": out}, ex.headers)
