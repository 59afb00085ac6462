"""Translation between the OpenAI chat-completions and Anthropic messages formats, so that a model can be called in
either whatever its provider speaks: a Claude model from an OpenAI-only tool, a GPT model from an Anthropic one.

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

import time
from typing import Any

import orjson

from tokenops.errors import GatewayError

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; an OpenAI call that sets none gets this
_OPENAI_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "pause_turn": "stop", "refusal": "content_filter"}  # fmt: skip
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                   "content_filter": "refusal"}  # fmt: skip
# OpenAI chat fields with no Anthropic counterpart: refused unless they hold their no-op value
_OPENAI_ONLY: dict[str, tuple[Any, ...]] = {"logprobs": (None, False), "top_logprobs": (None,), "response_format": (None, {"type": "text"}),
                "seed": (None,), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
                "logit_bias": (None, {}), "audio": (None,), "modalities": (None, ["text"]), "prediction": (None,),
                "web_search_options": (None,), "functions": (None,), "function_call": (None,),
                "reasoning_effort": (None,), "verbosity": (None,)}  # fmt: skip
_ANTHROPIC_ONLY: dict[str, tuple[Any, ...]] = {"thinking": (None, {"type": "disabled"}), "top_k": (None,), "mcp_servers": (None, []),
                   "container": (None,), "context_management": (None,)}  # fmt: skip
# read by the translation (or by the gateway: OpenAI ``metadata`` is tags), or without effect on what is generated
# or billed; any other field is passed on as it came (a provider extension the client knows about)
_OPENAI_HANDLED = frozenset(("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                             "stream", "stop", "user", "tools", "tool_choice", "parallel_tool_calls", "n",
                             "stream_options", "store", "metadata", "service_tier", "prompt_cache_key",
                             "safety_identifier", *_OPENAI_ONLY))  # fmt: skip
_ANTHROPIC_HANDLED = frozenset(("model", "messages", "system", "max_tokens", "temperature", "top_p", "stream",
                                "stop_sequences", "metadata", "tools", "tool_choice", "service_tier",
                                *_ANTHROPIC_ONLY))  # fmt: skip


class Untranslatable(GatewayError):
    def __init__(self, field: str, why: str):
        super().__init__(400, "untranslatable_field", f"'{field}' cannot be translated: {why}", param=field)


def _refuse_unknown(body: dict[str, Any], only: dict[str, tuple[Any, ...]], target: str) -> None:
    for name, harmless in only.items():
        if name in body and body[name] not in harmless:
            raise Untranslatable(name, f"the model is served by a {target} provider, whose API has no such field")


# --- OpenAI chat -> Anthropic messages ---------------------------------------------------------------------
def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str):
        raise Untranslatable("image_url", "an image part needs a url")
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media = head[5:].split(";")[0] or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _anthropic_content(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise Untranslatable(where, "content must be a string or an array of parts")
    blocks = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise Untranslatable(f"{where}[{i}]", f"a {kind!r} part has no Anthropic counterpart")
    return blocks


def _arguments(raw: Any, where: str) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        return orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        raise Untranslatable(where, "tool call arguments must be a JSON object") from None


def openai_to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat-completions body as an Anthropic messages body."""
    _refuse_unknown(body, _OPENAI_ONLY, "Anthropic")
    if body.get("n") not in (None, 1):
        raise Untranslatable("n", "Anthropic returns one answer per call")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:  # Anthropic wants turns to alternate: merge
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for i, m in enumerate(body.get("messages") or []):
        role, where = m.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system += _anthropic_content(m.get("content"), f"{where}.content")
        elif role == "user":
            add("user", _anthropic_content(m.get("content"), f"{where}.content"))
        elif role == "assistant":
            blocks = _anthropic_content(m.get("content"), f"{where}.content")
            for j, call in enumerate(m.get("tool_calls") or []):
                fn = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id") or f"call_{i}_{j}", "name": fn.get("name"),
                               "input": _arguments(fn.get("arguments"), f"{where}.tool_calls[{j}]")})  # fmt: skip
            add("assistant", blocks)
        elif role == "tool":
            content = m.get("content")
            text = content if isinstance(content, str) else "".join(
                p.get("text", "") for p in content or [] if isinstance(p, dict))  # fmt: skip
            add("user", [{"type": "tool_result", "tool_use_id": m.get("tool_call_id"), "content": text}])
        else:
            raise Untranslatable(f"{where}.role", f"role {role!r} has no Anthropic counterpart")
    out: dict[str, Any] = {k: v for k, v in body.items() if k not in _OPENAI_HANDLED}
    out.update(model=model, messages=messages)
    if system:
        out["system"] = system
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = limit if isinstance(limit, int) and not isinstance(limit, bool) else DEFAULT_MAX_TOKENS
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("stream", "stream")):
        if body.get(src) is not None:
            out[dst] = body[src]
    stop = body.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        out["tools"] = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or t.get("type") != "function":
                raise Untranslatable(f"tools[{i}]", "only function tools have an Anthropic counterpart")
            fn = t.get("function") or {}
            tool = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object"}}
            if fn.get("description"):
                tool["description"] = fn["description"]
            out["tools"].append(tool)
    choice = body.get("tool_choice")
    if choice is not None:
        if choice == "none":
            out["tool_choice"] = {"type": "none"}
        elif choice in ("auto", "required"):
            out["tool_choice"] = {"type": "auto" if choice == "auto" else "any"}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            out["tool_choice"] = {"type": "tool", "name": choice["function"].get("name")}
        else:
            raise Untranslatable("tool_choice", f"{choice!r} has no Anthropic counterpart")
        if body.get("parallel_tool_calls") is False and out["tool_choice"]["type"] != "none":
            out["tool_choice"]["disable_parallel_tool_use"] = True
    return out


def anthropic_usage_as_openai(u: dict[str, Any]) -> dict[str, Any]:
    read = int(u.get("cache_read_input_tokens") or 0)
    written = int(u.get("cache_creation_input_tokens") or 0)
    prompt = int(u.get("input_tokens") or 0) + read + written
    out = int(u.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written}}  # fmt: skip


def anthropic_to_openai_response(msg: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat completion."""
    text, calls = [], []
    for block in msg.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None,
                               "refusal": None}  # fmt: skip
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + str(msg.get("id", "")).removeprefix("msg_"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _OPENAI_STOP.get(str(msg.get("stop_reason")), "stop")}],
        "usage": anthropic_usage_as_openai(msg.get("usage") or {}),
    }  # fmt: skip


class AnthropicToOpenAIStream:
    """Anthropic SSE events in, OpenAI chat-completion chunks out (``data: …`` lines, then ``[DONE]``)."""

    def __init__(self, include_usage: bool):
        self.include_usage = include_usage
        self.id = "chatcmpl-"
        self.model: str | None = None
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}  # fmt: skip
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def convert(self, name: str | None, data: Any) -> bytes:
        if not isinstance(data, dict):
            return b""
        kind = data.get("type") or name
        if kind == "message_start":
            msg = data.get("message") or {}
            self.id = "chatcmpl-" + str(msg.get("id", "")).removeprefix("msg_")
            self.model = msg.get("model")
            self.usage.update(msg.get("usage") or {})
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools.setdefault(int(data.get("index", 0)), len(self.tools))
                return self._chunk({"tool_calls": [{"index": index, "id": block.get("id"), "type": "function",
                                                    "function": {"name": block.get("name"), "arguments": ""}}]})  # fmt: skip
            return b""
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                index = self.tools.get(int(data.get("index", 0)), 0)
                return self._chunk({"tool_calls": [{"index": index,
                                                    "function": {"arguments": delta.get("partial_json", "")}}]})  # fmt: skip
            return b""  # thinking: billed, not shown in OpenAI's format
        if kind == "message_delta":
            self.usage.update(data.get("usage") or {})
            stop = (data.get("delta") or {}).get("stop_reason")
            return self._chunk({}, _OPENAI_STOP.get(str(stop), "stop")) if stop else b""
        if kind == "message_stop":
            out = b""
            if self.include_usage:
                out = self._chunk({}, None, usage=anthropic_usage_as_openai(self.usage))
                out = out.replace(b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]',
                                  b'"choices":[]')  # fmt: skip
            return out + b"data: [DONE]\n\n"
        if kind == "error":
            return b"data: " + orjson.dumps({"error": data.get("error")}) + b"\n\n"
        return b""  # ping


# --- Anthropic messages -> OpenAI chat ---------------------------------------------------------------------
def _openai_parts(content: Any, where: str) -> tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(parts, tool calls, tool results) of Anthropic content."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}], [], []
    parts: list[Any] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for i, block in enumerate(content or []):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            src = block.get("source") or {}
            url = f"data:{src.get('media_type')};base64,{src.get('data')}" if src.get("type") == "base64" \
                else src.get("url")  # fmt: skip
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()}})  # fmt: skip
        elif kind == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else "".join(
                b.get("text", "") for b in inner or [] if isinstance(b, dict))  # fmt: skip
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # an earlier answer's thinking, sent back: the OpenAI model does not take it
        else:
            raise Untranslatable(f"{where}[{i}]", f"a {kind!r} block has no OpenAI counterpart")
    return parts, calls, results


def anthropic_to_openai(body: dict[str, Any], model: str, limit_field: str) -> dict[str, Any]:
    """An Anthropic messages body as an OpenAI chat-completions body."""
    _refuse_unknown(body, _ANTHROPIC_ONLY, "OpenAI")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system if isinstance(b, dict))
        messages.append({"role": "system", "content": text})
    for i, m in enumerate(body.get("messages") or []):
        parts, calls, results = _openai_parts(m.get("content"), f"messages[{i}].content")
        messages += results
        if m.get("role") == "assistant":
            text = "".join(p["text"] for p in parts if p.get("type") == "text")
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            if text or calls:
                messages.append(msg)
        elif parts:
            simple = all(p.get("type") == "text" for p in parts)
            messages.append({"role": "user", "content": "".join(p["text"] for p in parts) if simple else parts})
    out: dict[str, Any] = {k: v for k, v in body.items() if k not in _ANTHROPIC_HANDLED}
    out.update({"model": model, "messages": messages, limit_field: body.get("max_tokens")})
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream") is True:
        out["stream_options"] = {"include_usage": True}
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if isinstance(user, str):
        out["user"] = user
    if body.get("tools"):
        out["tools"] = []
        for i, t in enumerate(body["tools"]):
            if not isinstance(t, dict) or t.get("type") not in (None, "custom"):
                raise Untranslatable(f"tools[{i}]", "only custom (function) tools have an OpenAI counterpart")
            fn = {"name": t.get("name"), "parameters": t.get("input_schema") or {"type": "object"}}
            if t.get("description"):
                fn["description"] = t["description"]
            out["tools"].append({"type": "function", "function": fn})
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind)) or (
            {"type": "function", "function": {"name": choice.get("name")}} if kind == "tool" else None)  # fmt: skip
        if out["tool_choice"] is None:
            raise Untranslatable("tool_choice", f"{choice!r} has no OpenAI counterpart")
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    return out


def openai_usage_as_anthropic(u: dict[str, Any]) -> dict[str, Any]:
    details = u.get("prompt_tokens_details") or {}
    read = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    return {"input_tokens": int(u.get("prompt_tokens") or 0) - read - written, "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written, "output_tokens": int(u.get("completion_tokens") or 0)}  # fmt: skip


def openai_to_anthropic_response(payload: dict[str, Any]) -> dict[str, Any]:
    choice = (payload.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": _arguments(fn.get("arguments"), "tool_calls")})  # fmt: skip
    return {
        "id": "msg_" + str(payload.get("id", "")).removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": payload.get("model"),
        "content": content,
        "stop_reason": _ANTHROPIC_STOP.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": openai_usage_as_anthropic(payload.get("usage") or {}),
    }


def _sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **payload}) + b"\n\n"


class OpenAIToAnthropicStream:
    """OpenAI chat-completion chunks in, Anthropic SSE events out."""

    def __init__(self) -> None:
        self.started = False
        self.open: tuple[str, int] | None = None  # ("text" | "tool", OpenAI tool index), the open block
        self.index = -1  # the current Anthropic block index
        self.stop: str | None = None

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self.started = True
        msg: dict[str, Any] = {"id": "msg_" + str(chunk.get("id", "")).removeprefix("chatcmpl-"), "type": "message",
               "role": "assistant", "model": chunk.get("model"), "content": [], "stop_reason": None,
               "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}  # fmt: skip
        return _sse("message_start", {"message": msg})

    def _switch(self, block: tuple[str, int], start: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.open = block
        return out + _sse("content_block_start", {"index": self.index, "content_block": start})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return _sse("content_block_stop", {"index": self.index})

    def convert(self, name: str | None, data: Any) -> bytes:
        if data == "[DONE]":
            return _sse("message_stop", {}) if self.started else b""
        if not isinstance(data, dict):
            return b""
        if "error" in data:
            return _sse("error", {"error": {"type": "api_error", "message": str(data["error"])}})
        out = b"" if self.started else self._start(data)
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.open != ("text", 0):
                    out += self._switch(("text", 0), {"type": "text", "text": ""})
                out += _sse("content_block_delta", {"index": self.index,
                                                    "delta": {"type": "text_delta", "text": delta["content"]}})  # fmt: skip
            for call in delta.get("tool_calls") or []:
                key = ("tool", int(call.get("index", 0)))
                fn = call.get("function") or {}
                if self.open != key:
                    out += self._switch(key, {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                                              "input": {}})  # fmt: skip
                if fn.get("arguments"):
                    out += _sse("content_block_delta", {"index": self.index, "delta": {
                        "type": "input_json_delta", "partial_json": fn["arguments"]}})  # fmt: skip
            if choice.get("finish_reason"):
                self.stop = _ANTHROPIC_STOP.get(str(choice["finish_reason"]), "end_turn")
        if data.get("usage"):
            out += self._close()
            u = openai_usage_as_anthropic(data["usage"])
            out += _sse("message_delta", {"delta": {"stop_reason": self.stop or "end_turn", "stop_sequence": None},
                                          "usage": u})  # fmt: skip
        return out


# --- OpenAI chat <-> Gemini generateContent ----------------------------------------------------------------
_GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
                  "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
                  "IMAGE_SAFETY": "content_filter"}  # fmt: skip
_OPENAI_FINISH_AS_GEMINI = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
_OPENAI_NOT_FOR_GEMINI: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False), "top_logprobs": (None,), "logit_bias": (None, {}), "audio": (None,),
    "modalities": (None, ["text"]), "prediction": (None,), "web_search_options": (None,), "functions": (None,),
    "function_call": (None,), "verbosity": (None,)}  # fmt: skip
_OPENAI_FOR_GEMINI = frozenset(("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                                "stream", "stop", "user", "tools", "tool_choice", "parallel_tool_calls", "n",
                                "stream_options", "store", "metadata", "service_tier", "prompt_cache_key",
                                "safety_identifier", "seed", "presence_penalty", "frequency_penalty",
                                "response_format", "reasoning_effort", *_OPENAI_NOT_FOR_GEMINI))  # fmt: skip
_EFFORT_BUDGET = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}  # thinkingBudget per reasoning_effort


def _gemini_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content if isinstance(content, list) else []):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str) and url.startswith("data:"):
                head, _, data = url.partition(",")
                parts.append({"inlineData": {"mimeType": head[5:].split(";")[0] or "image/png", "data": data}})
            elif isinstance(url, str):
                mime = "image/png" if url.lower().endswith(".png") else "image/jpeg"
                parts.append({"fileData": {"fileUri": url, "mimeType": mime}})
        else:
            raise Untranslatable(f"{where}[{i}]", f"a {kind!r} part has no Gemini counterpart")
    return parts


def openai_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions body as a Gemini generateContent body (the model goes in the path)."""
    _refuse_unknown(body, _OPENAI_NOT_FOR_GEMINI, "Gemini")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name (a functionResponse names its function)

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        elif parts:
            contents.append({"role": role, "parts": parts})

    for i, m in enumerate(body.get("messages") or []):
        role, where = m.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system += _gemini_parts(m.get("content"), f"{where}.content")
        elif role == "user":
            add("user", _gemini_parts(m.get("content"), f"{where}.content"))
        elif role == "assistant":
            parts = _gemini_parts(m.get("content"), f"{where}.content")
            for j, call in enumerate(m.get("tool_calls") or []):
                fn = call.get("function") or {}
                names[str(call.get("id"))] = str(fn.get("name"))
                parts.append({"functionCall": {"name": fn.get("name"),
                                               "args": _arguments(fn.get("arguments"), f"{where}.tool_calls[{j}]")}})
            add("model", parts)
        elif role == "tool":
            content = m.get("content")
            text = content if isinstance(content, str) else "".join(
                p.get("text", "") for p in content or [] if isinstance(p, dict))  # fmt: skip
            name = names.get(str(m.get("tool_call_id")))
            if name is None:
                raise Untranslatable(f"{where}.tool_call_id", "it names no earlier tool call (Gemini needs the name)")
            add("user", [{"functionResponse": {"name": name, "response": {"content": text}}}])
        else:
            raise Untranslatable(f"{where}.role", f"role {role!r} has no Gemini counterpart")
    out: dict[str, Any] = {k: v for k, v in body.items() if k not in _OPENAI_FOR_GEMINI}
    out["contents"] = contents
    if system:
        out["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool):
        config["maxOutputTokens"] = limit
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                     ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if body.get(src) is not None:
            config[dst] = body[src]
    if body.get("n") not in (None, 1):
        config["candidateCount"] = body["n"]
    stop = body.get("stop")
    if stop is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = (fmt.get("json_schema") or {}).get("schema") or {}
    elif fmt not in (None, {"type": "text"}):
        raise Untranslatable("response_format", f"{fmt!r} has no Gemini counterpart")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _EFFORT_BUDGET:
            raise Untranslatable("reasoning_effort", f"{effort!r} has no Gemini thinking budget")
        config["thinkingConfig"] = {"thinkingBudget": _EFFORT_BUDGET[effort]}
    if config:
        out["generationConfig"] = config
    if body.get("tools"):
        decls = []
        for i, t in enumerate(body["tools"]):
            if not isinstance(t, dict) or t.get("type") != "function":
                raise Untranslatable(f"tools[{i}]", "only function tools have a Gemini counterpart")
            fn = t.get("function") or {}
            decl = {"name": fn.get("name"), "parametersJsonSchema": fn.get("parameters") or {"type": "object"}}
            if fn.get("description"):
                decl["description"] = fn["description"]
            decls.append(decl)
        out["tools"] = [{"functionDeclarations": decls}]
    choice = body.get("tool_choice")
    if choice is not None:
        if choice in ("auto", "none", "required"):
            mode: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            mode = {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
        else:
            raise Untranslatable("tool_choice", f"{choice!r} has no Gemini counterpart")
        out["toolConfig"] = {"functionCallingConfig": mode}
    return out


def gemini_usage_as_openai(u: dict[str, Any]) -> dict[str, Any]:
    prompt = int(u.get("promptTokenCount") or 0) + int(u.get("toolUsePromptTokenCount") or 0)
    thoughts = int(u.get("thoughtsTokenCount") or 0)
    out = int(u.get("candidatesTokenCount") or 0) + thoughts
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": int(u.get("cachedContentTokenCount") or 0)},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}  # fmt: skip


def _gemini_message(candidate: dict[str, Any], index: int) -> tuple[dict[str, Any], str]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            text.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            fc = part["functionCall"]
            calls.append({"id": fc.get("id") or f"call_{index}_{len(calls)}", "type": "function",
                          "function": {"name": fc.get("name"), "arguments": orjson.dumps(fc.get("args") or {}).decode()}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None,
                               "refusal": None}  # fmt: skip
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else _GEMINI_FINISH.get(str(candidate.get("finishReason")), "stop")
    return message, finish


def gemini_to_openai_response(payload: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for i, candidate in enumerate(payload.get("candidates") or []):
        message, finish = _gemini_message(candidate, i)
        choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
    return {"id": "chatcmpl-" + str(payload.get("responseId", "")), "object": "chat.completion",
            "created": int(time.time()), "model": payload.get("modelVersion"), "choices": choices,
            "usage": gemini_usage_as_openai(payload.get("usageMetadata") or {})}  # fmt: skip


class GeminiToOpenAIStream:
    """Gemini stream events (each a GenerateContentResponse) in, OpenAI chunks out."""

    def __init__(self, include_usage: bool):
        self.include_usage = include_usage
        self.started = False
        self.created = int(time.time())
        self.calls = 0

    def convert(self, name: str | None, data: Any) -> bytes:
        if not isinstance(data, dict):
            return b""
        if "error" in data:
            return b"data: " + orjson.dumps({"error": data["error"]}) + b"\n\n"
        base = {"id": "chatcmpl-" + str(data.get("responseId", "")), "object": "chat.completion.chunk",
                "created": self.created, "model": data.get("modelVersion")}  # fmt: skip

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        out = b""
        if not self.started:
            self.started = True
            out += chunk({"role": "assistant", "content": ""})
        candidate = (data.get("candidates") or [{}])[0]
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue
            if part.get("text"):
                out += chunk({"content": part["text"]})
            elif isinstance(part.get("functionCall"), dict):
                fc = part["functionCall"]
                out += chunk({"tool_calls": [{"index": self.calls, "id": fc.get("id") or f"call_{self.calls}",
                                              "type": "function", "function": {
                                                  "name": fc.get("name"),
                                                  "arguments": orjson.dumps(fc.get("args") or {}).decode()}}]})  # fmt: skip
                self.calls += 1
        if candidate.get("finishReason"):
            finish = "tool_calls" if self.calls else _GEMINI_FINISH.get(str(candidate["finishReason"]), "stop")
            out += chunk({}, finish)
            if self.include_usage:
                final: dict[str, Any] = {**base, "choices": [],
                                         "usage": gemini_usage_as_openai(data.get("usageMetadata") or {})}
                out += b"data: " + orjson.dumps(final) + b"\n\n"
            out += b"data: [DONE]\n\n"
        return out


def gemini_to_openai(body: dict[str, Any], model: str, limit_field: str) -> dict[str, Any]:
    """A Gemini generateContent body as an OpenAI chat-completions body."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("systemInstruction"), dict):
        messages.append({"role": "system", "content": "".join(
            p.get("text", "") for p in body["systemInstruction"].get("parts") or [] if isinstance(p, dict))})
    calls = 0
    pending: dict[str, list[str]] = {}  # function name -> ids of its calls not answered yet
    for i, c in enumerate(body.get("contents") or []):
        where = f"contents[{i}]"
        text: list[str] = []
        images: list[dict[str, Any]] = []
        tool_calls: list[dict[str, Any]] = []
        for j, part in enumerate(c.get("parts") or []):
            if isinstance(part.get("text"), str):
                text.append(part["text"])
            elif isinstance(part.get("inlineData"), dict):
                d = part["inlineData"]
                images.append({"type": "image_url", "image_url": {"url": f"data:{d.get('mimeType')};base64,"
                                                                         f"{d.get('data')}"}})  # fmt: skip
            elif isinstance(part.get("functionCall"), dict):
                fc = part["functionCall"]
                call_id = fc.get("id") or f"call_{calls}"
                calls += 1
                pending.setdefault(str(fc.get("name")), []).append(call_id)
                tool_calls.append({"id": call_id, "type": "function", "function": {
                    "name": fc.get("name"), "arguments": orjson.dumps(fc.get("args") or {}).decode()}})  # fmt: skip
            elif isinstance(part.get("functionResponse"), dict):
                fr = part["functionResponse"]
                ids = pending.get(str(fr.get("name"))) or [fr.get("id") or f"call_{calls}"]
                messages.append({"role": "tool", "tool_call_id": fr.get("id") or ids.pop(0),
                                 "content": orjson.dumps(fr.get("response") or {}).decode()})  # fmt: skip
            else:
                raise Untranslatable(f"{where}.parts[{j}]", "a part with no OpenAI counterpart (file data, code, …)")
        if c.get("role") == "model":
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
            if tool_calls:
                msg["tool_calls"] = tool_calls
            if text or tool_calls:
                messages.append(msg)
        elif text or images:
            messages.append({"role": "user", "content": "".join(text) if not images else
                             [*({"type": "text", "text": t} for t in text), *images]})  # fmt: skip
    out: dict[str, Any] = {"model": model, "messages": messages}
    config = body.get("generationConfig") or {}
    for src, dst in (("maxOutputTokens", limit_field), ("temperature", "temperature"), ("topP", "top_p"),
                     ("seed", "seed"), ("presencePenalty", "presence_penalty"),
                     ("frequencyPenalty", "frequency_penalty"), ("candidateCount", "n")):  # fmt: skip
        if config.get(src) is not None:
            out[dst] = config[src]
    if config.get("stopSequences"):
        out["stop"] = config["stopSequences"]
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}} \
            if schema else {"type": "json_object"}  # fmt: skip
    for name in ("topK", "thinkingConfig", "responseModalities", "speechConfig", "mediaResolution"):
        if config.get(name) is not None:
            raise Untranslatable(f"generationConfig.{name}", "the model is served by an OpenAI provider")
    for name in ("cachedContent", "safetySettings"):
        if body.get(name):
            raise Untranslatable(name, "the model is served by an OpenAI provider")
    decls = []
    for i, t in enumerate(body.get("tools") or []):
        if not isinstance(t, dict) or set(t) != {"functionDeclarations"}:
            raise Untranslatable(f"tools[{i}]", "only function declarations have an OpenAI counterpart")
        decls += t["functionDeclarations"]
    if decls:
        out["tools"] = [{"type": "function", "function": {
            "name": d.get("name"), "description": d.get("description", ""),
            "parameters": d.get("parametersJsonSchema") or d.get("parameters") or {"type": "object"}}} for d in decls]
    fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if fcc.get("mode"):
        allowed = fcc.get("allowedFunctionNames") or []
        out["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}} if len(allowed) == 1 else \
            {"AUTO": "auto", "ANY": "required", "NONE": "none"}.get(str(fcc["mode"]), "auto")  # fmt: skip
    if body.get("stream") is True or out.get("stream"):
        out["stream"] = True
    return out


def openai_to_gemini_response(payload: dict[str, Any]) -> dict[str, Any]:
    candidates = []
    for choice in payload.get("choices") or []:
        message = choice.get("message") or {}
        parts: list[dict[str, Any]] = []
        if message.get("content"):
            parts.append({"text": message["content"]})
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            parts.append({"functionCall": {"id": call.get("id"), "name": fn.get("name"),
                                           "args": _arguments(fn.get("arguments"), "tool_calls")}})  # fmt: skip
        candidates.append({"content": {"role": "model", "parts": parts}, "index": choice.get("index", 0),
                           "finishReason": _OPENAI_FINISH_AS_GEMINI.get(str(choice.get("finish_reason")), "STOP")})
    return {"candidates": candidates, "usageMetadata": openai_usage_as_gemini(payload.get("usage") or {}),
            "modelVersion": payload.get("model"), "responseId": str(payload.get("id", ""))}  # fmt: skip


def openai_usage_as_gemini(u: dict[str, Any]) -> dict[str, Any]:
    reasoning = int((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    prompt, out = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": out - reasoning,
                             "totalTokenCount": prompt + out,
             "cachedContentTokenCount": int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)}
    if reasoning:
        usage["thoughtsTokenCount"] = reasoning
    return usage


class OpenAIToGeminiStream:
    """OpenAI chunks in, Gemini stream events out (``data: {GenerateContentResponse}``)."""

    def __init__(self) -> None:
        self.held = b""  # the final event (finishReason and usage), sent with the provider's [DONE]
        self.finish: str | None = None
        self.id = ""
        self.model: str | None = None
        self.calls: dict[int, dict[str, Any]] = {}

    def convert(self, name: str | None, data: Any) -> bytes:
        if data == "[DONE]":  # the provider's last event: the client's last one goes with it
            out, self.held = self.held, b""
            return out
        if not isinstance(data, dict):
            return b""
        self.id = str(data.get("id", self.id))
        self.model = data.get("model") or self.model
        parts: list[dict[str, Any]] = []
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                parts.append({"text": delta["content"]})
            for call in delta.get("tool_calls") or []:  # Gemini sends a call whole: gather it, send at the end
                slot = self.calls.setdefault(int(call.get("index", 0)), {"id": None, "name": None, "arguments": ""})
                fn = call.get("function") or {}
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] = fn.get("name") or slot["name"]
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = _OPENAI_FINISH_AS_GEMINI.get(str(choice["finish_reason"]), "STOP")
        out = b""
        if parts:
            out += _gemini_event({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                                  "modelVersion": self.model, "responseId": self.id})  # fmt: skip
        if data.get("usage"):
            calls: list[dict[str, Any]] = [{"functionCall": {"id": c["id"], "name": c["name"],
                                                             "args": _arguments(c["arguments"], "tool_calls")}}
                                           for _, c in sorted(self.calls.items())]  # fmt: skip
            self.held = _gemini_event({"candidates": [{"content": {"role": "model", "parts": calls or [{"text": ""}]},
                                                       "finishReason": self.finish or "STOP", "index": 0}],
                                       "usageMetadata": openai_usage_as_gemini(data["usage"]),
                                       "modelVersion": self.model, "responseId": self.id})  # fmt: skip
        return out


def _gemini_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


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
