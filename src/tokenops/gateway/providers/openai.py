"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, …).

Usage: ``prompt_tokens`` already includes cached tokens (``prompt_tokens_details.cached_tokens``);
``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``. OpenAI does not report
cache writes. Counts are read with :func:`tokenops.usage.count` (digit strings, as some compatible servers send,
are taken; garbage makes the usage untrusted and the call estimated). A stream reports usage only with ``stream_options.include_usage``: the gateway always asks for
it, and when the client did not, removes the usage chunk and the ``"usage": null`` fields so the client gets
exactly the stream it asked for.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from tokenops.gateway.providers.base import Adapter, StreamMeter, obj
from tokenops.gateway.sse import SSEEvent
from tokenops.usage import MissingUsage, Usage, count

PATHS = {"chat.completions": "/chat/completions", "embeddings": "/embeddings", "models": "/models"}


def usage_from_openai(u: Any) -> Usage | None:
    """The usage object of a chat/embeddings answer or stream chunk; None if there is none; raises
    MalformedUsage if a count cannot be trusted."""
    if not isinstance(u, dict):
        return None
    prompt = count(u.get("prompt_tokens", u.get("input_tokens")), "prompt_tokens")
    completion = count(u.get("completion_tokens", u.get("output_tokens")), "completion_tokens")
    pd = obj(u.get("prompt_tokens_details") or u.get("input_tokens_details"))
    cd = obj(u.get("completion_tokens_details") or u.get("output_tokens_details"))
    cached = min(count(pd.get("cached_tokens"), "cached_tokens"), prompt)
    reasoning = min(count(cd.get("reasoning_tokens"), "reasoning_tokens"), completion)
    return Usage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion, reasoning_tokens=reasoning)


def _is_done(data: bytes | None) -> bool:
    return data is not None and data.strip() == b"[DONE]"


class OpenAIStreamMeter(StreamMeter):
    def __init__(self, client_wants_usage: bool):
        super().__init__()
        self.strip_usage = not client_wants_usage

    def relay(self, event: SSEEvent) -> bytes:
        data = event.data
        if data is None or _is_done(data):
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
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = obj(obj(choice).get("delta"))
            for name in ("content", "reasoning_content", "refusal"):
                if isinstance(delta.get(name), str):
                    self.text_chars += len(delta[name])
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


class OpenAIAdapter(Adapter):
    kind = "openai"
    flavor = "openai"

    def url(self, route: str) -> str:
        return self.base_url + PATHS[route]

    def output_limit_field(self, route: str, model: str) -> str:
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
        if route == "chat.completions" and body.get("stream") is True:
            opts = body.get("stream_options")
            opts = dict(opts) if isinstance(opts, dict) else {}
            wants_usage = opts.get("include_usage") is True
            opts["include_usage"] = True
            out["stream_options"] = opts
        return out, wants_usage

    def usage(self, route: str, payload: Any) -> Usage:
        u = usage_from_openai(obj(payload).get("usage"))
        if u is None:
            raise MissingUsage("the response has no usage object")
        return u

    def stream_meter(self, client_wants_usage: bool) -> StreamMeter:
        return OpenAIStreamMeter(client_wants_usage)
