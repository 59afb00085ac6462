"""Checks of the request body that the gateway relies on; everything else passes through untouched.

A wrong body gets a 400 naming the field (``param``) in the route's error shape, before any upstream call.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenops.errors import GatewayError
from tokenops.gateway.call import Call


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param=param)


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        n = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                n += len(part["text"])
            elif isinstance(part, str):
                n += len(part)
        return n
    return 0


def _optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> None:
    if name in body and body[name] is not None:
        value = body[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise _bad(f"'{name}' must be {what}", name)


def _messages(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if messages is None:
        raise _bad("'messages' is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    chars = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(f"'messages[{i}]' must be an object", f"messages[{i}]")
        if not isinstance(m.get("role"), str):
            raise _bad(f"'messages[{i}].role' must be a string", f"messages[{i}].role")
        chars += _text_chars(m.get("content"))
    return chars


def request(call: Call, raw: bytes) -> None:
    """Parse and check the JSON body; fill the call's model, stream flag and prompt size."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise _bad("'model' is required", "model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("'model' must be a non-empty string", "model")
    _optional(body, "stream", bool, "a boolean")
    _optional(body, "user", str, "a string")
    _optional(body, "metadata", dict, "an object")
    _optional(body, "max_tokens", int, "an integer")
    _optional(body, "max_completion_tokens", int, "an integer")
    if call.route == "chat.completions":
        call.prompt_chars = _messages(body)
        _optional(body, "stream_options", dict, "an object")
    elif call.route == "messages":
        call.prompt_chars = _messages(body) + _text_chars(body.get("system"))
        if "max_tokens" not in body:
            raise _bad("'max_tokens' is required", "max_tokens")
    elif call.route == "embeddings":
        inp = body.get("input")
        if inp is None:
            raise _bad("'input' is required", "input")
        if isinstance(inp, str):
            call.prompt_chars = len(inp)
        elif isinstance(inp, list) and inp:
            call.prompt_chars = sum(len(x) if isinstance(x, str) else 4 for x in inp)
        else:
            raise _bad("'input' must be a string or a non-empty array", "input")
    call.body = body
    call.body_bytes = len(raw)
    call.model_requested = model
    call.stream = body.get("stream") is True and call.route != "embeddings"
