"""Translation between the three formats (OpenAI chat completions, Anthropic messages, Gemini generateContent), so
that a model can be called in any of them whatever its provider speaks: a Claude model from an OpenAI-only tool, a
GPT model from an Anthropic one or from google-genai. OpenAI <-> Anthropic is in :mod:`.anthropic`, OpenAI <->
Gemini in :mod:`.gemini`; Anthropic <-> Gemini goes through the OpenAI format (:class:`Chain`).

Covered both ways: text, system prompts, images (base64 data and URLs), tools, tool calls and their results,
stop sequences, temperature and top_p, the end user, streaming, stop reasons and usage. A field that has no
counterpart on the other side is refused with a 400 naming it (:class:`Untranslatable`), never dropped: e.g.
``n > 1``, ``logprobs``, ``response_format``, ``seed``, ``reasoning_effort`` or penalties for a Claude model,
Anthropic's ``thinking`` or ``top_k`` for a GPT model. A field neither format defines is passed on as it came
(a provider extension the client means for it). OpenAI's ``metadata`` is the gateway's tags and ``service_tier``
is not carried across (the provider's default tier serves the call).

The call is metered from the provider's own answer, read by the provider's adapter before translation: the
usage the client sees is translated from it, never the other way round. Pure functions and one stateful stream
converter per direction; no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenops.errors import GatewayError
from tokenops.gateway.translate.anthropic import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_to_openai,
    anthropic_to_openai_response,
    openai_to_anthropic,
    openai_to_anthropic_response,
)
from tokenops.gateway.translate.common import Untranslatable
from tokenops.gateway.translate.gemini import (
    GeminiToOpenAIStream,
    OpenAIToGeminiStream,
    gemini_to_openai,
    gemini_to_openai_response,
    openai_to_gemini,
    openai_to_gemini_response,
)


class GeminiArrayStream:
    """Gemini stream events in, the JSON array Gemini sends a client that did not ask for ``?alt=sse``."""

    content_type = "application/json"

    def __init__(self) -> None:
        self.first = True

    def convert(self, name: str | None, data: Any) -> bytes:
        if not isinstance(data, dict):
            return b""
        out = (b"[" if self.first else b",\r\n") + orjson.dumps(data)
        self.first = False
        candidates = data.get("candidates")
        if isinstance(candidates, list) and any(isinstance(c, dict) and c.get("finishReason") for c in candidates):
            out += b"]"
        return out


class Chain:
    """Two converters through the OpenAI chat format: the first's output events fed to the second."""

    def __init__(self, first: Any, second: Any):
        from tokenops.gateway.sse import SSEBuffer

        self.first, self.second, self.buffer = first, second, SSEBuffer()

    def convert(self, name: str | None, data: Any) -> bytes:
        out = b""
        for ev in self.buffer.feed(self.first.convert(name, data)):
            raw = (ev.data or b"").strip()
            inner: Any = "[DONE]" if raw == b"[DONE]" else None
            if inner is None and raw:
                try:
                    inner = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
            out += self.second.convert(ev.event, inner)
        return out


# --- the gateway's entry points ----------------------------------------------------------------------------
FORMATS = {"chat.completions": "openai", "messages": "anthropic", "gemini.generate": "gemini", "gemini.stream": "gemini"}


def request(client_route: str, provider_route: str, body: dict[str, Any], model: str, limit_field: str,
            stream: bool = False) -> dict[str, Any]:  # fmt: skip
    """The body to send a provider that speaks ``provider_route``'s format, from the client's body (through the
    OpenAI chat format when neither side speaks it)."""
    src, dst = FORMATS.get(client_route), FORMATS.get(provider_route)
    if src is None or dst is None or src == dst:
        raise GatewayError(400, "untranslatable_route", f"{client_route} calls cannot be sent to a {provider_route} API")
    pivot = body
    if src == "anthropic":
        pivot = anthropic_to_openai(body, model, "max_tokens" if dst != "openai" else limit_field)
    elif src == "gemini":
        pivot = gemini_to_openai(body, model, "max_tokens" if dst != "openai" else limit_field)
        if stream:
            pivot.update(stream=True, stream_options={"include_usage": True})
    if dst == "openai":
        return pivot
    if dst == "anthropic":
        return openai_to_anthropic(pivot, model)
    out = openai_to_gemini(pivot)
    out.pop("stream", None)
    out.pop("stream_options", None)
    return out


def response(client_route: str, provider_route: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The provider's JSON answer in the client's format."""
    src, dst = FORMATS[provider_route], FORMATS[client_route]
    pivot = {"anthropic": anthropic_to_openai_response, "gemini": gemini_to_openai_response}.get(src, dict)(payload)
    if dst == "anthropic":
        return openai_to_anthropic_response(pivot)
    if dst == "gemini":
        return openai_to_gemini_response(pivot)
    return pivot


def stream(client_route: str, provider_route: str, client_body: dict[str, Any]) -> Any:
    """A converter of the provider's stream events into the client's (``convert(event name, data) -> bytes``)."""
    src, dst = FORMATS[provider_route], FORMATS[client_route]
    options = client_body.get("stream_options")
    include_usage = dst != "openai" or (isinstance(options, dict) and options.get("include_usage") is True)
    first: Any = {"anthropic": lambda: AnthropicToOpenAIStream(include_usage),
                  "gemini": lambda: GeminiToOpenAIStream(include_usage)}.get(src, lambda: None)()  # fmt: skip
    second: Any = {"anthropic": OpenAIToAnthropicStream, "gemini": OpenAIToGeminiStream}.get(dst, lambda: None)()
    if first is not None and second is not None:
        return Chain(first, second)
    return first or second


def error(payload: Any) -> tuple[str, str]:
    """(code, message) of a provider's error body in any of the formats, for the client's own shape."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        code = err.get("code") if isinstance(err.get("code"), str) else err.get("status") or err.get("type")
        return str(code or "upstream_error"), str(err.get("message") or "")
    return "upstream_error", "the provider answered with an error"


__all__ = ["Chain", "GeminiArrayStream", "Untranslatable", "error", "request", "response", "stream"]
