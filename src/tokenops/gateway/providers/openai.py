"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, DeepSeek, …): chat completions, legacy
completions, embeddings and the Responses API.

Usage: ``prompt_tokens`` (Responses: ``input_tokens``) already includes cached tokens
(``prompt_tokens_details.cached_tokens``; DeepSeek reports them as ``prompt_cache_hit_tokens``) and cache writes
(``cache_write_tokens``, billed at the model's cache-write rate); ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens``, except on the compatible servers that report reasoning beside it
(their ``total_tokens`` then counts prompt + completion + reasoning, and the reasoning is added to the output).
Counts are read with :func:`tokenops.usage.count` (digit strings, as some compatible servers send, are taken;
garbage makes the usage untrusted and the call estimated). A chat stream reports usage only with
``stream_options.include_usage``: the gateway always asks for it, and when the client did not, removes the usage
chunk and the ``"usage": null`` fields so the client gets exactly the stream it asked for. A Responses stream
carries its usage in its last event (``response.completed``, ``.incomplete`` or ``.failed``). The service tier
that served the call (``service_tier``: ``default``, ``flex``, ``priority``, ``scale``) is read from the answer,
every chat chunk, or the Responses stream's ``response`` object, and prices the call with that tier's row.
Audio tokens (``prompt_tokens_details.audio_tokens``, ``completion_tokens_details.audio_tokens``) are parts of
the prompt and completion, priced at the row's audio rates; image tokens (``*_tokens_details.image_tokens``, as
gpt-image models report them) likewise, at its image rates. A Responses call's web searches (billed per call)
are the ``web_search_call`` items of its final response's ``output``; its file searches the ``file_search_call``
items, and its code-interpreter containers the distinct ``container_id`` of ``code_interpreter_call`` items.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import orjson

from tokenops.gateway.providers.base import Adapter, StreamMeter, event_json, obj, text
from tokenops.gateway.sse import SSEEvent
from tokenops.usage import MissingUsage, Usage, count

PATHS = {"chat.completions": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings",
         "models": "/models", "responses": "/responses"}
RESPONSE_FINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))


def usage_from_openai(u: Any) -> Usage | None:
    """The usage object of a chat/completions/embeddings/responses answer or stream chunk; None if there is
    none; raises MalformedUsage if a count cannot be trusted."""
    if not isinstance(u, dict):
        return None
    prompt = count(u.get("prompt_tokens", u.get("input_tokens")), "prompt_tokens")
    completion = count(u.get("completion_tokens", u.get("output_tokens")), "completion_tokens")
    pd = obj(u.get("prompt_tokens_details") or u.get("input_tokens_details"))
    cd = obj(u.get("completion_tokens_details") or u.get("output_tokens_details"))
    cached = max(count(pd.get("cached_tokens"), "cached_tokens"),
                 count(u.get("prompt_cache_hit_tokens"), "prompt_cache_hit_tokens"))  # fmt: skip
    cached = min(cached, prompt)
    written = min(count(pd.get("cache_write_tokens"), "cache_write_tokens"), prompt - cached)
    reasoning = count(cd.get("reasoning_tokens"), "reasoning_tokens")
    total = count(u.get("total_tokens"), "total_tokens")
    if reasoning > completion or (reasoning and total == prompt + completion + reasoning):
        completion += reasoning  # reported beside completion_tokens, not inside it (some compatible servers)
    audio_in = min(count(pd.get("audio_tokens"), "audio_tokens"), prompt)
    audio_out = min(count(cd.get("audio_tokens"), "audio_tokens"), completion)
    image_in = min(count(pd.get("image_tokens"), "image_tokens"), prompt)
    image_out = min(count(cd.get("image_tokens"), "image_tokens"), completion)
    return Usage(input_tokens=prompt, cache_read_tokens=cached, cache_write_5m_tokens=written,
                 output_tokens=completion, reasoning_tokens=reasoning, input_audio_tokens=audio_in,
                 output_audio_tokens=audio_out, input_image_tokens=image_in,
                 output_image_tokens=image_out)  # fmt: skip


def tool_calls(response: Any) -> dict[str, int]:
    """The server-side tool work a Responses API response billed per use: its ``output`` items of type
    ``web_search_call`` (``web_searches``) and ``file_search_call`` (``file_searches``), and the distinct
    containers of its ``code_interpreter_call`` items (``code_containers``), as Usage fields."""
    output = obj(response).get("output")
    items = [obj(item) for item in output] if isinstance(output, list) else []
    containers = {item.get("container_id") for item in items if item.get("type") == "code_interpreter_call"}
    counts = {"web_searches": sum(1 for item in items if item.get("type") == "web_search_call"),
              "file_searches": sum(1 for item in items if item.get("type") == "file_search_call"),
              "code_containers": len(containers)}  # fmt: skip
    return {name: n for name, n in counts.items() if n}


def usage_from_response(response: Any) -> Usage | None:
    """The usage of a whole Responses API response: its ``usage`` object and its server-side tool calls."""
    u = usage_from_openai(obj(response).get("usage"))
    tools = tool_calls(response)
    return dataclasses.replace(u, **tools) if u is not None and tools else u


def _is_done(data: bytes | None) -> bool:
    return data is not None and data.strip() == b"[DONE]"


class OpenAIStreamMeter(StreamMeter):
    def __init__(self, client_wants_usage: bool):
        super().__init__()
        self.strip_usage = not client_wants_usage

    def relay(self, event: SSEEvent) -> bytes:
        chunk = event_json(event)
        if chunk is None:
            return event.raw
        self.chunks += 1
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
            self.upstream_id = chunk.get("id") if isinstance(chunk.get("id"), str) else None
        if isinstance(chunk.get("service_tier"), str):  # every chunk says it; the last one is the one billed
            self.service_tier = chunk["service_tier"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = obj(obj(choice).get("delta"))
            for name in ("content", "reasoning_content", "refusal"):
                if isinstance(delta.get(name), str):
                    self.text_chars += len(delta[name])
            if isinstance(obj(choice).get("text"), str):  # legacy completions
                self.text_chars += len(choice["text"])
        usage = chunk.get("usage")
        if usage is not None:
            self.take_usage(usage_from_openai, usage)
        if not self.strip_usage or "usage" not in chunk:
            return event.raw
        if usage is not None and not choices:
            return b""  # the usage-only chunk the client did not ask for
        del chunk["usage"]
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def is_final(self, event: SSEEvent) -> bool:
        return _is_done(event.data)


class ResponsesStreamMeter(StreamMeter):
    """A Responses API stream: ``event: <type>`` lines, the usage in the whole response of the last event."""

    def relay(self, event: SSEEvent) -> bytes:
        payload = event_json(event)
        if payload is None:
            return event.raw
        self.chunks += 1
        kind = payload.get("type")
        if isinstance(kind, str) and kind.endswith(".delta") and isinstance(payload.get("delta"), str):
            self.text_chars += len(payload["delta"])  # text, reasoning summary, tool-call arguments
        response = payload.get("response")
        if isinstance(response, dict):
            if self.model is None and isinstance(response.get("model"), str):
                self.model = response["model"]
            if self.upstream_id is None and isinstance(response.get("id"), str):
                self.upstream_id = response["id"]
            if isinstance(response.get("service_tier"), str):
                self.service_tier = response["service_tier"]
            if "usage" in response and response["usage"] is not None:
                self.take_usage(usage_from_response, response)
        return event.raw

    def is_final(self, event: SSEEvent) -> bool:
        if event.event is not None:
            return event.event in RESPONSE_FINAL
        data = (event.data or b"").replace(b" ", b"")  # a server that omits the event: line names it in the data
        return any(b'"type":"' + kind.encode() + b'"' in data for kind in RESPONSE_FINAL)


class OpenAIAdapter(Adapter):
    kind = "openai"
    flavor = "openai"

    def url(self, route: str, model: str = "") -> str:
        return self.base_url + PATHS[route]

    def output_limit_field(self, route: str, model: str) -> str:
        if route == "responses":
            return "max_output_tokens"
        # OpenAI's own API refuses max_tokens on reasoning models; compatible servers (vLLM, Ollama, llama.cpp)
        # know max_tokens everywhere but not always max_completion_tokens.
        host = urlsplit(self.base_url).hostname or ""
        official = host == "api.openai.com" or host.endswith(".openai.azure.com")
        return "max_completion_tokens" if official else "max_tokens"

    def headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        h = {"content-type": "application/json", "accept-encoding": "identity"}
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        h.update(self.extra_headers)
        return h

    def prepare(self, route: str, body: dict[str, Any], upstream_model: str,
                output_limit: int | None = None) -> tuple[dict[str, Any], bool]:  # fmt: skip
        out = dict(body)
        out["model"] = upstream_model
        self.limit_output(out, route, upstream_model, output_limit)
        wants_usage = False
        if route in ("chat.completions", "completions") and body.get("stream") is True:
            opts = body.get("stream_options")
            opts = dict(opts) if isinstance(opts, dict) else {}
            wants_usage = opts.get("include_usage") is True
            opts["include_usage"] = True
            out["stream_options"] = opts
        return out, wants_usage

    def usage(self, route: str, payload: Any, model: str = "") -> Usage:
        u = usage_from_response(payload) if route == "responses" else usage_from_openai(obj(payload).get("usage"))
        if u is None:
            raise MissingUsage("the response has no usage object")
        return u

    def service_tier(self, route: str, payload: Any) -> str | None:
        # chat/completions and Responses both report the tier that served the call at the top level
        # ("default", "flex", "priority", "scale"); a request for "auto" is answered with the tier used
        return text(obj(payload).get("service_tier"))

    def stream_meter(self, client_wants_usage: bool, route: str = "", model: str = "") -> StreamMeter:
        if route == "responses":
            return ResponsesStreamMeter()
        return OpenAIStreamMeter(client_wants_usage)
