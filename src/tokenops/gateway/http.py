"""Small raw-ASGI helpers for the hot path (no framework objects per request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from tokenops.errors import GatewayError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def header_dict(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, "request_too_large", f"request body is larger than the limit of {limit} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client disconnected while sending the request")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, "request_too_large", f"request body is larger than the limit of {limit} bytes")
            parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Mapping[str, str], content_type: str = "application/json"
) -> None:
    h = {"content-type": content_type, "content-length": str(len(body)), **headers}
    await send({"type": "http.response.start", "status": status, "headers": encode_headers(h)})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    await send_bytes(send, status, orjson.dumps(payload), headers or {})
