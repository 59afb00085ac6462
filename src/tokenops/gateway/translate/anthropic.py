"""OpenAI chat completions <-> Anthropic messages: requests, answers and streams, both ways."""

from __future__ import annotations

import time
from typing import Any

import orjson

from tokenops.gateway.translate.common import Untranslatable, arguments, refuse_unknown

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



def openai_to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat-completions body as an Anthropic messages body."""
    refuse_unknown(body, _OPENAI_ONLY, "Anthropic")
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
                               "input": arguments(fn.get("arguments"), f"{where}.tool_calls[{j}]")})  # fmt: skip
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
    refuse_unknown(body, _ANTHROPIC_ONLY, "OpenAI")
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
                        "input": arguments(fn.get("arguments"), "tool_calls")})  # fmt: skip
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
