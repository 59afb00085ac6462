"""Google's Gemini API (``generativelanguage.googleapis.com``): generateContent, streamGenerateContent,
countTokens, embedContent and batchEmbedContents.

The model is in the path (``/v1beta/models/{model}:generateContent``), not the body. The client's TokenOps key
comes as ``x-goog-api-key`` or ``?key=``; it is never sent on: the provider gets the gateway's own key in
``x-goog-api-key`` and the client's query string without ``key``.

Usage (``usageMetadata``): ``promptTokenCount`` is the whole prompt, cached content included
(``cachedContentTokenCount``, billed at the cache rate); ``toolUsePromptTokenCount`` (what a tool such as
Google Search fed back to the model) is billed as input on top; ``candidatesTokenCount`` is the visible answer
and ``thoughtsTokenCount`` the thinking, billed as output: the output is their sum and the thoughts are its
reasoning part. A stream (``?alt=sse``) has no end marker: each event may carry the usage so far, and the event
whose candidate has a ``finishReason`` ends it. Embeddings report no usage: they are estimated from the input,
flagged. Grounding with Google Search: the web searches are the ``candidates[].groundingMetadata.webSearchQueries``
(in a stream, the most any event reported), priced at the row's per-search rate (genai-prices'
``web_searches_kcount``).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tokenops.gateway.providers.base import Adapter, StreamMeter, event_json, obj
from tokenops.gateway.sse import SSEEvent
from tokenops.usage import MissingUsage, Usage, count

METHODS = {"gemini.generate": "generateContent", "gemini.stream": "streamGenerateContent",
           "gemini.count_tokens": "countTokens", "gemini.embed": "embedContent",
           "gemini.batch_embed": "batchEmbedContents"}  # fmt: skip


def usage_from_gemini(u: Any) -> Usage | None:
    """``usageMetadata`` as a Usage; None when there is none; MalformedUsage when a count cannot be trusted."""
    if not isinstance(u, dict):
        return None
    prompt = count(u.get("promptTokenCount"), "promptTokenCount")
    tool_prompt = count(u.get("toolUsePromptTokenCount"), "toolUsePromptTokenCount")
    cached = min(count(u.get("cachedContentTokenCount"), "cachedContentTokenCount"), prompt)
    answer = count(u.get("candidatesTokenCount"), "candidatesTokenCount")
    thoughts = count(u.get("thoughtsTokenCount"), "thoughtsTokenCount")
    return Usage(input_tokens=prompt + tool_prompt, cache_read_tokens=cached, output_tokens=answer + thoughts,
                 reasoning_tokens=thoughts)  # fmt: skip


def web_search_queries(payload: Any) -> int:
    """The Google Search queries a Gemini answer ran: its candidates' ``groundingMetadata.webSearchQueries``."""
    candidates = obj(payload).get("candidates")
    total = 0
    for candidate in candidates if isinstance(candidates, list) else ():
        queries = obj(obj(candidate).get("groundingMetadata")).get("webSearchQueries")
        total += len(queries) if isinstance(queries, list) else 0
    return total


def _text_chars(payload: dict[str, Any]) -> int:
    chars = 0
    candidates = payload.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else ():
        parts = obj(obj(candidate).get("content")).get("parts")
        for part in parts if isinstance(parts, list) else ():
            if isinstance(obj(part).get("text"), str):
                chars += len(part["text"])
    return chars


def _finished(payload: dict[str, Any]) -> bool:
    candidates = payload.get("candidates")
    return any(isinstance(obj(c).get("finishReason"), str) for c in candidates) if isinstance(candidates, list) \
        else False  # fmt: skip


class GeminiStreamMeter(StreamMeter):
    def __init__(self) -> None:
        super().__init__()
        self._searches = 0

    def relay(self, event: SSEEvent) -> bytes:
        payload = event_json(event)
        if payload is None:
            return event.raw
        self.chunks += 1
        if self.model is None and isinstance(payload.get("modelVersion"), str):
            self.model = payload["modelVersion"]
        if self.upstream_id is None and isinstance(payload.get("responseId"), str):
            self.upstream_id = payload["responseId"]
        self.text_chars += _text_chars(payload)
        if payload.get("usageMetadata") is not None:
            self.take_usage(usage_from_gemini, payload["usageMetadata"])  # the usage so far: the last one wins
        self._searches = max(self._searches, web_search_queries(payload))
        if self._searches and self.usage is not None and self.usage.web_searches != self._searches:
            self.usage = dataclasses.replace(self.usage, web_searches=self._searches)
        return event.raw

    def is_final(self, event: SSEEvent) -> bool:
        payload = event_json(event)
        return payload is not None and _finished(payload)


class GeminiAdapter(Adapter):
    kind = "gemini"
    flavor = "gemini"

    def url(self, route: str, model: str = "") -> str:
        return f"{self.base_url}/v1beta/models/{model}:{METHODS[route]}"

    def request_url(self, route: str, query: str = "", model: str = "") -> str:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "key"]  # the client's key stays here
        if route == "gemini.stream" and ("alt", "sse") not in kept:
            kept.append(("alt", "sse"))  # metered as SSE; a client that asked for the JSON array gets it rebuilt
        url = self.url(route, model)
        return f"{url}?{urlencode(kept)}" if kept else url

    def headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        h = {"content-type": "application/json", "accept-encoding": "identity"}
        if self.api_key:
            h["x-goog-api-key"] = self.api_key
        h.update(self.extra_headers)
        return h

    def prepare(self, route: str, body: dict[str, Any], upstream_model: str,
                output_limit: int | None = None) -> tuple[dict[str, Any], bool]:  # fmt: skip
        out = dict(body)
        self.limit_output(out, route, upstream_model, output_limit)
        return out, False

    def limit_output(self, out: dict[str, Any], route: str, model: str, limit: int | None) -> None:
        if limit is None:
            return
        config = dict(obj(out.get("generationConfig")))
        given = config.get("maxOutputTokens")
        config["maxOutputTokens"] = min(given, limit) if isinstance(given, int) and not isinstance(given, bool) \
            else limit  # fmt: skip
        out["generationConfig"] = config

    def usage(self, route: str, payload: Any) -> Usage:
        u = usage_from_gemini(obj(payload).get("usageMetadata"))
        if u is None:
            raise MissingUsage("the response has no usageMetadata")
        searches = web_search_queries(payload)
        return dataclasses.replace(u, web_searches=searches) if searches else u

    def stream_meter(self, client_wants_usage: bool, route: str = "") -> StreamMeter:
        return GeminiStreamMeter()

    @staticmethod
    def response_model(payload: Any) -> str | None:
        version = obj(payload).get("modelVersion")
        return version if isinstance(version, str) else None

    @staticmethod
    def upstream_request_id(payload: Any) -> str | None:
        rid = obj(payload).get("responseId")
        return rid if isinstance(rid, str) else None
