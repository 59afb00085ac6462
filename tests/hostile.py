"""A small hostile upstream: it answers exactly what the request's ``hostile`` object says, however wrong.

The fake provider (``tokenops.fakeprovider``) behaves like a real provider; this one behaves like a broken or
malicious one, for tests of what the gateway does with bad answers. It is a raw ASGI app, so it can run
in-process (``httpx.ASGITransport``) or on a real socket (``tokenops.servers.BackgroundServer``)::

    {"model": "gpt-4o-mini", "messages": [...],
     "hostile": {"status": 200,                      # HTTP status (default 200)
                 "content_type": "...",               # default: text/event-stream with "events", else JSON
                 "headers": [["x-a", "b"]],           # extra response headers, as latin-1 text
                 "json": {...} | "raw": "text",       # a JSON body (any JSON value) or raw text
                 "events": ["data: ...\\n\\n", ...],  # raw stream pieces, sent as given (each one a chunk)
                 "break_after": 2,                    # raise a connection error before piece 2 (0: before any)
                 "timeout_after": 2}}                 # raise a read timeout before piece 2

A JSON body is cut into ``split`` pieces (default 1) so that ``break_after`` can break it mid-body.
``received`` keeps every request body it was sent.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson


class HostileUpstream:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(raw) if raw else {}
        self.received.append(request)
        script: dict[str, Any] = request.get("hostile") or {}
        if "events" in script:
            pieces = [e.encode("utf-8") if isinstance(e, str) else bytes(e) for e in script["events"]]
            ctype = script.get("content_type", "text/event-stream")
        else:
            body = script["raw"].encode() if "raw" in script else orjson.dumps(script.get("json", {}))
            split = max(1, int(script.get("split", 1)))
            size = -(-len(body) // split)
            pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
            ctype = script.get("content_type", "application/json")
        headers = [(b"content-type", ctype.encode("latin-1"))]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in script.get("headers", [])]
        await send({"type": "http.response.start", "status": int(script.get("status", 200)), "headers": headers})
        for i, piece in enumerate(pieces):
            if script.get("break_after") == i:
                raise httpx.ReadError("the hostile upstream broke the connection")
            if script.get("timeout_after") == i:
                raise httpx.ReadTimeout("the hostile upstream stopped answering")
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if script.get("break_after") == len(pieces):
            raise httpx.ReadError("the hostile upstream broke the connection")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse(payload: Any, event: str | None = None) -> str:
    """One SSE event as text (``data:`` JSON, blank line; integers of any size, as a broken server may send)."""
    data = "data: " + json.dumps(payload, ensure_ascii=False) + "\n\n"
    return f"event: {event}\n{data}" if event else data


def openai_chunk(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-h", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}], **extra}  # fmt: skip


def openai_usage(prompt: Any = 10, completion: Any = 5) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion}


def openai_json(usage: Any = None, model: Any = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-h", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": openai_usage() if usage is None else usage, **extra}  # fmt: skip


def anthropic_stream(*, start: Any = None, delta: Any = None, stop: bool = True) -> list[str]:
    """An Anthropic Messages stream; ``start``/``delta`` replace the message_start message / message_delta body."""
    message = {"id": "msg_h", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
               "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}  # fmt: skip
    events = [
        sse({"type": "message_start", "message": message if start is None else start}, "message_start"),
        sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start"),
        sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello there"}},
            "content_block_delta"),
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(delta if delta is not None else {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                              "usage": {"output_tokens": 7}}, "message_delta"),
    ]  # fmt: skip
    if stop:
        events.append(sse({"type": "message_stop"}, "message_stop"))
    return events
