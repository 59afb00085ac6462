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
flagged. ``promptTokensDetails`` / ``candidatesTokensDetails`` entries of ``modality`` ``IMAGE`` or ``AUDIO`` are
the image and audio parts of the prompt and the answer, priced at the row's image and audio rates.

Grounding with Google Search, priced at the row's per-search rate (genai-prices' ``web_searches_kcount``): Google
bills Gemini 1.x and 2.x per grounded *prompt* (one per answer that used grounding: non-empty
``groundingMetadata.webSearchQueries`` or ``groundingChunks``) and Gemini 3 and later per search *query* (the
``webSearchQueries``). Which rule applies is read from the answer's ``modelVersion`` (a stream's first one), else
from the model the call was sent as. A stream counts once per call: one grounded prompt if any event was
grounded, else the most queries any event reported.
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


def _modality(details: Any, modality: str) -> int:
    """The tokens of ``modality`` in a ``*TokensDetails`` list (``[{"modality": "IMAGE", "tokenCount": 258}]``)."""
    total = 0
    for entry in details if isinstance(details, list) else ():
        if obj(entry).get("modality") == modality:
            total += count(entry.get("tokenCount"), "tokenCount")
    return total


def usage_from_gemini(u: Any) -> Usage | None:
    """``usageMetadata`` as a Usage; None when there is none; MalformedUsage when a count cannot be trusted."""
    if not isinstance(u, dict):
        return None
    prompt = count(u.get("promptTokenCount"), "promptTokenCount")
    tool_prompt = count(u.get("toolUsePromptTokenCount"), "toolUsePromptTokenCount")
    cached = min(count(u.get("cachedContentTokenCount"), "cachedContentTokenCount"), prompt)
    answer = count(u.get("candidatesTokenCount"), "candidatesTokenCount")
    thoughts = count(u.get("thoughtsTokenCount"), "thoughtsTokenCount")
    prompt_details, answer_details = u.get("promptTokensDetails"), u.get("candidatesTokensDetails")
    return Usage(input_tokens=prompt + tool_prompt, cache_read_tokens=cached, output_tokens=answer + thoughts,
                 reasoning_tokens=thoughts,
                 input_audio_tokens=min(_modality(prompt_details, "AUDIO"), prompt),
                 output_audio_tokens=min(_modality(answer_details, "AUDIO"), answer),
                 input_image_tokens=min(_modality(prompt_details, "IMAGE"), prompt),
                 output_image_tokens=min(_modality(answer_details, "IMAGE"), answer))  # fmt: skip


def web_search_queries(payload: Any) -> int:
    """The Google Search queries a Gemini answer ran: its candidates' ``groundingMetadata.webSearchQueries``."""
    candidates = obj(payload).get("candidates")
    total = 0
    for candidate in candidates if isinstance(candidates, list) else ():
        queries = obj(obj(candidate).get("groundingMetadata")).get("webSearchQueries")
        total += len(queries) if isinstance(queries, list) else 0
    return total


def grounded(payload: Any) -> bool:
    """Whether a Gemini answer used grounding: a candidate with ``webSearchQueries`` or ``groundingChunks``."""
    candidates = obj(payload).get("candidates")
    for candidate in candidates if isinstance(candidates, list) else ():
        metadata = obj(obj(candidate).get("groundingMetadata"))
        if any(isinstance(metadata.get(k), list) and metadata[k] for k in ("webSearchQueries", "groundingChunks")):
            return True
    return False


def billed_per_prompt(model: Any) -> bool:
    """Whether Google bills ``model``'s grounding per grounded prompt (Gemini 1.x, 2.x) rather than per query."""
    name = model.removeprefix("models/") if isinstance(model, str) else ""
    return name.startswith(("gemini-1", "gemini-2"))


def web_searches(payload: Any, model: str = "") -> int:
    """The web searches a Gemini answer to a call sent as ``model`` is billed for (see the module's doc): 1 per
    grounded prompt on Gemini 1.x/2.x, else its search queries."""
    if billed_per_prompt(obj(payload).get("modelVersion") or model):
        return 1 if grounded(payload) else 0
    return web_search_queries(payload)


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
    def __init__(self, sent_as: str = "") -> None:
        super().__init__()
        self._sent_as = sent_as  # the model the call was sent as: the billing rule when no event names one
        self._queries = 0  # the most any event reported
        self._grounded = False

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
        self._queries = max(self._queries, web_search_queries(payload))
        self._grounded = self._grounded or grounded(payload)
        per_prompt = billed_per_prompt(self.model or self._sent_as)
        searches = (1 if self._grounded else 0) if per_prompt else self._queries
        if searches and self.usage is not None and self.usage.web_searches != searches:
            self.usage = dataclasses.replace(self.usage, web_searches=searches)
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

    def usage(self, route: str, payload: Any, model: str = "") -> Usage:
        u = usage_from_gemini(obj(payload).get("usageMetadata"))
        if u is None:
            raise MissingUsage("the response has no usageMetadata")
        searches = web_searches(payload, model)
        return dataclasses.replace(u, web_searches=searches) if searches else u

    def stream_meter(self, client_wants_usage: bool, route: str = "", model: str = "") -> StreamMeter:
        return GeminiStreamMeter(model)

    @staticmethod
    def response_model(payload: Any) -> str | None:
        version = obj(payload).get("modelVersion")
        return version if isinstance(version, str) else None

    @staticmethod
    def upstream_request_id(payload: Any) -> str | None:
        rid = obj(payload).get("responseId")
        return rid if isinstance(rid, str) else None
