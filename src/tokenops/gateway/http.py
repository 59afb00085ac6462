"""Small raw-ASGI helpers for the hot path (no framework objects per request).

Header text crosses this module in both directions, and only here:

* request header values are decoded as UTF-8 when they are valid UTF-8 (a tag value ``café`` sent by a client
  is ``café``, as it would be in a JSON body), else as Latin-1, so no byte is ever refused;
* response header values are encoded by :func:`header_value`, which can never fail: printable ASCII goes out as
  is, anything else (non-Latin-1 text, CR, LF, NUL, other control characters, and ``%`` itself) is
  percent-encoded as UTF-8. A model name chosen by a client or echoed by a provider can therefore neither break
  the response nor inject a header.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from tokenops.errors import GatewayError

log = logging.getLogger("tokenops.gateway")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# printable ASCII except "%", which is the escape character of the encoded form
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_text(raw: bytes) -> str:
    """A request header value as text: UTF-8 if it is valid UTF-8 (ASCII is), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_dict(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): header_text(v) for k, v in scope["headers"]}


def header_value(value: str) -> bytes:
    """A response header value that can always be sent (see the module docstring)."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value.encode("ascii")
    return quote(value, safe=_SAFE).encode("ascii")


def is_plain_header_value(value: str) -> bool:
    """True for values that can be passed on upstream unchanged (printable ASCII)."""
    return value.isascii() and value.isprintable()


def encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI response headers; a name that is not a valid header token is dropped, never sent."""
    return [(k.encode("ascii"), header_value(v)) for k, v in headers.items() if _TOKEN.match(k)]


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


STOP_GRACE = 10.0  # seconds a background task gets to stop before the gateway closes without it


async def stop_task(task: asyncio.Task[Any], grace: float = STOP_GRACE) -> None:
    """Cancel a background task and wait for it; one started in another event loop (a test that starts the
    gateway, then serves it with uvicorn) is cancelled in its own loop, without waiting.

    A cancellation swallowed on the way (a library that catches it, or one that lands as the task's own timeout
    fires) is sent again each second; a task still running after ``grace`` seconds is logged with its stack and
    left behind, so that closing the gateway never hangs (such a task may still hold up the process's exit: the
    event loop's own teardown waits for it). An error the task ended with is logged, not raised:
    the rest of the shutdown (the spool, the writer's last drain) still runs."""
    loop = asyncio.get_running_loop()
    if task.get_loop() is not loop:
        task.get_loop().call_soon_threadsafe(task.cancel)
        return
    deadline = loop.time() + grace
    task.cancel()
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            stack = io.StringIO()
            task.print_stack(file=stack)
            log.error("background task %s did not stop within %g s; closing without it. %s",
                      task.get_name(), grace, stack.getvalue())  # fmt: skip
            return
        await asyncio.wait({task}, timeout=min(1.0, left))
        task.cancel()  # again, if the last one was swallowed
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s had failed: %s", task.get_name(), exc, exc_info=exc)
