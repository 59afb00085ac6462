"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, …).

Usage: ``prompt_tokens`` already includes cached tokens (``prompt_tokens_details.cached_tokens``);
``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``. OpenAI does not report
cache writes. A stream reports usage only with ``stream_options.include_usage``: the gateway always asks for
it, and when the client did not, removes the usage chunk and the ``"usage": null`` fields so the client gets
exactly the stream it asked for.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenops.gateway.providers.base import Adapter, StreamMeter, _int
from tokenops.gateway.sse import SSEEvent
from tokenops.usage import Usage

PATHS = {"chat.completions": "/chat/completions", "embeddings": "/embeddings", "models": "/models"}


def usage_from_openai(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    prompt = _int(u.get("prompt_tokens", u.get("input_tokens")))
    completion = _int(u.get("completion_tokens", u.get("output_tokens")))
    pd = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    cd = u.get("completion_tokens_details") or u.get("output_tokens_details") or {}
    cached = min(_int(pd.get("cached_tokens")) if isinstance(pd, dict) else 0, prompt)
    reasoning = min(_int(cd.get("reasoning_tokens")) if isinstance(cd, dict) else 0, completion)
    return Usage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion, reasoning_tokens=reasoning)


class OpenAIStreamMeter(StreamMeter):
    def __init__(self, client_wants_usage: bool):
        super().__init__()
        self.strip_usage = not client_wants_usage

    def relay(self, event: SSEEvent) -> bytes:
        data = event.data
        if data is None or data == b"[DONE]":
            return event.raw
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event.raw
        if not isinstance(chunk, dict):
            return event.raw
        self.chunks += 1
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
            self.upstream_id = chunk.get("id") if isinstance(chunk.get("id"), str) else None
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self.text_chars += len(delta["content"])
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = usage_from_openai(usage) or self.usage
        if not self.strip_usage or "usage" not in chunk:
            return event.raw
        if usage is not None and not chunk.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        del chunk["usage"]
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def is_final(self, event: SSEEvent) -> bool:
        return event.data == b"[DONE]"


class OpenAIAdapter(Adapter):
    kind = "openai"
    flavor = "openai"

    def url(self, route: str) -> str:
        return self.base_url + PATHS[route]

    def headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        h = {"content-type": "application/json", "accept-encoding": "identity"}
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        h.update(self.extra_headers)
        return h

    def prepare(self, route: str, body: dict[str, Any], upstream_model: str) -> tuple[dict[str, Any], bool]:
        out = dict(body)
        out["model"] = upstream_model
        wants_usage = False
        if route == "chat.completions" and body.get("stream") is True:
            opts = body.get("stream_options")
            opts = dict(opts) if isinstance(opts, dict) else {}
            wants_usage = opts.get("include_usage") is True
            opts["include_usage"] = True
            out["stream_options"] = opts
        return out, wants_usage

    def usage(self, route: str, payload: Any) -> Usage:
        u = usage_from_openai(payload.get("usage") if isinstance(payload, dict) else None)
        if u is None:
            raise ValueError("the response has no usage object")
        return u

    def stream_meter(self, client_wants_usage: bool) -> StreamMeter:
        return OpenAIStreamMeter(client_wants_usage)
