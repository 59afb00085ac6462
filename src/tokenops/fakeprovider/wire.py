"""Wire conventions shared by the fake's routes: ids, request-id headers, error bodies, and responses.

Two of the responses misbehave on purpose: :class:`EventStream` can pause between events or drop the connection
mid-stream, and :class:`TruncatedResponse` drops it mid-body. Dropping works by returning from the ASGI
callable without finishing the response: the server then closes the socket, which is what a client sees when an
upstream dies (uvicorn logs one "returned without completing response" line for it).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

JSON = "application/json"

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "permission_denied", "You are not allowed to sample from this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded, please try again later."),
}

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


_GOOGLE_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}

_DEFAULT: Any = object()  # "the status's usual code", distinct from an explicit None (JSON null)


def _hex(n: int) -> str:
    return uuid.uuid4().hex[:n]


@dataclass(frozen=True, slots=True)
class Dialect:
    """One provider's conventions: which header carries the request id and how an error body looks."""

    name: str
    request_id_header: str

    def request_id(self) -> str:
        return "req_" + _hex(32) if self.name == "openai" else "req_011C" + _hex(24)

    def error_body(
        self, status: int, message: str | None = None, *, param: str | None = None, code: str | None = _DEFAULT
    ) -> dict[str, Any]:
        if self.name == "openai":
            kind, default_code, default_message = _OPENAI_ERRORS.get(
                status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}.")
            )
            return {
                "error": {
                    "message": message or default_message,
                    "type": kind,
                    "param": param,
                    "code": default_code if code is _DEFAULT else code,
                }
            }
        if self.name == "gemini":
            reason, default_message = _GOOGLE_ERRORS.get(status, ("UNKNOWN", f"Error {status}."))
            return {"error": {"code": status, "message": message or default_message, "status": reason}}
        kind, default_message = _ANTHROPIC_ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}.")
        )
        return {"type": "error", "error": {"type": kind, "message": message or default_message}}


OPENAI = Dialect("openai", "x-request-id")
ANTHROPIC = Dialect("anthropic", "request-id")
GEMINI = Dialect("gemini", "x-request-id")


def json_response(payload: Any, headers: dict[str, str], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, headers=headers, media_type=JSON)


def error_response(
    dialect: Dialect,
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    code: str | None = _DEFAULT,
    retry_after: float | None = None,
) -> Response:
    """An error in the route's provider shape; 429s always carry ``retry-after`` (1 s unless told otherwise)."""
    request_id = dialect.request_id()
    headers = {dialect.request_id_header: request_id}
    if retry_after is None and status == 429:
        retry_after = 1
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    body = dialect.error_body(status, message, param=param, code=code)
    if dialect is ANTHROPIC:
        body["request_id"] = request_id
    return json_response(body, headers, status)


class EventStream:
    """An SSE response from pre-encoded events, optionally paced and optionally dropped after ``abort_after``.

    Events are encoded up front so the per-event cost is one ``send``; with pacing, a disconnect listener
    stops the loop early instead of sleeping through events nobody will read.
    """

    def __init__(
        self,
        events: list[bytes],
        headers: dict[str, str],
        *,
        delay_s: float = 0.0,
        abort_after: int | None = None,
    ) -> None:
        self.events = events
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.headers += [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        self.delay_s = delay_s
        self.abort_after = abort_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.delay_s:
            await self._stream(send)
            return
        streamer = asyncio.ensure_future(self._stream(send))
        listener = asyncio.ensure_future(_until_disconnect(receive))
        done: set[asyncio.Future[None]] = set()
        try:
            done, _ = await asyncio.wait((streamer, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streamer, listener):
                task.cancel()
            await asyncio.gather(streamer, listener, return_exceptions=True)
        if streamer in done:
            streamer.result()  # re-raise what went wrong while streaming

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        events = self.events if self.abort_after is None else self.events[: self.abort_after]
        for i, event in enumerate(events):
            if self.delay_s and i:
                await asyncio.sleep(self.delay_s)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if self.abort_after is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    message: Message = {}
    while message.get("type") != "http.disconnect":
        message = await receive()


class TruncatedResponse:
    """Headers promising the whole body, then only its first ``keep`` bytes, then a dropped connection."""

    def __init__(self, body: bytes, headers: dict[str, str], keep: int) -> None:
        self.body = body[:keep]
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.headers += [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})


def sse(payload: Any, event: str | None = None) -> bytes:
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


GARBAGE_JSON = b'{"id": "fake-garbage", "choices": [ <html><body>502 Bad Gateway</body></html>'
