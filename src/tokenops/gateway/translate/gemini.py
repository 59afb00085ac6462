"""OpenAI chat completions <-> Gemini generateContent: requests, answers and streams, both ways (Anthropic <->
Gemini goes through the OpenAI format: :class:`tokenops.gateway.translate.Chain`)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from tokenops.gateway.translate.common import Untranslatable, arguments, refuse_unknown

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
    refuse_unknown(body, _OPENAI_NOT_FOR_GEMINI, "Gemini")
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
                                               "args": arguments(fn.get("arguments"), f"{where}.tool_calls[{j}]")}})
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
                                           "args": arguments(fn.get("arguments"), "tool_calls")}})  # fmt: skip
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
                                                             "args": arguments(c["arguments"], "tool_calls")}}
                                           for _, c in sorted(self.calls.items())]  # fmt: skip
            self.held = _gemini_event({"candidates": [{"content": {"role": "model", "parts": calls or [{"text": ""}]},
                                                       "finishReason": self.finish or "STOP", "index": 0}],
                                       "usageMetadata": openai_usage_as_gemini(data["usage"]),
                                       "modelVersion": self.model, "responseId": self.id})  # fmt: skip
        return out


def _gemini_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"
